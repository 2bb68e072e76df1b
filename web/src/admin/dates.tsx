// The concert's dates (`GET /api/concerts/{id}/schedules`, every page) and the form that adds
// one (`POST /api/admin/concerts/{id}/schedules`). Times are entered in the organiser's zone
// and sent as RFC 3339 in UTC.
import { useEffect, useId, useState } from 'preact/hooks';
import type { TargetedSubmitEvent } from 'preact';
import { api, type Problem, type Schedule } from '../api/client';
import { Field, FormMessage, useFormFeedback } from './form';
import { formatCount, formatInstant, formatKrw, localInputToRfc3339, localTimeZone } from './format';
import { attempt } from './problem';
import { ProblemNotice } from './problem-notice';
import { ScrollRegion } from './scroll-region';

async function loadSchedules(concertId: number): Promise<{ items: Schedule[] } | { problem: Problem }> {
  const items: Schedule[] = [];
  let cursor: string | null = null;
  do {
    const query: { limit: number; cursor?: string } = cursor ? { limit: 100, cursor } : { limit: 100 };
    const r = await attempt(api.GET('/api/concerts/{id}/schedules', { params: { path: { id: concertId }, query } }));
    if (!r.ok) return { problem: r.problem };
    items.push(...r.data.items);
    cursor = r.data.next_cursor ?? null;
  } while (cursor);
  return { items };
}

export function Dates({ concertId }: { concertId: number }) {
  const [schedules, setSchedules] = useState<Schedule[] | null>(null);
  const [problem, setProblem] = useState<Problem | null>(null);

  async function reload() {
    const r = await loadSchedules(concertId);
    if ('problem' in r) return setProblem(r.problem);
    setProblem(null);
    setSchedules(r.items);
  }

  useEffect(() => {
    void reload();
  }, [concertId]);

  return (
    <section aria-labelledby="dates-title" id="dates">
      <h2 id="dates-title">Dates</h2>
      {problem && <ProblemNotice problem={problem} />}
      {schedules === null && !problem && <p>Loading the dates…</p>}
      {schedules?.length === 0 && <p>No date yet: add one below so that fans can buy seats.</p>}
      {schedules && schedules.length > 0 && <DateTable schedules={schedules} />}
      <NewDateForm concertId={concertId} onAdded={reload} />
    </section>
  );
}

function DateTable({ schedules }: { schedules: Schedule[] }) {
  return (
    <ScrollRegion labelledBy="dates-caption">
      <table>
        <caption id="dates-caption">The concert’s dates</caption>
        <thead>
          <tr>
            <th scope="col">Starts</th>
            <th scope="col">Booking opens</th>
            <th scope="col">Seats</th>
            <th scope="col">Price</th>
          </tr>
        </thead>
        <tbody>
          {schedules.map((s) => (
            <tr key={s.id}>
              <th scope="row">{formatInstant(s.starts_at)}</th>
              <td>{formatInstant(s.booking_opens_at)}</td>
              <td>{formatCount(s.seat_count)}</td>
              <td>{formatKrw(s.price)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </ScrollRegion>
  );
}

function NewDateForm({ concertId, onAdded }: { concertId: number; onAdded: () => Promise<void> }) {
  const id = useId();
  const ids = {
    starts_at: `${id}-starts`,
    booking_opens_at: `${id}-opens`,
    seat_count: `${id}-seats`,
    price: `${id}-price`,
  };
  const feedback = useFormFeedback(ids);
  const [busy, setBusy] = useState(false);

  async function submit(e: TargetedSubmitEvent<HTMLFormElement>) {
    e.preventDefault();
    if (busy) return;
    const formElement = e.currentTarget;
    const form = new FormData(formElement);
    const text = (name: string) => String(form.get(name) ?? '');
    const startsAt = localInputToRfc3339(text('starts_at'));
    const opensAt = localInputToRfc3339(text('booking_opens_at'));
    if (!startsAt) return feedback.invalid('starts_at', 'Enter the date and time the concert starts.');
    if (!opensAt) return feedback.invalid('booking_opens_at', 'Enter the date and time booking opens.');
    if (!text('seat_count')) return feedback.invalid('seat_count', 'Enter a number of seats from 1 to 1,000.');
    if (!text('price')) return feedback.invalid('price', 'Enter a price from 1 to 10,000,000 won.');
    setBusy(true);
    const r = await attempt(
      api.POST('/api/admin/concerts/{id}/schedules', {
        params: { path: { id: concertId } },
        body: {
          starts_at: startsAt,
          booking_opens_at: opensAt,
          seat_count: Number(text('seat_count')),
          price: Number(text('price')),
        },
      }),
    );
    setBusy(false);
    if (!r.ok) return feedback.failed(r.problem);
    formElement.reset();
    await onAdded();
    feedback.succeeded(
      `Date added: ${formatInstant(r.data.starts_at)}, ${formatCount(r.data.seat_count)} seats at ${formatKrw(r.data.price)}.`,
    );
  }

  return (
    <form onSubmit={submit} noValidate>
      <fieldset>
        <legend>New date</legend>
        <p class="admin-hint">Times are in your time zone ({localTimeZone}).</p>
        <Field
          id={ids.starts_at}
          name="starts_at"
          label="Starts at"
          type="datetime-local"
          error={feedback.errorOf('starts_at')}
          required
        />
        <Field
          id={ids.booking_opens_at}
          name="booking_opens_at"
          label="Booking opens at"
          hint="Not after the start: fans can hold seats from then."
          type="datetime-local"
          error={feedback.errorOf('booking_opens_at')}
          required
        />
        <Field
          id={ids.seat_count}
          name="seat_count"
          label="Number of seats"
          hint="1 to 1,000, numbered from 1."
          type="number"
          inputMode="numeric"
          min={1}
          max={1000}
          error={feedback.errorOf('seat_count')}
          required
        />
        <Field
          id={ids.price}
          name="price"
          label="Price per seat (KRW)"
          hint="1 to 10,000,000 won."
          type="number"
          inputMode="numeric"
          min={1}
          max={10000000}
          error={feedback.errorOf('price')}
          required
        />
      </fieldset>
      <FormMessage feedback={feedback} />
      <button type="submit" aria-disabled={busy}>
        Add the date
      </button>
    </form>
  );
}
