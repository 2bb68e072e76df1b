import { type ApiProblem, explain, type ProblemContext } from '../api/problems';
import { useNow } from './time';
import { duration } from './format';
import { useMemo } from 'preact/hooks';

/**
 * A refusal in plain words (`role="alert"`, so it is read out when it appears) with its next
 * step: a link, or — when `onRetry` is given — a "Try again" button that stays disabled for the
 * Retry-After the answer asked for.
 */
export function ProblemAlert(props: { problem: ApiProblem; context?: ProblemContext; onRetry?: () => void }) {
  const { message, next, retryAfter } = explain(props.problem, props.context);
  // When this problem appeared, so the wait counts down from then.
  const since = useMemo(() => Date.now(), [props.problem]);
  const now = useNow(retryAfter ? 1000 : null);
  const left = retryAfter ? Math.min(retryAfter, Math.ceil(retryAfter - (now - since) / 1000)) : 0;
  return (
    <div role="alert" class="notice notice-error">
      <p>{message}</p>
      {(next || props.onRetry) && (
        <p class="actions">
          {next && <a href={next.href}>{next.label}</a>}
          {props.onRetry && (
            <button type="button" onClick={props.onRetry} disabled={left > 0}>
              {left > 0 ? `Try again in ${duration(left)}` : 'Try again'}
            </button>
          )}
        </p>
      )}
    </div>
  );
}
