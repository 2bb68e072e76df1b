// `/seats/:scheduleId?concert=<id>`: the seat map of one date, refreshed every 3 s. The fan picks
// 1–4 seats (never more than the concert lets one fan have) and holds them; the hold needs the
// ACTIVE pass from the waiting line, sent as X-Queue-Token with the seat map's requests too.
import { useEffect, useRef, useState } from 'preact/hooks';
import { useLocation, useRoute } from 'preact-iso';
import { api, type Schemas } from '../api/client';
import { type ApiProblem, asProblem, must } from '../api/problems';
import { ProblemAlert } from '../ui/alert';
import { Countdown } from '../ui/countdown';
import { money, plural, seatList, when } from '../ui/format';
import { PageHeading } from '../ui/heading';
import { Loading } from '../ui/loading';
import { SessionRequired } from '../ui/session-required';
import { useNow } from '../ui/time';
import { useInterval, useLoad } from '../ui/use-load';
import { getConcert, getSchedule } from './catalogue';
import { livePass } from './storage';

type Seat = Schemas['Seat'];

/** The most seats one hold may take (RESERVATION_MAX_SEATS). */
const MAX_SEATS_PER_HOLD = 4;
const REFRESH_MS = 3000;

const STATUS_WORD: Record<Seat['status'], string> = { AVAILABLE: 'available', HELD: 'held', SOLD: 'sold' };

export function SeatsPage() {
  const { params, query } = useRoute();
  return (
    <SessionRequired title="Choose seats">
      <SeatChooser scheduleId={Number(params.scheduleId)} concertId={Number(query.concert)} />
    </SessionRequired>
  );
}

function SeatChooser({ scheduleId, concertId }: { scheduleId: number; concertId: number }) {
  const now = useNow(1000);
  const pass = concertId ? livePass(concertId, now) : null;
  const about = useLoad(
    async (signal) => {
      const [concert, schedule] = await Promise.all([getConcert(concertId), getSchedule(concertId, scheduleId, signal)]);
      return { concert, schedule };
    },
    [concertId, scheduleId],
  );
  const title = about.data ? `Choose seats: ${about.data.concert.title}` : 'Choose seats';
  return (
    <section>
      <PageHeading title={title} />
      {about.data?.schedule && (
        <p class="lead">
          <time dateTime={about.data.schedule.starts_at}>{when(about.data.schedule.starts_at)}</time>
        </p>
      )}
      {about.problem && <ProblemAlert problem={about.problem} onRetry={about.reload} />}
      {!pass ? (
        <div role="alert" class="notice notice-error">
          <p>You need a pass from the waiting line to pick seats, and this tab has none that is still valid.</p>
          <p class="actions">
            <a href={concertId ? `/queue/${concertId}` : '/'}>{concertId ? 'Go to the waiting line' : 'See the concerts'}</a>
          </p>
        </div>
      ) : (
        <>
          {pass.activeUntil && (
            <p>
              Your pass is valid for <Countdown until={pass.activeUntil} /> more.
            </p>
          )}
          <SeatMap
            scheduleId={scheduleId}
            concertId={concertId}
            token={pass.token}
            limit={Math.min(MAX_SEATS_PER_HOLD, about.data?.concert.max_tickets_per_user ?? MAX_SEATS_PER_HOLD)}
          />
        </>
      )}
    </section>
  );
}

