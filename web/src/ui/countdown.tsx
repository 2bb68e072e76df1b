import { useEffect } from 'preact/hooks';
import { clockFace } from './format';
import { secondsUntil, useNow } from './time';

/**
 * Time left until `until`, ticking every second. `role="timer"` is not a live region, so a
 * screen reader is not interrupted every second; pages announce the moments that matter.
 */
export function Countdown({ until, onEnd }: { until: string; onEnd?: () => void }) {
  const now = useNow(1000);
  const left = secondsUntil(until, now);
  const ended = left <= 0;
  useEffect(() => {
    if (ended) onEnd?.();
    // Once per crossing, not on every tick.
  }, [ended]);
  return (
    <span role="timer" class="countdown">
      {clockFace(left)}
    </span>
  );
}
