// A failed load, said once (role="alert") in the words of `describeProblem`.
import type { Problem } from '../api/client';
import { describeProblem } from './problem';

export function ProblemNotice({ problem }: { problem: Problem }) {
  return (
    <p class="admin-error" role="alert">
      {describeProblem(problem)}
    </p>
  );
}
