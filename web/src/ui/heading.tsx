import { useEffect, useRef } from 'preact/hooks';
import { useLocation } from 'preact-iso';

// The first page the browser opens keeps the browser's own focus (the top of the document);
// every page reached afterwards inside the app moves focus to its h1, so a screen reader or a
// keyboard user starts reading at the new page instead of at a link that has gone.
let firstPage = true;

/**
 * The page's h1: sets the document title and takes focus when the address changes to this page
 * (also between two addresses of one page, such as two concerts). Keep one per page, rendered
 * from the first render on (loading or not), so it mounts once.
 */
export function PageHeading({ title }: { title: string }) {
  const ref = useRef<HTMLHeadingElement>(null);
  const { url } = useLocation();
  useEffect(() => {
    if (firstPage) firstPage = false;
    else ref.current?.focus();
  }, [url]);
  useEffect(() => {
    document.title = `${title} · Tickets`;
  }, [title]);
  return (
    <h1 ref={ref} tabIndex={-1}>
      {title}
    </h1>
  );
}
