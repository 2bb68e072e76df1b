import type { ComponentChildren } from 'preact';

/**
 * A table that may be wider than a phone's screen scrolls sideways inside this region, which
 * takes focus so that it can be scrolled with the keyboard too (WCAG 2.1.1).
 */
export function ScrollRegion({ labelledBy, children }: { labelledBy: string; children: ComponentChildren }) {
  return (
    // eslint-disable-next-line jsx-a11y/no-noninteractive-tabindex -- see above: a scrollable region must be focusable
    <div class="admin-scroll" role="region" aria-labelledby={labelledBy} tabIndex={0}>
      {children}
    </div>
  );
}
