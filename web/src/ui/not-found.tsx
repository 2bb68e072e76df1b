export function NotFound() {
  return (
    <section aria-labelledby="nf-title">
      <h1 id="nf-title">Page not found</h1>
      <p>
        There is nothing at this address. <a href="/">See what is on sale</a>.
      </p>
    </section>
  );
}
