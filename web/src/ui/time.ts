import { useEffect, useState } from 'preact/hooks';

/** `Date.now()`, refreshed every `everyMs` (never when null): drives countdowns. */
export function useNow(everyMs: number | null = 1000): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    if (everyMs === null) return;
    const id = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(id);
  }, [everyMs]);
  return now;
}

/** Seconds from now until `iso` (negative once past). */
export function secondsUntil(iso: string, now: number): number {
  return (new Date(iso).getTime() - now) / 1000;
}
