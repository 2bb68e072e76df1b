// The line's levers (API.md "On-sale operations"): pause and resume, capacity, and the
// pre-queue's opening with its lottery. Each change is `PATCH /api/admin/queue/concerts/{id}`,
// whose answer (the room after the change) is shown at once.
import { useId, useState } from 'preact/hooks';
import type { TargetedSubmitEvent } from 'preact';
import { api, type Problem, type Schemas } from '../api/client';
import { Field, FormMessage, useFormFeedback } from './form';
import { Figures, type Figure } from './figures';
import { formatCount, formatInstant, localInputToRfc3339, localTimeZone, rfc3339ToLocalInput } from './format';
import { attempt, describeProblem } from './problem';
import type { WaitingRoom } from './use-live-sale';

interface LeverProps {
  concertId: number;
  room: WaitingRoom;
  onRoom: (room: WaitingRoom) => void;
}

function patchRoom(concertId: number, body: Schemas['RoomSettingsPatch']) {
  return attempt(api.PATCH('/api/admin/queue/concerts/{id}', { params: { path: { id: concertId } }, body }));
}

export function Levers(props: LeverProps) {
  return (
    <section aria-labelledby="levers-title" id="levers">
      <h2 id="levers-title">The line’s levers</h2>
      <p class="admin-hint">A change applies at the next admission tick, within a second.</p>
      <AdmissionSwitch {...props} />
      <CapacityForm {...props} />
      <OpeningForm {...props} />
    </section>
  );
}

const ADMISSION: Record<WaitingRoom['state'], { says: string; action: string }> = {
  OPEN: { says: 'The line is open: fans are admitted as seats allow.', action: 'Pause the line' },
  PAUSED: {
    says: 'The line is paused: fans keep their places and can still join, but nobody is admitted.',
    action: 'Resume the line',
  },
  SOLD_OUT: {
    says: 'The line is sold out: nothing is left to buy. After adding seats (a new date), reopen it to admit fans again.',
    action: 'Reopen the line',
  },
};

/** Pause or resume. The button keeps focus; the sale view's live region says the new state. */
function AdmissionSwitch({ concertId, room, onRoom }: LeverProps) {
  const id = useId();
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<Problem | null>(null);
  const { says, action } = ADMISSION[room.state];

  async function toggle() {
    if (busy) return;
    setBusy(true);
    const r = await patchRoom(concertId, { state: room.state === 'OPEN' ? 'PAUSED' : 'OPEN' });
    setBusy(false);
    setProblem(r.ok ? null : r.problem);
    if (r.ok) onRoom(r.data);
  }

  return (
    <fieldset class="admin-lever">
      <legend>Admission</legend>
      <p id={`${id}-state`}>{says}</p>
      <button type="button" onClick={toggle} aria-disabled={busy} aria-describedby={`${id}-state`}>
        {action}
      </button>
      {problem && (
        <p class="admin-error" role="alert">
          {describeProblem(problem)}
        </p>
      )}
    </fieldset>
  );
}

function CapacityForm({ concertId, room, onRoom }: LeverProps) {
  const id = useId();
  const ids = { max_active: `${id}-max-active`, admit_per_tick: `${id}-per-tick` };
  const feedback = useFormFeedback(ids);
  const [busy, setBusy] = useState(false);

  async function submit(e: TargetedSubmitEvent<HTMLFormElement>) {
    e.preventDefault();
    if (busy) return;
    const form = new FormData(e.currentTarget);
    const maxActive = String(form.get('max_active') ?? '');
    const perTick = String(form.get('admit_per_tick') ?? '');
    if (!maxActive) return feedback.invalid('max_active', 'Enter a number from 1 to 100,000.');
    if (!perTick) return feedback.invalid('admit_per_tick', 'Enter a number from 1 to 10,000.');
    setBusy(true);
    const r = await patchRoom(concertId, { max_active: Number(maxActive), admit_per_tick: Number(perTick) });
    setBusy(false);
    if (!r.ok) return feedback.failed(r.problem);
    onRoom(r.data);
    feedback.succeeded(
      `Capacity saved: at most ${formatCount(r.data.max_active)} fans admitted at once, ${formatCount(r.data.admit_per_tick)} a second.`,
    );
  }

  return (
    <form class="admin-lever" onSubmit={submit} noValidate>
      <fieldset>
        <legend>Capacity</legend>
        <Field
          id={ids.max_active}
          name="max_active"
          label="Most fans admitted at once"
          hint={`1 to 100,000. In effect: ${formatCount(room.max_active)}.`}
          type="number"
          inputMode="numeric"
          min={1}
          max={100000}
          defaultValue={String(room.max_active)}
          error={feedback.errorOf('max_active')}
          required
        />
        <Field
          id={ids.admit_per_tick}
          name="admit_per_tick"
          label="Most fans admitted per second"
          hint={`1 to 10,000 at each admission tick. In effect: ${formatCount(room.admit_per_tick)}.`}
          type="number"
          inputMode="numeric"
          min={1}
          max={10000}
          defaultValue={String(room.admit_per_tick)}
          error={feedback.errorOf('admit_per_tick')}
          required
        />
      </fieldset>
      <FormMessage feedback={feedback} />
      <button type="submit" aria-disabled={busy}>
        Save the capacity
      </button>
    </form>
  );
}

