// Seats sold over time, from the samples this page has taken since it was opened: an inline
// SVG step line with a caption that says the same in words, and the figures behind it as a
// table for whoever cannot see the line.
import { useId } from 'preact/hooks';
import { formatClock, formatCount } from './format';
import type { Sample } from './use-live-sale';

const WIDTH = 600;
const HEIGHT = 160;
const PAD = 4;
/** The time axis spans at least this long, so the first samples do not fill the width. */
const MIN_SPAN_MS = 60_000;
/** Rows of the table of changes: the most recent ones. */
const MAX_ROWS = 30;

/** The samples where the count changed (and the first one): what the table lists. */
function changes(samples: Sample[]): Sample[] {
  return samples.filter((s, i) => i === 0 || s.sold !== samples[i - 1]?.sold);
}

function stepPoints(samples: Sample[], seatsTotal: number): string {
  const first = samples[0]!.at;
  const span = Math.max(samples[samples.length - 1]!.at - first, MIN_SPAN_MS);
  const top = Math.max(seatsTotal, ...samples.map((s) => s.sold), 1);
  const x = (at: number) => PAD + ((at - first) / span) * (WIDTH - 2 * PAD);
  const y = (sold: number) => HEIGHT - PAD - (sold / top) * (HEIGHT - 2 * PAD);
  const points: string[] = [];
  samples.forEach((s, i) => {
    // Hold the previous count until this sample, then step: sales happen between samples.
    const previous = samples[i - 1];
    if (previous) points.push(`${x(s.at).toFixed(1)},${y(previous.sold).toFixed(1)}`);
    points.push(`${x(s.at).toFixed(1)},${y(s.sold).toFixed(1)}`);
  });
  return points.join(' ');
}

export function SoldChart({ samples, seatsTotal }: { samples: Sample[]; seatsTotal: number }) {
  const id = useId();
  const first = samples[0];
  const last = samples[samples.length - 1];
  if (!first || !last) return null;
  const rows = changes(samples).slice(-MAX_ROWS);
  return (
    <figure class="admin-chart">
      <figcaption id={`${id}-caption`}>
        Seats sold since {formatClock(first.at)}, while this page is open: {formatCount(first.sold)} then,{' '}
        {formatCount(last.sold)} at {formatClock(last.at)}, of {formatCount(seatsTotal)} seats.
      </figcaption>
      <div class="admin-chart-frame">
        <span class="admin-chart-top" aria-hidden="true">
          {formatCount(seatsTotal)}
        </span>
        <svg
          viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
          preserveAspectRatio="none"
          role="img"
          aria-labelledby={`${id}-caption`}
        >
          <line class="admin-chart-axis" x1={PAD} y1={PAD} x2={WIDTH - PAD} y2={PAD} vector-effect="non-scaling-stroke" />
          <line
            class="admin-chart-axis"
            x1={PAD}
            y1={HEIGHT - PAD}
            x2={WIDTH - PAD}
            y2={HEIGHT - PAD}
            vector-effect="non-scaling-stroke"
          />
          <polyline class="admin-chart-line" points={stepPoints(samples, seatsTotal)} vector-effect="non-scaling-stroke" />
        </svg>
      </div>
      <details>
        <summary>The chart’s figures</summary>
        <table>
          <caption>When the count of seats sold changed</caption>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Seats sold</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((s) => (
              <tr key={s.at}>
                <td>{formatClock(s.at)}</td>
                <td>{formatCount(s.sold)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}
