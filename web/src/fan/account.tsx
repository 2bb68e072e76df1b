// `/account`: who is logged in, and the two ways out: this device, or every device at once
// (`DELETE /api/sessions?all=true`, for a lost phone or a shared computer).
import { useState } from 'preact/hooks';
import { useLocation } from 'preact-iso';
import { api } from '../api/client';
import { type ApiProblem, asProblem, must } from '../api/problems';
import { endSession, session } from '../session';
import { ProblemAlert } from '../ui/alert';
import { PageHeading } from '../ui/heading';
import { SessionRequired } from '../ui/session-required';

export function AccountPage() {
  return (
    <SessionRequired title="Your account">
      <Account />
    </SessionRequired>
  );
}

function Account() {
  const { route } = useLocation();
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<ApiProblem | null>(null);
  const user = session.value?.user;

  async function logOut(all: boolean) {
    setBusy(true);
    setProblem(null);
    try {
      await must(api.DELETE('/api/sessions', { params: { query: { all } } }));
    } catch (e) {
      const p = asProblem(e);
      // A session that already ended is logged out all the same.
      if (p.code !== 'UNAUTHENTICATED') {
        setProblem(p);
        setBusy(false);
        return;
      }
    }
    endSession();
    route('/');
  }

  return (
    <section>
      <PageHeading title="Your account" />
      <p>
        Logged in as <strong>{user?.username}</strong>.
      </p>
      {problem && <ProblemAlert problem={problem} />}
      <p class="actions">
        <button type="button" onClick={() => logOut(false)} disabled={busy}>
          Log out
        </button>
        <button type="button" onClick={() => logOut(true)} disabled={busy}>
          Log out everywhere
        </button>
      </p>
      <p class="muted">"Log out everywhere" ends your sessions on every device and browser.</p>
    </section>
  );
}
