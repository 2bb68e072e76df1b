/** "Loading…" for a part of a page that waits for the API, read out politely. */
export function Loading({ what }: { what: string }) {
  return (
    <p role="status" class="loading">
      Loading {what}…
    </p>
  );
}
