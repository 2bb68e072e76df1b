import type { ComponentChildren } from 'preact';
import { useLocation } from 'preact-iso';
import { session } from '../session';
import { PageHeading } from './heading';

/** Renders `children` for a logged-in fan; otherwise the page's heading and a way to log in. */
export function SessionRequired({ title, children }: { title: string; children: ComponentChildren }) {
  const { url } = useLocation();
  if (session.value) return <>{children}</>;
  const next = encodeURIComponent(url);
  return (
    <section>
      <PageHeading title={title} />
      <p>You need to be logged in for this page.</p>
      <p class="actions">
        <a class="button" href={`/login?next=${next}`}>
          Log in
        </a>
        <a href={`/signup?next=${next}`}>Create an account</a>
      </p>
    </section>
  );
}
