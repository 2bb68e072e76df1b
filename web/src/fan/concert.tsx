// `/concerts/:id`: one concert, its dates, the state of its line (pre-sale draw, sold out) and
// the "Join the line" button — every seat is bought through the waiting line.
import { useState } from 'preact/hooks';
import { useLocation, useRoute } from 'preact-iso';
import { api, type Schedule } from '../api/client';
import { type ApiProblem, asProblem, must } from '../api/problems';
import { session } from '../session';
import { ProblemAlert } from '../ui/alert';
import { clockTime, money, plural, when } from '../ui/format';
import { PageHeading } from '../ui/heading';
import { Loading } from '../ui/loading';
import { useLoad } from '../ui/use-load';
import { getConcert, getSchedules } from './catalogue';
import { savePass } from './storage';

export function ConcertPage() {
  const id = Number(useRoute().params.id);
  const { route } = useLocation();
  const info = useLoad(
    async (signal) => {
      const [concert, dates, room] = await Promise.all([
        getConcert(id),
        getSchedules(id, false, signal),
        must(api.GET('/api/queue/concerts/{id}', { params: { path: { id } }, signal })),
      ]);
      return { concert, dates, room };
    },
    [id],
  );
  const [joining, setJoining] = useState(false);
  const [joinProblem, setJoinProblem] = useState<ApiProblem | null>(null);

  const join = async () => {
    if (!session.value) {
      route(`/login?next=${encodeURIComponent(`/queue/${id}`)}`);
      return;
    }
    setJoining(true);
    setJoinProblem(null);
    try {
      const status = await must(api.POST('/api/queue/tokens', { body: { concert_id: id } }));
      savePass(id, { token: status.token, activeUntil: status.active_until ?? null });
      route(`/queue/${id}`);
    } catch (e) {
      setJoinProblem(asProblem(e));
      setJoining(false);
    }
  };

  const data = info.data;
  const upcoming = data?.dates.filter((d) => new Date(d.starts_at).getTime() > Date.now()) ?? [];
  const soldOut = data?.room.state === 'SOLD_OUT';
  const opensAt = data?.room.sale_opens_at;
  const preSale = !!opensAt && !data?.room.lottery.drawn_at;
  return (
    <section>
      <PageHeading title={data?.concert.title ?? 'Concert'} />
      {info.problem && <ProblemAlert problem={info.problem} onRetry={info.reload} />}
      {!data && !info.problem && <Loading what="the concert" />}
      {data && (
        <>
          <p class="lead">{data.concert.performer}</p>
          <p>Each fan may buy up to {plural(data.concert.max_tickets_per_user, 'ticket')} for this concert.</p>
          <h2>Dates</h2>
          {upcoming.length === 0 ? (
            <p>No dates are planned.</p>
          ) : (
            <ul class="dates">
              {upcoming.map((d) => (
                <DateItem key={d.id} date={d} />
              ))}
            </ul>
          )}
          <h2>Buying tickets</h2>
          {soldOut ? (
            <p role="status" class="notice">
              Sold out: every seat of this concert has been sold.
            </p>
          ) : (
            <>
              <p>
                Everyone buys through a waiting line: join it, and when it is your turn you get a pass to pick seats.
              </p>
              {preSale && opensAt && (
                <p>
                  The sale opens at <time dateTime={opensAt}>{clockTime(opensAt)}</time> ({when(opensAt)}). Everyone who
                  joins before then is placed in the line by a fair draw.
                </p>
              )}
              {joinProblem && <ProblemAlert problem={joinProblem} context={{ concertId: id }} />}
              <button type="button" class="primary" onClick={join} disabled={joining}>
                {joining ? 'Joining the line…' : 'Join the line'}
              </button>
            </>
          )}
        </>
      )}
    </section>
  );
}

function DateItem({ date }: { date: Schedule }) {
  const opens = new Date(date.booking_opens_at).getTime();
  const state =
    opens > Date.now()
      ? `booking opens ${when(date.booking_opens_at)}`
      : date.available_seats === 0
        ? 'no seats left'
        : `${plural(date.available_seats, 'seat')} left of ${date.seat_count}`;
  return (
    <li>
      <time dateTime={date.starts_at}>{when(date.starts_at)}</time> — {money(date.price)} a seat, {state}
    </li>
  );
}
