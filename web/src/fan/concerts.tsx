// `/`: what is on sale — every concert with its bookable dates and the seats left on each.
import { useState } from 'preact/hooks';
import { api, type Concert, type Schedule } from '../api/client';
import { must } from '../api/problems';
import { ProblemAlert } from '../ui/alert';
import { when, plural } from '../ui/format';
import { PageHeading } from '../ui/heading';
import { Loading } from '../ui/loading';
import { useLoad } from '../ui/use-load';
import { getSchedules } from './catalogue';

interface Listing {
  concert: Concert;
  dates: Schedule[];
}

async function loadPage(cursor: string | undefined, signal: AbortSignal) {
  const page = await must(api.GET('/api/concerts', { params: { query: { limit: 20, cursor } }, signal }));
  const listings = await Promise.all(
    page.items.map(async (concert): Promise<Listing> => ({ concert, dates: await getSchedules(concert.id, true, signal) })),
  );
  return { listings, next: page.next_cursor ?? null };
}

export function Concerts() {
  const [cursor, setCursor] = useState<string | undefined>(undefined);
  const [shown, setShown] = useState<Listing[]>([]);
  const page = useLoad(async (signal) => {
    const p = await loadPage(cursor, signal);
    setShown((before) => (cursor ? [...before, ...p.listings] : p.listings));
    return p;
  }, [cursor]);
  return (
    <section>
      <PageHeading title="Concerts" />
      {page.problem && <ProblemAlert problem={page.problem} onRetry={page.reload} />}
      {!page.data && !page.problem && <Loading what="concerts" />}
      {page.data && shown.length === 0 && <p>Nothing is on sale right now. Come back soon.</p>}
      <ul class="cards">
        {shown.map((l) => (
          <ConcertCard key={l.concert.id} listing={l} />
        ))}
      </ul>
      {page.data?.next && (
        <button type="button" onClick={() => setCursor(page.data?.next ?? undefined)}>
          Show more concerts
        </button>
      )}
    </section>
  );
}

function ConcertCard({ listing: { concert, dates } }: { listing: Listing }) {
  return (
    <li class="card">
      <h2>
        <a href={`/concerts/${concert.id}`}>{concert.title}</a>
      </h2>
      <p class="muted">{concert.performer}</p>
      {dates.length === 0 ? (
        <p>No dates on sale right now.</p>
      ) : (
        <ul class="dates">
          {dates.map((d) => (
            <li key={d.id}>
              <time dateTime={d.starts_at}>{when(d.starts_at)}</time>: {plural(d.available_seats, 'seat')} left
            </li>
          ))}
        </ul>
      )}
    </li>
  );
}
