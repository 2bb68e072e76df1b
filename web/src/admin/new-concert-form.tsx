// "New concert": `POST /api/admin/concerts`, then on to the new concert's sale page, where
// its dates are added.
import { useId, useState } from 'preact/hooks';
import { useLocation } from 'preact-iso';
import type { TargetedSubmitEvent } from 'preact';
import { api } from '../api/client';
import { Field, FormMessage, useFormFeedback } from './form';
import { attempt } from './problem';

export function NewConcertForm() {
  const id = useId();
  const ids = { title: `${id}-title`, performer: `${id}-performer`, max_tickets_per_user: `${id}-limit` };
  const feedback = useFormFeedback(ids);
  const [busy, setBusy] = useState(false);
  const { route } = useLocation();

  async function submit(e: TargetedSubmitEvent<HTMLFormElement>) {
    e.preventDefault();
    if (busy) return;
    const form = new FormData(e.currentTarget);
    const title = String(form.get('title') ?? '').trim();
    const performer = String(form.get('performer') ?? '').trim();
    const limit = String(form.get('max_tickets_per_user') ?? '');
    if (!title) return feedback.invalid('title', 'Enter the concert’s title.');
    if (!performer) return feedback.invalid('performer', 'Enter who performs.');
    if (!limit) return feedback.invalid('max_tickets_per_user', 'Enter a number from 1 to 20.');
    setBusy(true);
    const r = await attempt(
      api.POST('/api/admin/concerts', { body: { title, performer, max_tickets_per_user: Number(limit) } }),
    );
    setBusy(false);
    if (!r.ok) return feedback.failed(r.problem);
    route(`/admin/concerts/${r.data.id}`);
  }

  return (
    <section aria-labelledby={`${id}-heading`}>
      <h2 id={`${id}-heading`}>New concert</h2>
      <form onSubmit={submit} noValidate>
        <Field id={ids.title} name="title" label="Title" error={feedback.errorOf('title')} required maxLength={200} />
        <Field
          id={ids.performer}
          name="performer"
          label="Performer"
          error={feedback.errorOf('performer')}
          required
          maxLength={200}
        />
        <Field
          id={ids.max_tickets_per_user}
          name="max_tickets_per_user"
          label="Most tickets per buyer"
          hint="1 to 20, over all the concert’s dates."
          type="number"
          inputMode="numeric"
          min={1}
          max={20}
          defaultValue="4"
          error={feedback.errorOf('max_tickets_per_user')}
          required
        />
        <FormMessage feedback={feedback} />
        <button type="submit" aria-disabled={busy}>
          Create the concert
        </button>
      </form>
    </section>
  );
}
