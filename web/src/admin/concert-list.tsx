// `/admin`: every concert, a page at a time (`GET /api/concerts`, by id, `next_cursor`), and
// the form that creates one.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, type Concert, type Problem } from '../api/client';
import { PageHeading } from '../ui/heading';
import { NewConcertForm } from './new-concert-form';
import { attempt } from './problem';
import { ProblemNotice } from './problem-notice';

const PAGE_SIZE = 20;

export function ConcertList() {
  const [concerts, setConcerts] = useState<Concert[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [problem, setProblem] = useState<Problem | null>(null);
  // The first concert of the page just loaded, to move focus to when "more" was asked for.
  const [focusId, setFocusId] = useState<number | null>(null);
  const listRef = useRef<HTMLUListElement>(null);

  async function load(after: string | null) {
    setLoading(true);
    const r = await attempt(
      api.GET('/api/concerts', { params: { query: { limit: PAGE_SIZE, ...(after ? { cursor: after } : {}) } } }),
    );
    setLoading(false);
    if (!r.ok) {
      setProblem(r.problem);
      return;
    }
    setProblem(null);
    setConcerts((shown) => (after ? [...shown, ...r.data.items] : r.data.items));
    setCursor(r.data.next_cursor ?? null);
    if (after) setFocusId(r.data.items[0]?.id ?? null);
  }

  useEffect(() => {
    void load(null);
  }, []);

  useEffect(() => {
    if (focusId !== null) listRef.current?.querySelector<HTMLElement>(`[data-concert="${focusId}"]`)?.focus();
  }, [focusId]);

  return (
    <>
      <PageHeading title="Organiser" />
      <section aria-labelledby="concerts-title">
        <h2 id="concerts-title">Concerts</h2>
        {concerts.length > 0 && (
          <ul class="admin-concerts" ref={listRef}>
            {concerts.map((c) => (
              <li key={c.id}>
                <a href={`/admin/concerts/${c.id}`} data-concert={c.id}>
                  {c.title}
                </a>{' '}
                <span class="admin-hint">
                  by {c.performer} · up to {c.max_tickets_per_user} per buyer
                </span>
              </li>
            ))}
          </ul>
        )}
        {!loading && !problem && concerts.length === 0 && <p>No concert yet: create the first one below.</p>}
        {problem && <ProblemNotice problem={problem} />}
        {loading && concerts.length === 0 && <p role="status">Loading concerts…</p>}
        {cursor && (
          // Stays in place (and focused) while the next page loads; focus then moves to it.
          <button
            type="button"
            aria-disabled={loading}
            onClick={() => {
              if (!loading) void load(cursor);
            }}
          >
            Show more concerts
          </button>
        )}
      </section>
      <NewConcertForm />
    </>
  );
}
