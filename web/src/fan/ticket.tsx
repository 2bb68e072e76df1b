import type { Concert, Reservation, Schedule } from '../api/client';
import { money, seatList, when } from '../ui/format';

/** A confirmed purchase, with everything the fan needs at the door. */
export function Ticket(props: { reservation: Reservation; concert?: Concert; schedule?: Schedule | null }) {
  const { reservation: r, concert, schedule } = props;
  return (
    <article class="ticket" aria-labelledby={`ticket-${r.id}`}>
      <h2 id={`ticket-${r.id}`}>{concert ? concert.title : `Concert ${r.concert_id}`}</h2>
      <dl>
        {concert && (
          <>
            <dt>Performer</dt>
            <dd>{concert.performer}</dd>
          </>
        )}
        <dt>Date</dt>
        <dd>{schedule ? <time dateTime={schedule.starts_at}>{when(schedule.starts_at)}</time> : `Date ${r.schedule_id}`}</dd>
        <dt>Seats</dt>
        <dd>{seatList(r.seat_nos)}</dd>
        <dt>Paid</dt>
        <dd>{money(r.amount)}</dd>
        <dt>Reservation number</dt>
        <dd>{r.id}</dd>
      </dl>
    </article>
  );
}
