// `/login` and `/signup`. Both end logged in (signing up logs in at once) and go on to `?next=`
// — a path inside the app, such as the waiting line the fan was about to join — or to `/`.
import { useState } from 'preact/hooks';
import { useLocation, useRoute } from 'preact-iso';
import { api } from '../api/client';
import { type ApiProblem, asProblem, must } from '../api/problems';
import { startSession } from '../session';
import { ProblemAlert } from '../ui/alert';
import { PageHeading } from '../ui/heading';

/** Where to go after logging in: only a path of this app (never another site). */
function nextPath(raw: string | undefined): string {
  return raw && raw.startsWith('/') && !raw.startsWith('//') ? raw : '/';
}

async function logIn(username: string, password: string): Promise<void> {
  const s = await must(api.POST('/api/sessions', { body: { username, password } }));
  startSession(s);
}

function useCredentialsForm(submit: (username: string, password: string) => Promise<void>) {
  const { route } = useLocation();
  const { query } = useRoute();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<ApiProblem | null>(null);
  const onSubmit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setProblem(null);
    try {
      await submit(username.trim(), password);
      route(nextPath(query.next));
    } catch (err) {
      setProblem(asProblem(err));
      setBusy(false);
    }
  };
  const next = query.next ? `?next=${encodeURIComponent(nextPath(query.next))}` : '';
  return { username, setUsername, password, setPassword, busy, problem, onSubmit, next };
}

export function LoginPage() {
  const f = useCredentialsForm(logIn);
  return (
    <section class="narrow">
      <PageHeading title="Log in" />
      <form onSubmit={f.onSubmit} class="stack">
        <div class="field">
          <label htmlFor="login-username">Username</label>
          <input
            id="login-username"
            name="username"
            autoComplete="username"
            autoCapitalize="none"
            spellcheck={false}
            required
            value={f.username}
            onInput={(e) => f.setUsername(e.currentTarget.value)}
          />
        </div>
        <div class="field">
          <label htmlFor="login-password">Password</label>
          <input
            id="login-password"
            name="password"
            type="password"
            autoComplete="current-password"
            required
            value={f.password}
            onInput={(e) => f.setPassword(e.currentTarget.value)}
          />
        </div>
        {f.problem && <ProblemAlert problem={f.problem} />}
        <button type="submit" class="primary" disabled={f.busy}>
          {f.busy ? 'Logging in…' : 'Log in'}
        </button>
      </form>
      <p>
        New here? <a href={`/signup${f.next}`}>Create an account</a>
      </p>
    </section>
  );
}

export function SignupPage() {
  const f = useCredentialsForm(async (username, password) => {
    await must(api.POST('/api/users', { body: { username, password } }));
    await logIn(username, password);
  });
  return (
    <section class="narrow">
      <PageHeading title="Create an account" />
      <form onSubmit={f.onSubmit} class="stack">
        <div class="field">
          <label htmlFor="signup-username">Username</label>
          <input
            id="signup-username"
            name="username"
            autoComplete="username"
            autoCapitalize="none"
            spellcheck={false}
            required
            minLength={3}
            maxLength={32}
            pattern="[a-z0-9_]{3,32}"
            aria-describedby="signup-username-hint"
            value={f.username}
            onInput={(e) => f.setUsername(e.currentTarget.value)}
          />
          <p id="signup-username-hint" class="hint">
            3 to 32 characters: lowercase letters, digits and underscores (_).
          </p>
        </div>
        <div class="field">
          <label htmlFor="signup-password">Password</label>
          <input
            id="signup-password"
            name="password"
            type="password"
            autoComplete="new-password"
            required
            minLength={8}
            maxLength={128}
            aria-describedby="signup-password-hint"
            value={f.password}
            onInput={(e) => f.setPassword(e.currentTarget.value)}
          />
          <p id="signup-password-hint" class="hint">
            8 to 128 characters, not a common password and not your username. A few unrelated words work well.
          </p>
        </div>
        {f.problem && <ProblemAlert problem={f.problem} />}
        <button type="submit" class="primary" disabled={f.busy}>
          {f.busy ? 'Creating your account…' : 'Create account'}
        </button>
      </form>
      <p>
        Already have an account? <a href={`/login${f.next}`}>Log in</a>
      </p>
    </section>
  );
}