/** The sale's opening: a pre-queue until then, drawn by a lottery anyone can check. */
function OpeningForm({ concertId, room, onRoom }: LeverProps) {
  const id = useId();
  const ids = { sale_opens_at: `${id}-opens-at` };
  const feedback = useFormFeedback(ids);
  const [busy, setBusy] = useState(false);
  const { commitment, seed, drawn_at: drawnAt } = room.lottery;

  async function change(opensAt: string | null) {
    if (busy) return;
    setBusy(true);
    const r = await patchRoom(concertId, { sale_opens_at: opensAt });
    setBusy(false);
    if (!r.ok) {
      // The draw is final: say so next to the field it concerns, whatever the request was.
      if (r.problem.code === 'LOTTERY_DRAWN') return feedback.invalid('sale_opens_at', describeProblem(r.problem));
      return feedback.failed(r.problem);
    }
    onRoom(r.data);
    feedback.succeeded(
      r.data.sale_opens_at
        ? `Opening set: the sale opens at ${formatInstant(r.data.sale_opens_at)}; the commitment is published.`
        : 'The sale opens now: the pre-queue is drawn at the next tick.',
    );
  }

  function submit(e: TargetedSubmitEvent<HTMLFormElement>) {
    e.preventDefault();
    const value = String(new FormData(e.currentTarget).get('sale_opens_at') ?? '');
    const opensAt = localInputToRfc3339(value);
    if (!opensAt) return feedback.invalid('sale_opens_at', 'Enter the date and time the sale opens.');
    void change(opensAt);
  }

  const opening = room.sale_opens_at
    ? formatInstant(room.sale_opens_at)
    : drawnAt
      ? 'When the lottery was drawn'
      : 'Not set: fans are admitted in order of arrival';
  const lottery: Figure[] = [
    ['Opening', opening],
    ['Commitment (SHA-256 of the secret seed)', commitment ?? 'None yet', Boolean(commitment)],
  ];
  if (drawnAt) lottery.push(['Drawn at', formatInstant(drawnAt)], ['Seed', seed ?? '', true]);

  return (
    <form class="admin-lever" onSubmit={submit} noValidate>
      <fieldset>
        <legend>Sale opening and lottery</legend>
        <p class="admin-hint">
          Fans who join before the opening wait in a pre-queue. At the opening they are put in line, ahead of later
          arrivals, in an order drawn from a secret seed whose SHA-256 (the commitment) is published now and the seed
          itself after the draw, so that anyone can check the order.
        </p>
        <Figures items={lottery} wide />
        {drawnAt ? (
          <p>The lottery was drawn: the order is final and the opening can no longer change.</p>
        ) : (
          <Field
            id={ids.sale_opens_at}
            name="sale_opens_at"
            label="Sale opens at"
            hint={`A future time, in your time zone (${localTimeZone}).`}
            type="datetime-local"
            defaultValue={room.sale_opens_at ? rfc3339ToLocalInput(room.sale_opens_at) : ''}
            error={feedback.errorOf('sale_opens_at')}
            required
          />
        )}
      </fieldset>
      <FormMessage feedback={feedback} />
      {!drawnAt && (
        <div class="admin-actions">
          <button type="submit" aria-disabled={busy}>
            Set the opening
          </button>
          {room.sale_opens_at && (
            <button type="button" aria-disabled={busy} onClick={() => void change(null)}>
              Open the sale now
            </button>
          )}
        </div>
      )}
    </form>
  );
}
