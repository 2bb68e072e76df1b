// The live sale view: seats (in total and per date), money, the pace of holds and sales,
// reservations by status, the line, and the chart of seats sold — all refreshed by
// `useLiveSale` and read silently; `SaleAnnouncer` says only what changed state.
import { formatClock, formatCount, formatInstant, formatKrw } from './format';
import { Figures } from './figures';
import { SaleAnnouncer } from './announcer';
import { ScrollRegion } from './scroll-region';
import { SoldChart } from './sold-chart';
import { describeProblem } from './problem';
import type { LiveSale, SaleStats, WaitingRoom } from './use-live-sale';

const ROOM_STATE: Record<WaitingRoom['state'], string> = {
  OPEN: 'Open',
  PAUSED: 'Paused',
  SOLD_OUT: 'Sold out',
};

export function SaleView({ live }: { live: LiveSale }) {
  const { sale, room, samples, updatedAt, problem } = live;
  return (
    <section aria-labelledby="live-title" id="live">
      <h2 id="live-title">Live sale</h2>
      <SaleAnnouncer live={live} />
      <p class="admin-hint">
        {updatedAt ? `Updated at ${formatClock(updatedAt)}; ` : ''}refreshed every second and a half while this page is
        shown.
      </p>
      {problem && (
        <p class="admin-error">
          Not updating: {describeProblem(problem)}
        </p>
      )}
      {sale ? <SeatFigures sale={sale} /> : !problem && <p>Loading the sale…</p>}
      {sale && <SoldChart samples={samples} seatsTotal={sale.seats_total} />}
      {sale && <ReservationFigures sale={sale} />}
      {room && <LineFigures room={room} />}
    </section>
  );
}

function SeatFigures({ sale }: { sale: SaleStats }) {
  return (
    <>
      <h3>Seats and money</h3>
      <Figures
        items={[
          ['Seats', formatCount(sale.seats_total)],
          ['Available', formatCount(sale.available)],
          ['Held', formatCount(sale.held)],
          ['Sold', formatCount(sale.sold)],
          ['Revenue', formatKrw(sale.revenue)],
          ['Holds in the last minute', formatCount(sale.holds_per_minute)],
          ['Seats sold in the last minute', formatCount(sale.sold_per_minute)],
        ]}
      />
      <ScrollRegion labelledBy="seats-by-date">
        <table>
          <caption id="seats-by-date">Seats by date</caption>
          <thead>
            <tr>
              <th scope="col">Date</th>
              <th scope="col">Seats</th>
              <th scope="col">Available</th>
              <th scope="col">Held</th>
              <th scope="col">Sold</th>
            </tr>
          </thead>
          <tbody>
            {sale.schedules.map((s) => (
              <tr key={s.id}>
                <th scope="row">{formatInstant(s.starts_at)}</th>
                <td>{formatCount(s.seats_total)}</td>
                <td>{formatCount(s.available)}</td>
                <td>{formatCount(s.held)}</td>
                <td>{formatCount(s.sold)}</td>
              </tr>
            ))}
          </tbody>
          <tfoot>
            <tr>
              <th scope="row">All dates</th>
              <td>{formatCount(sale.seats_total)}</td>
              <td>{formatCount(sale.available)}</td>
              <td>{formatCount(sale.held)}</td>
              <td>{formatCount(sale.sold)}</td>
            </tr>
          </tfoot>
        </table>
      </ScrollRegion>
    </>
  );
}

function ReservationFigures({ sale }: { sale: SaleStats }) {
  const r = sale.reservations;
  return (
    <>
      <h3>Reservations by status</h3>
      <Figures
        items={[
          ['Held reservations', formatCount(r.held)],
          ['Confirmed', formatCount(r.confirmed)],
          ['Expired', formatCount(r.expired)],
          ['Cancelled', formatCount(r.cancelled)],
          ['Rejected', formatCount(r.rejected)],
        ]}
      />
    </>
  );
}

/** How many may shop at once as the pace sized it, against the organiser's ceiling. */
function admissionWindow(room: WaitingRoom): string {
  if (room.admission_window == null) return `not paced (${formatCount(room.max_active)} at most)`;
  return `${formatCount(room.admission_window)} of at most ${formatCount(room.max_active)}`;
}

function LineFigures({ room }: { room: WaitingRoom }) {
  return (
    <>
      <h3>The line</h3>
      <Figures
        items={[
          ['State', ROOM_STATE[room.state]],
          ['Waiting', formatCount(room.waiting)],
          ['Of them pre-queued', formatCount(room.pre_queued)],
          ['Admitted now', formatCount(room.active)],
          ['Admission window', admissionWindow(room)],
          ['Admitted per minute', formatCount(room.admitted_per_minute)],
          ['Admitted in all', formatCount(room.admitted_total)],
          ['Dropped for not answering', formatCount(room.abandoned_total)],
          ['Passes run out', formatCount(room.expired_total)],
        ]}
      />
    </>
  );
}
