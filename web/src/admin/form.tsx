// What every console form shares: a labelled input with its hint and its error, and the
// form's feedback (an error next to the field it concerns, or for the whole form; a success
// message), with focus moved to whatever the organiser has to read or fix next.
import type { InputHTMLAttributes } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { Problem } from '../api/client';
import { describeProblem, fieldReason, problemField } from './problem';

interface FieldProps extends Omit<InputHTMLAttributes<HTMLInputElement>, 'id' | 'label'> {
  id: string;
  label: string;
  hint?: string;
  error?: string | undefined;
}

export function Field({ id, label, hint, error, ...input }: FieldProps) {
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const describedBy = [hint ? hintId : '', error ? errorId : ''].filter(Boolean).join(' ');
  return (
    <div class="admin-field">
      <label for={id}>{label}</label>
      {hint && (
        <p id={hintId} class="admin-hint">
          {hint}
        </p>
      )}
      <input id={id} aria-invalid={error ? true : undefined} aria-describedby={describedBy || undefined} {...input} />
      {error && (
        <p id={errorId} class="admin-error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

interface Failure<F extends string> {
  field: F | null;
  message: string;
}

/**
 * A form's feedback. `fieldIds` maps each request field the form sends to its input's id, so
 * a 400 naming the field lands next to that input.
 */
export function useFormFeedback<F extends string>(fieldIds: Record<F, string>) {
  const [failure, setFailure] = useState<Failure<F> | null>(null);
  const [success, setSuccess] = useState<string | null>(null);
  const messageRef = useRef<HTMLParagraphElement>(null);

  useEffect(() => {
    if (failure?.field) document.getElementById(fieldIds[failure.field])?.focus();
    else if (failure || success) messageRef.current?.focus();
    // Only a new outcome moves focus; the ids of a form's fields never change.
  }, [failure, success]);

  return {
    messageRef,
    failure,
    success,
    /** The error to show next to `field`, if the last attempt failed because of it. */
    errorOf: (field: F) => (failure?.field === field ? failure.message : undefined),
    /** A check made before sending (an empty or unreadable value). */
    invalid(field: F, message: string) {
      setSuccess(null);
      setFailure({ field, message });
    },
    failed(p: Problem) {
      const named = problemField(p);
      const field = named !== null && named in fieldIds ? (named as F) : null;
      setSuccess(null);
      setFailure({ field, message: field ? fieldReason(p) : describeProblem(p) });
    },
    succeeded(message: string) {
      setFailure(null);
      setSuccess(message);
    },
  };
}

type Feedback = ReturnType<typeof useFormFeedback>;

/** The form-wide error or the success message; focusable so focus can land on it. */
export function FormMessage({ feedback }: { feedback: Pick<Feedback, 'failure' | 'success' | 'messageRef'> }) {
  const { failure, success, messageRef } = feedback;
  if (failure && !failure.field) {
    return (
      <p class="admin-error" role="alert" tabIndex={-1} ref={messageRef}>
        {failure.message}
      </p>
    );
  }
  if (success && !failure) {
    return (
      <p class="admin-success" role="status" tabIndex={-1} ref={messageRef}>
        {success}
      </p>
    );
  }
  return null;
}
