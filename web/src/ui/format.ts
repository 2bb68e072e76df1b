// How money, times and seat lists read on every page: one place, so the fan sees the same words
// for the same thing everywhere.

const won = new Intl.NumberFormat('en', { style: 'currency', currency: 'KRW' });
const dateTime = new Intl.DateTimeFormat('en', { dateStyle: 'full', timeStyle: 'short' });
const shortDateTime = new Intl.DateTimeFormat('en', { dateStyle: 'medium', timeStyle: 'short' });
const clock = new Intl.DateTimeFormat('en', { timeStyle: 'medium' });

/** Whole KRW, e.g. "₩50,000". */
export function money(amount: number): string {
  return won.format(amount);
}

/** A concert date as a fan reads it, e.g. "Wednesday, December 9, 2026 at 7:30 PM". */
export function when(iso: string): string {
  return dateTime.format(new Date(iso));
}

export function whenShort(iso: string): string {
  return shortDateTime.format(new Date(iso));
}

/** A time of day with seconds, for instants close by (a sale opening, a draw). */
export function clockTime(iso: string): string {
  return clock.format(new Date(iso));
}

/** "Seat 3", "Seats 3 and 4", "Seats 3, 4 and 7". */
export function seatList(seats: readonly number[]): string {
  const sorted = [...seats].sort((a, b) => a - b).map(String);
  if (sorted.length <= 1) return `Seat ${sorted[0] ?? ''}`.trim();
  return `Seats ${sorted.slice(0, -1).join(', ')} and ${sorted[sorted.length - 1]}`;
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** A span of seconds in words, e.g. "2 minutes 5 seconds"; for waits and Retry-After. */
export function duration(totalSeconds: number): string {
  const s = Math.max(0, Math.round(totalSeconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h > 0) return [plural(h, 'hour'), m > 0 ? plural(m, 'minute') : ''].filter(Boolean).join(' ');
  if (m > 0) return [plural(m, 'minute'), sec > 0 ? plural(sec, 'second') : ''].filter(Boolean).join(' ');
  return plural(sec, 'second');
}

/** A countdown's face, "4:59" or "1:02:03". */
export function clockFace(totalSeconds: number): string {
  const s = Math.max(0, Math.floor(totalSeconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}
