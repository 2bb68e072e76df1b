// A group of labelled figures. Each value is named by its label (`aria-labelledby`), so it can
// be found as "the Revenue figure" by assistive technology and by the browser tests.
import { useId } from 'preact/hooks';

/** A label, its value, and whether the value is code (a hash) to set in a monospace font. */
export type Figure = [label: string, value: string, code?: boolean];

/** `wide`: one figure a line, for long values (a hash, a sentence). */
export function Figures({ items, wide = false }: { items: Figure[]; wide?: boolean }) {
  const id = useId();
  return (
    <dl class={wide ? 'admin-figures admin-figures-wide' : 'admin-figures'}>
      {items.map(([label, value, code], i) => (
        <div key={label}>
          <dt id={`${id}-${i}`}>{label}</dt>
          <dd aria-labelledby={`${id}-${i}`} class={code ? 'admin-code' : undefined}>
            {value}
          </dd>
        </div>
      ))}
    </dl>
  );
}
