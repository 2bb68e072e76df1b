// `/reservations/:id`: a hold and what comes of it. While HELD: the time left, and the pay
// button (the wallet pays; a short wallet links to the top-up with the amount missing). Once
// paid, the page waits for CONFIRMED — the confirmation is asynchronous — and shows the ticket.
// A hold that ran out, was cancelled or could not be sold says so and offers to pick again.
import { useState } from 'preact/hooks';
import { useRoute } from 'preact-iso';
import { api, type Reservation } from '../api/client';
import { ApiProblem, type ProblemContext, asProblem, must } from '../api/problems';
import { ProblemAlert } from '../ui/alert';
import { Countdown } from '../ui/countdown';
import { money, seatList, when } from '../ui/format';
import { PageHeading } from '../ui/heading';
import { Loading } from '../ui/loading';
import { SessionRequired } from '../ui/session-required';
import { secondsUntil, useNow } from '../ui/time';
import { useInterval, useLoad } from '../ui/use-load';
import { getConcert, getSchedule } from './catalogue';
import { forgetPaymentKey, livePass, paymentKey, savedPass } from './storage';
import { Ticket } from './ticket';

/** How often a HELD reservation is read again (to see it end), and a paid one (to see it confirmed). */
const HELD_REFRESH_MS = 3000;
const PAID_REFRESH_MS = 1000;

export function ReservationPage() {
  return (
    <SessionRequired title="Reservation">
      <ReservationView id={Number(useRoute().params.id)} />
    </SessionRequired>
  );
}

function ReservationView({ id }: { id: number }) {
  const now = useNow(1000);
  const res = useLoad((signal) => must(api.GET('/api/reservations/{id}', { params: { path: { id } }, signal })), [id]);
  const r = res.data;
  const about = useLoad(
    async (signal) => {
      if (!r) return null;
      const [concert, schedule] = await Promise.all([getConcert(r.concert_id), getSchedule(r.concert_id, r.schedule_id, signal)]);
      return { concert, schedule };
    },
    [r?.concert_id, r?.schedule_id],
  );
  const [paid, setPaid] = useState(false);
  const held = r?.status === 'HELD';
  useInterval(res.reload, paid ? PAID_REFRESH_MS : HELD_REFRESH_MS, held);

  // Past its end a hold still reads HELD for a grace period; it can no longer be paid.
  const lapsed = held && !paid && secondsUntil(r.held_until, now) <= 0;
  const heading = !r
    ? 'Reservation'
    : r.status === 'CONFIRMED'
      ? 'Your ticket'
      : held && paid
        ? 'Confirming your seats'
        : held && !lapsed
          ? 'Your seats are held'
          : `Reservation ${r.id}`;
  return (
    <section>
      <PageHeading title={heading} />
      {res.problem && <ProblemAlert problem={res.problem} onRetry={res.reload} />}
      {!r && !res.problem && <Loading what="the reservation" />}
      {r && about.data && (
        <p class="lead">
          {about.data.concert.title}
          {about.data.schedule && (
            <>
              {', '}
              <time dateTime={about.data.schedule.starts_at}>{when(about.data.schedule.starts_at)}</time>
            </>
          )}
        </p>
      )}
      {r && held && !lapsed && (
        paid ? (
          <p role="status">Payment received. Confirming your seats…</p>
        ) : (
          <Held reservation={r} onPaid={() => setPaid(true)} onChanged={res.reload} />
        )
      )}
      {r && (lapsed || r.status === 'EXPIRED') && <Ended reservation={r} why="expired" />}
      {r?.status === 'CANCELLED' && <Ended reservation={r} why="cancelled" />}
      {r?.status === 'REJECTED' && <Ended reservation={r} why="rejected" />}
      {r?.status === 'CONFIRMED' && (
        <>
          <p role="status">Paid and confirmed. Enjoy the concert!</p>
          <Ticket reservation={r} concert={about.data?.concert} schedule={about.data?.schedule} />
          <p>
            <a href="/tickets">See all my tickets</a>
          </p>
        </>
      )}
    </section>
  );
}

