// How the console writes money, counts and instants. The locale is fixed so that every
// organiser (and the browser tests) reads the same figures.

const krw = new Intl.NumberFormat('en', { style: 'currency', currency: 'KRW' });
const count = new Intl.NumberFormat('en');
const instant = new Intl.DateTimeFormat('en-GB', {
  day: 'numeric',
  month: 'short',
  year: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  timeZoneName: 'short',
});
const clock = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** Whole won, e.g. `₩1,250,000`. */
export function formatKrw(amount: number): string {
  return krw.format(amount);
}

export function formatCount(n: number): string {
  return count.format(n);
}

/** An RFC 3339 instant in the organiser's time zone, with the zone named. */
export function formatInstant(rfc3339: string): string {
  return instant.format(new Date(rfc3339));
}

/** A time of day to the second, for "updated at" and the chart's figures. */
export function formatClock(at: Date | number): string {
  return clock.format(at);
}

/** The organiser's time zone, which `datetime-local` inputs are read in. */
export const localTimeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

/**
 * A `datetime-local` value (wall-clock time without a zone, read in the organiser's zone) as
 * RFC 3339 in UTC, the API's form; `null` if empty or not a time.
 */
export function localInputToRfc3339(value: string): string | null {
  if (!value) return null;
  // ECMAScript reads a date-time without an offset as local time, which is what the input meant.
  const at = new Date(value);
  return Number.isNaN(at.getTime()) ? null : at.toISOString();
}

/** An RFC 3339 instant as a `datetime-local` value in the organiser's zone (to the minute). */
export function rfc3339ToLocalInput(rfc3339: string): string {
  const at = new Date(rfc3339);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}T${pad(at.getHours())}:${pad(at.getMinutes())}`;
}
