// `/tickets`: the fan's reservations, newest first — tickets, holds waiting for payment, and
// holds that ended.
import { api, type Concert, type Reservation } from '../api/client';
import { must } from '../api/problems';
import { ProblemAlert } from '../ui/alert';
import { money, seatList, whenShort } from '../ui/format';
import { PageHeading } from '../ui/heading';
import { Loading } from '../ui/loading';
import { SessionRequired } from '../ui/session-required';
import { useLoad } from '../ui/use-load';
import { getConcert } from './catalogue';

const STATUS_WORDS: Record<Reservation['status'], string> = {
  HELD: 'Held, waiting for payment',
  CONFIRMED: 'Ticket',
  EXPIRED: 'Hold ran out',
  CANCELLED: 'Cancelled',
  REJECTED: 'Not sold, refunded',
};

export function TicketsPage() {
  return (
    <SessionRequired title="My tickets">
      <Tickets />
    </SessionRequired>
  );
}

function Tickets() {
  const list = useLoad(async (signal) => {
    const { items } = await must(api.GET('/api/reservations', { signal }));
    const ids = [...new Set(items.map((r) => r.concert_id))];
    const concerts = new Map<number, Concert>();
    await Promise.all(
      ids.map((id) => getConcert(id).then((c) => concerts.set(id, c), () => undefined)),
    );
    return { items, concerts };
  }, []);
  const data = list.data;
  return (
    <section>
      <PageHeading title="My tickets" />
      {list.problem && <ProblemAlert problem={list.problem} onRetry={list.reload} />}
      {!data && !list.problem && <Loading what="your reservations" />}
      {data && data.items.length === 0 && (
        <p>
          You have no tickets yet. <a href="/">See what is on sale</a>.
        </p>
      )}
      {data && data.items.length > 0 && (
        <ul class="cards">
          {data.items.map((r) => (
            <li key={r.id} class="card">
              <h2>
                <a href={`/reservations/${r.id}`}>{data.concerts.get(r.concert_id)?.title ?? `Concert ${r.concert_id}`}</a>
              </h2>
              <p>
                <strong>{STATUS_WORDS[r.status]}</strong> · {seatList(r.seat_nos)} · {money(r.amount)}
              </p>
              <p class="muted">
                Reservation {r.id}, made <time dateTime={r.created_at}>{whenShort(r.created_at)}</time>
              </p>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
