// The per-buyer limit (`PATCH /api/admin/concerts/{id}`): applies to the next hold, never to
// holds already made.
import { useId, useState } from 'preact/hooks';
import type { TargetedSubmitEvent } from 'preact';
import { api, type Concert } from '../api/client';
import { Field, FormMessage, useFormFeedback } from './form';
import { attempt } from './problem';

export function LimitForm({ concert, onConcert }: { concert: Concert; onConcert: (c: Concert) => void }) {
  const id = useId();
  const ids = { max_tickets_per_user: `${id}-limit` };
  const feedback = useFormFeedback(ids);
  const [busy, setBusy] = useState(false);

  async function submit(e: TargetedSubmitEvent<HTMLFormElement>) {
    e.preventDefault();
    if (busy) return;
    const limit = String(new FormData(e.currentTarget).get('max_tickets_per_user') ?? '');
    if (!limit) return feedback.invalid('max_tickets_per_user', 'Enter a number from 1 to 20.');
    setBusy(true);
    const r = await attempt(
      api.PATCH('/api/admin/concerts/{id}', {
        params: { path: { id: concert.id } },
        body: { max_tickets_per_user: Number(limit) },
      }),
    );
    setBusy(false);
    if (!r.ok) return feedback.failed(r.problem);
    onConcert(r.data);
    feedback.succeeded(`Limit saved: up to ${r.data.max_tickets_per_user} tickets per buyer from the next hold.`);
  }

  return (
    <section aria-labelledby={`${id}-title`} id="limit">
      <h2 id={`${id}-title`}>Ticket limit</h2>
      <form onSubmit={submit} noValidate>
        <fieldset>
          <legend>Per buyer</legend>
          <Field
            id={ids.max_tickets_per_user}
            name="max_tickets_per_user"
            label="Most tickets per buyer"
            hint={`1 to 20, held or bought, over all the dates. In effect: ${concert.max_tickets_per_user}. Holds already made are kept.`}
            type="number"
            inputMode="numeric"
            min={1}
            max={20}
            defaultValue={String(concert.max_tickets_per_user)}
            error={feedback.errorOf('max_tickets_per_user')}
            required
          />
        </fieldset>
        <FormMessage feedback={feedback} />
        <button type="submit" aria-disabled={busy}>
          Save the limit
        </button>
      </form>
    </section>
  );
}
