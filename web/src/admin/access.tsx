// What someone who is not an organiser sees instead of the console: why (no session, 401;
// a fan's session, 403) and where to log in — coming back here afterwards.
import { useLocation } from 'preact-iso';
import { session } from '../session';
import { PageHeading } from '../ui/heading';

export function AccessDenied({ reason }: { reason: 'logged-out' | 'not-organiser' }) {
  const { url } = useLocation();
  const username = session.value?.user.username;
  return (
    <section class="admin">
      <PageHeading title="Organisers only" />
      {reason === 'logged-out' ? (
        <p>The organiser’s console needs an organiser account, and you are not logged in (401).</p>
      ) : (
        <p>
          You are logged in as <strong>{username}</strong>, a fan account; the organiser’s console is
          for organiser accounts only (403).
        </p>
      )}
      <p>
        <a href={`/login?next=${encodeURIComponent(url)}`}>Log in as an organiser</a> or{' '}
        <a href="/">see what is on sale</a>.
      </p>
    </section>
  );
}
