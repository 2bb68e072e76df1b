#!/usr/bin/env node
// The web app's first load through the gateway, as a fan's browser sees it: Debian's Chromium
// (headless), a fresh profile per load (nothing cached), the concerts page at `/` until its
// heading and the list are shown. Prints the median and worst of N loads: time to first byte,
// first contentful paint, DOMContentLoaded, load, "concerts shown", and the bytes sent over the
// wire (compressed); then the same page again with a warm cache (a fan coming back).
//
//   node bench/web-first-load.mjs [--base http://127.0.0.1:8080] [--runs 10]
//
// Needs the local stack (deploy/local/stack.sh up) and web/node_modules (npm ci in web/).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const { chromium } = createRequire(join(root, 'web', 'package.json'))('playwright-core');

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const base = arg('base', 'http://127.0.0.1:8080');
const runs = Number(arg('runs', '10'));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
});

async function load(page) {
  const started = Date.now();
  await page.goto(`${base}/`, { waitUntil: 'load' });
  await page.getByRole('heading', { level: 1 }).waitFor();
  // The list (or its empty state) replaces the "Loading concerts…" line once the API answered.
  await page.waitForFunction(() => !document.querySelector('p.loading'));
  const shown = Date.now() - started;
  const t = await page.evaluate(() => {
    const [nav] = performance.getEntriesByType('navigation');
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    const bytes = performance
      .getEntriesByType('resource')
      .reduce((sum, r) => sum + r.transferSize, nav.transferSize);
    return { ttfb: nav.responseStart, fcp: fcp?.startTime ?? NaN, dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, bytes };
  });
  return { ...t, shown };
}

const cold = [];
const warm = [];
for (let i = 0; i < runs; i += 1) {
  const context = await browser.newContext();
  const page = await context.newPage();
  cold.push(await load(page));
  warm.push(await load(page));
  await context.close();
}
await browser.close();

const stat = (xs, key) => {
  const v = xs.map((x) => x[key]).sort((a, b) => a - b);
  return { median: v[Math.floor(v.length / 2)], worst: v[v.length - 1] };
};
const row = (label, xs) => {
  const f = (key, unit = 'ms') => {
    const { median, worst } = stat(xs, key);
    return unit === 'KB' ? `${(median / 1024).toFixed(1)} KB` : `${median.toFixed(0)} ms (worst ${worst.toFixed(0)})`;
  };
  console.log(`${label}: ttfb ${f('ttfb')}, first paint ${f('fcp')}, DOMContentLoaded ${f('dcl')}, load ${f('load')}, concerts shown ${f('shown')}, transferred ${f('bytes', 'KB')}`);
};
console.log(`${runs} loads of ${base}/ in headless Chromium, each in a fresh profile`);
row('first load (nothing cached)', cold);
row('again (warm cache)', warm);