function SeatMap(props: { scheduleId: number; concertId: number; token: string; limit: number }) {
  const { scheduleId, concertId, token, limit } = props;
  const { route } = useLocation();
  const [selected, setSelected] = useState<number[]>([]);
  const [note, setNote] = useState('');
  const [problem, setProblem] = useState<ApiProblem | null>(null);
  const [holding, setHolding] = useState(false);
  // The hold's Idempotency-Key: kept while a try got no clear answer (so a retry cannot hold
  // twice), dropped after any answer (the server stores refusals against the key).
  const holdKey = useRef<string | null>(null);

  const map = useLoad(
    async (signal) => {
      const m = await must(
        api.GET('/api/schedules/{id}/seats', {
          params: { path: { id: scheduleId } },
          headers: { 'X-Queue-Token': token },
          signal,
        }),
      );
      return m;
    },
    [scheduleId, token],
  );
  const passGone = map.problem?.code === 'QUEUE_TOKEN_INVALID';
  useInterval(map.reload, REFRESH_MS, !passGone);

  // Seats taken since they were picked leave the selection, and the fan is told which.
  useEffect(() => {
    if (!map.data) return;
    const free = new Set(map.data.seats.filter((s) => s.status === 'AVAILABLE').map((s) => s.seat_no));
    const gone = selected.filter((n) => !free.has(n));
    if (gone.length === 0) return;
    setSelected(selected.filter((n) => free.has(n)));
    setNote(`${seatList(gone)} ${gone.length === 1 ? 'was' : 'were'} just taken by someone else and left your selection.`);
    // Judged when a new map arrives, against the selection of that moment.
  }, [map.data]);

  function toggle(seatNo: number) {
    setProblem(null);
    if (selected.includes(seatNo)) {
      setSelected(selected.filter((n) => n !== seatNo));
      setNote('');
    } else if (selected.length >= limit) {
      setNote(`You can pick up to ${plural(limit, 'seat')} at a time. Unselect one to pick another.`);
    } else {
      setSelected([...selected, seatNo].sort((a, b) => a - b));
      setNote('');
    }
  }

  async function hold() {
    setHolding(true);
    setProblem(null);
    holdKey.current ??= crypto.randomUUID();
    try {
      const r = await must(
        api.POST('/api/reservations', {
          body: { schedule_id: scheduleId, seat_nos: selected },
          headers: { 'X-Queue-Token': token, 'Idempotency-Key': holdKey.current },
        }),
      );
      holdKey.current = null;
      route(`/reservations/${r.id}`);
    } catch (e) {
      const p = asProblem(e);
      if (p.status > 0 && p.status < 500 && p.code !== 'IDEMPOTENCY_KEY_IN_USE') holdKey.current = null;
      if (p.code === 'SEAT_UNAVAILABLE') {
        setSelected(selected.filter((n) => !p.seatNos.includes(n)));
        setNote('');
        map.reload();
      }
      setProblem(p);
      setHolding(false);
    }
  }

  const seats = map.data?.seats ?? [];
  const price = seats.filter((s) => selected.includes(s.seat_no)).reduce((sum, s) => sum + s.price, 0);
  return (
    <>
      {map.problem && <ProblemAlert problem={map.problem} context={{ concertId }} onRetry={passGone ? undefined : map.reload} />}
      {!map.data && !map.problem && <Loading what="the seats" />}
      {map.data && (
        <>
          <h2 id="seat-map-title">Seats</h2>
          <p>
            Pick up to {plural(limit, 'seat')}. Seats marked held or sold are taken. The map refreshes every few seconds.
          </p>
          <div role="group" aria-labelledby="seat-map-title" class="seat-grid">
            {seats.map((s) => (
              <SeatButton key={s.seat_no} seat={s} selected={selected.includes(s.seat_no)} onToggle={toggle} />
            ))}
          </div>
          <div class="hold-bar">
            <p aria-live="polite" aria-atomic="true">
              {selected.length === 0
                ? 'No seats selected.'
                : `Selected: ${seatList(selected)}, ${money(price)} in total.`}{' '}
              {note}
            </p>
            {problem && <ProblemAlert problem={problem} context={{ concertId, scheduleId }} onRetry={problem.retryAfter ? hold : undefined} />}
            <button type="button" class="primary" onClick={hold} disabled={selected.length === 0 || holding}>
              {holding ? 'Holding…' : selected.length ? `Hold ${plural(selected.length, 'seat')}` : 'Hold seats'}
            </button>
          </div>
        </>
      )}
    </>
  );
}

function SeatButton({ seat, selected, onToggle }: { seat: Seat; selected: boolean; onToggle: (n: number) => void }) {
  const available = seat.status === 'AVAILABLE';
  const word = STATUS_WORD[seat.status];
  // The name says the state in words ("Seat 3 held") and holds the face's text ("3 held"),
  // so what a speech user reads on the button is what they can say.
  return (
    <button
      type="button"
      class={`seat seat-${seat.status.toLowerCase()}`}
      aria-label={`Seat ${seat.seat_no} ${word}`}
      aria-pressed={available ? selected : undefined}
      disabled={!available}
      onClick={() => onToggle(seat.seat_no)}
    >
      <span class="seat-no">{seat.seat_no}</span> <span class="seat-state">{word}</span>
    </button>
  );
}