function context(r: Reservation, extra: ProblemContext = {}): ProblemContext {
  return { concertId: r.concert_id, scheduleId: r.schedule_id, reservationId: r.id, ...extra };
}

function Held({ reservation: r, onPaid, onChanged }: { reservation: Reservation; onPaid: () => void; onChanged: () => void }) {
  const now = useNow(1000);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<{ p: ApiProblem; ctx: ProblemContext } | null>(null);
  const left = secondsUntil(r.held_until, now);

  async function pay() {
    setBusy(true);
    setProblem(null);
    const token = savedPass(r.concert_id)?.token;
    try {
      if (!token) throw new ApiProblem(401, 'QUEUE_TOKEN_INVALID', 'no pass in this tab');
      await must(
        api.POST('/api/payments', {
          body: { reservation_id: r.id },
          headers: { 'X-Queue-Token': token, 'Idempotency-Key': paymentKey(r.id) },
        }),
      );
      onPaid();
    } catch (e) {
      const p = asProblem(e);
      if (p.code === 'ALREADY_PAID') return onPaid();
      setProblem({ p, ctx: context(r, p.code === 'INSUFFICIENT_BALANCE' ? { missing: await missing(r) } : {}) });
      // These refusals are stored against the key: the next try needs a new one.
      if (['INSUFFICIENT_BALANCE', 'HOLD_EXPIRED', 'RESERVATION_NOT_PAYABLE'].includes(p.code)) forgetPaymentKey(r.id);
      if (p.code === 'HOLD_EXPIRED' || p.code === 'RESERVATION_NOT_PAYABLE') onChanged();
    } finally {
      setBusy(false);
    }
  }

  async function release() {
    setBusy(true);
    setProblem(null);
    try {
      await must(api.DELETE('/api/reservations/{id}', { params: { path: { id: r.id } } }));
      onChanged();
    } catch (e) {
      setProblem({ p: asProblem(e), ctx: context(r) });
    } finally {
      setBusy(false);
    }
  }

  return (
    <>
      <dl class="facts">
        <dt>Seats</dt>
        <dd>{seatList(r.seat_nos)}</dd>
        <dt>Price</dt>
        <dd>{money(r.amount)}</dd>
        <dt>Time left to pay</dt>
        <dd>
          <Countdown until={r.held_until} />
        </dd>
      </dl>
      <p aria-live="polite">{left <= 60 ? 'Less than a minute left to pay.' : ''}</p>
      {problem && <ProblemAlert problem={problem.p} context={problem.ctx} />}
      <p class="actions">
        <button type="button" class="primary" onClick={pay} disabled={busy}>
          {busy ? 'Working…' : `Pay ${money(r.amount)}`}
        </button>
        <button type="button" onClick={release} disabled={busy}>
          Release these seats
        </button>
      </p>
      <p class="muted">Payment comes from your wallet. <a href={`/wallet?back=/reservations/${r.id}`}>See your wallet</a></p>
    </>
  );
}

/** How much more the wallet needs for `r`; undefined if the balance cannot be read now. */
async function missing(r: Reservation): Promise<number | undefined> {
  try {
    const w = await must(api.GET('/api/wallet'));
    return Math.max(r.amount - w.balance, 1);
  } catch {
    return undefined;
  }
}

const ENDED = {
  expired: 'This hold ran out before it was paid, so the seats were released. Nothing was charged.',
  cancelled: 'This hold was cancelled and the seats were released. Nothing was charged.',
  rejected:
    'The payment came too late to keep these seats, so the purchase did not go through. The money is back in your wallet.',
};

function Ended({ reservation: r, why }: { reservation: Reservation; why: keyof typeof ENDED }) {
  const pass = livePass(r.concert_id);
  return (
    <div role="alert" class="notice notice-error">
      <p>
        {seatList(r.seat_nos)}: {ENDED[why]}
      </p>
      <p class="actions">
        {pass ? (
          <a href={`/seats/${r.schedule_id}?concert=${r.concert_id}`}>Pick seats again</a>
        ) : (
          <a href={`/queue/${r.concert_id}`}>Join the line to pick seats again</a>
        )}
        {why === 'rejected' && <a href="/wallet">See your wallet</a>}
      </p>
    </div>
  );
}
