// The organiser's console, in a real browser against a live gateway: creating a concert and its
// date, the line's levers, the live sale view while fans buy, and the door that keeps fans out.
//
// The first seats are bought from the test through the API (join the line, wait for ACTIVE,
// hold, top up, pay, wait for CONFIRMED), a few fans at once, so each step's figures can be
// checked; the rest by a small run of the load tool against this concert.
import { type Page, expect, test } from '@playwright/test';
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { expectAccessible } from './a11y';
import {
  type Account,
  BASE,
  type OnSale,
  adminAccount,
  call,
  concertOnSale,
  logInPage,
  newFan,
  screenshot,
  topUp,
} from './support';

// A zone ahead of UTC, so that a date typed into the page is visibly converted to UTC.
test.use({ timezoneId: 'Asia/Seoul' });

/** An RFC 3339 instant in one spelling, whatever precision the API wrote it with. */
function utc(rfc3339: string): string {
  return new Date(rfc3339).toISOString();
}

/** One figure of the console: the value its label (`aria-labelledby`) names. */
function figure(page: Page, label: string) {
  return page.getByLabel(label, { exact: true });
}

/** Plays the browser hiding or showing the tab (another tab, a minimised window). */
async function setHidden(page: Page, hidden: boolean): Promise<void> {
  await page.evaluate((h) => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => h });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (h ? 'hidden' : 'visible') });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

/**
 * `loadtest run flash-sale --concert <id>`: `fans` fans through the gateway's line buy the
 * concert's remaining seats, then the tool audits the sale. It reaches this platform's
 * databases and Redis through the environment the e2e harness gives the browser tests.
 */
async function sellTheRest(show: OnSale, fans: number): Promise<void> {
  const bin = process.env.LOADTEST_BIN ?? '../target/debug/loadtest';
  const args = ['run', 'flash-sale', '--gateway', BASE, '--concert', String(show.concertId)];
  args.push('--users', String(fans), '--concurrency', String(fans), '--max-duration', '90');
  const { status, output } = await new Promise<{ status: number | null; output: string }>((resolve) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('error', (e) => resolve({ status: null, output: `${output}${e}` }));
    child.on('close', (code) => resolve({ status: code, output }));
  });
  expect(status, `${bin} ${args.join(' ')}\n${output}`).toBe(0);
  expect(output).toMatch(/fans admitted after the last seat sold: 0/);
}

/** A fan buys `seats` of the show: the whole path through the line, as the app would. */
async function buy(fan: Account, show: OnSale, seats: number[], price: number): Promise<void> {
  const join = await call('POST', '/api/queue/tokens', { token: fan.token, body: { concert_id: show.concertId } });
  expect([200, 201], JSON.stringify(join.body)).toContain(join.status);
  const queueToken: string = join.body.token;
  await expect
    .poll(
      async () =>
        (await call('GET', `/api/queue/tokens/${encodeURIComponent(queueToken)}`, { token: fan.token })).body.status,
      { timeout: 60_000, intervals: [250, 500] },
    )
    .toBe('ACTIVE');
  const pass = { 'x-queue-token': queueToken };
  const hold = await call('POST', '/api/reservations', {
    token: fan.token,
    headers: { ...pass, 'idempotency-key': randomUUID() },
    body: { schedule_id: show.scheduleId, seat_nos: seats },
  });
  expect(hold.status, JSON.stringify(hold.body)).toBe(201);
  await topUp(fan, seats.length * price);
  const pay = await call('POST', '/api/payments', {
    token: fan.token,
    headers: { ...pass, 'idempotency-key': randomUUID() },
    body: { reservation_id: hold.body.id },
  });
  expect(pay.status, JSON.stringify(pay.body)).toBe(201);
  await expect
    .poll(async () => (await call('GET', `/api/reservations/${hold.body.id}`, { token: fan.token })).body.status, {
      timeout: 60_000,
    })
    .toBe('CONFIRMED');
}

test('the organiser creates a concert and its date, sets its limit, pauses and resumes its line and sets its capacity', async ({
  page,
}) => {
  const admin = await adminAccount();
  await logInPage(page, admin);
  await page.goto('/admin');
  await expect(page.getByRole('heading', { level: 1, name: 'Organiser' })).toBeVisible();
  await expect(page.getByRole('heading', { level: 2, name: 'Concerts' })).toBeVisible();
  await expectAccessible(page, 'the concert list');

  // A new concert: a missing field is said next to it, then the concert is made.
  const title = `Console show ${randomBytes(3).toString('hex')}`;
  await page.getByLabel('Performer').fill('The Organisers');
  await page.getByLabel('Most tickets per buyer').fill('2');
  await page.getByRole('button', { name: 'Create the concert' }).click();
  await expect(page.getByRole('alert')).toHaveText('Enter the concert’s title.');
  await expect(page.getByLabel('Title', { exact: true })).toBeFocused();
  await page.getByLabel('Title', { exact: true }).fill(title);
  await page.getByRole('button', { name: 'Create the concert' }).click();

  const heading = page.getByRole('heading', { level: 1, name: title });
  await expect(heading).toBeFocused();
  const concertId = Number(/\/admin\/concerts\/(\d+)$/.exec(page.url())?.[1]);
  expect(concertId).toBeGreaterThan(0);
  await expect(page.getByText('No date yet')).toBeVisible();
  await expect(figure(page, 'State')).toHaveText('Open');
  await expectAccessible(page, 'a new concert');

  // A date, typed in Seoul time: a booking opening after the start is refused by the API, next
  // to that field; then the date is added and sent in UTC.
  const year = new Date().getUTCFullYear() + 1;
  const dates = page.getByRole('group', { name: 'New date' });
  await dates.getByLabel('Starts at').fill(`${year}-03-05T19:30`);
  await dates.getByLabel('Booking opens at').fill(`${year}-03-06T10:00`);
  await dates.getByLabel('Number of seats').fill('12');
  await dates.getByLabel('Price per seat (KRW)').fill('30000');
  await page.getByRole('button', { name: 'Add the date' }).click();
  await expect(dates.getByRole('alert')).toHaveText('Must not be after starts_at');
  await expect(dates.getByLabel('Booking opens at')).toBeFocused();
  await expect(dates.getByLabel('Booking opens at')).toHaveAttribute('aria-invalid', 'true');

  await dates.getByLabel('Booking opens at').fill(`${year}-01-10T12:00`);
  await page.getByRole('button', { name: 'Add the date' }).click();
  const added = page.getByRole('status').filter({ hasText: 'Date added' });
  await expect(added).toBeFocused();
  await expect(added).toContainText('12 seats at ₩30,000');
  const schedules = await call('GET', `/api/concerts/${concertId}/schedules`);
  expect(schedules.body.items).toHaveLength(1);
  expect(utc(schedules.body.items[0].starts_at)).toBe(`${year}-03-05T10:30:00.000Z`);
  expect(utc(schedules.body.items[0].booking_opens_at)).toBe(`${year}-01-10T03:00:00.000Z`);
  await expect(page.getByRole('table', { name: 'The concert’s dates' }).getByRole('row')).toHaveCount(2);
  // The live view picks the new seats up.
  await expect(figure(page, 'Seats')).toHaveText('12');
  await expect(figure(page, 'Available')).toHaveText('12');

  // The per-buyer limit.
  const limit = page.getByRole('group', { name: 'Per buyer' });
  await expect(limit.getByLabel('Most tickets per buyer')).toHaveValue('2');
  await limit.getByLabel('Most tickets per buyer').fill('3');
  await page.getByRole('button', { name: 'Save the limit' }).click();
  await expect(page.getByRole('status').filter({ hasText: 'Limit saved' })).toBeFocused();
  expect((await call('GET', `/api/concerts/${concertId}`)).body.max_tickets_per_user).toBe(3);

  // Pause and resume: the button says what it will do, the live region says what happened.
  await page.getByRole('button', { name: 'Pause the line' }).click();
  await expect(page.getByRole('button', { name: 'Resume the line' })).toBeFocused();
  await expect(page.getByRole('status').filter({ hasText: 'The line is paused' })).toBeVisible();
  await expect(figure(page, 'State')).toHaveText('Paused');
  const room = () => call('GET', `/api/admin/queue/concerts/${concertId}`, { token: admin.token });
  expect((await room()).body.state).toBe('PAUSED');
  await page.getByRole('button', { name: 'Resume the line' }).click();
  await expect(page.getByRole('button', { name: 'Pause the line' })).toBeFocused();
  await expect(page.getByRole('status').filter({ hasText: 'The line is open' })).toBeVisible();
  await expect(figure(page, 'State')).toHaveText('Open');
  expect((await room()).body.state).toBe('OPEN');

  // Capacity: an out-of-range number is refused by the API next to its field, then saved.
  const capacity = page.getByRole('group', { name: 'Capacity' });
  await capacity.getByLabel('Most fans admitted at once').fill('0');
  await page.getByRole('button', { name: 'Save the capacity' }).click();
  await expect(capacity.getByRole('alert')).toContainText('1 to 100000');
  await expect(capacity.getByLabel('Most fans admitted at once')).toBeFocused();
  await capacity.getByLabel('Most fans admitted at once').fill('50');
  await capacity.getByLabel('Most fans admitted per second').fill('5');
  await page.getByRole('button', { name: 'Save the capacity' }).click();
  await expect(page.getByRole('status').filter({ hasText: 'Capacity saved' })).toHaveText(
    'Capacity saved: at most 50 fans admitted at once, 5 a second.',
  );
  const after = (await room()).body;
  expect([after.max_active, after.admit_per_tick]).toEqual([50, 5]);

  // The sale's opening: the lottery's commitment is published at once.
  const opening = page.getByRole('group', { name: 'Sale opening and lottery' });
  await opening.getByLabel('Sale opens at').fill(`${year}-01-15T10:00`);
  await page.getByRole('button', { name: 'Set the opening' }).click();
  await expect(page.getByRole('status').filter({ hasText: 'Opening set' })).toBeFocused();
  await expect(figure(page, 'Commitment (SHA-256 of the secret seed)')).toHaveText(/^[0-9a-f]{64}$/);
  expect(utc((await room()).body.sale_opens_at)).toBe(`${year}-01-15T01:00:00.000Z`);

  await expectAccessible(page, 'the concert after its changes');
  await screenshot(page, 'admin-concert-levers');
});

test('the organiser watches the sale view count the seats fans buy', async ({ page }) => {
  const price = 40_000;
  const show = await concertOnSale({ seats: 10, price, maxTicketsPerUser: 4 });
  await logInPage(page, await adminAccount());
  await page.goto(`/admin/concerts/${show.concertId}`);
  await expect(page.getByRole('heading', { level: 1, name: show.title })).toBeVisible();
  await expect(figure(page, 'Seats')).toHaveText('10');
  await expect(figure(page, 'Sold')).toHaveText('0');
  await expect(figure(page, 'Revenue')).toHaveText('₩0');
  await expectAccessible(page, 'the sale view before the sale');

  // One fan, then two at once: the page follows each step without a reload.
  const [first, second, third] = await Promise.all([newFan('buyer'), newFan('buyer'), newFan('buyer')]);
  await buy(first!, show, [1, 2], price);
  await expect(figure(page, 'Sold')).toHaveText('2');
  await expect(figure(page, 'Revenue')).toHaveText('₩80,000');

  await Promise.all([buy(second!, show, [3, 4, 5], price), buy(third!, show, [6], price)]);
  await expect(figure(page, 'Sold')).toHaveText('6');
  await expect(figure(page, 'Revenue')).toHaveText('₩240,000');
  await expect(figure(page, 'Available')).toHaveText('4');
  await expect(figure(page, 'Held')).toHaveText('0');
  await expect(figure(page, 'Confirmed')).toHaveText('3');
  await expect(figure(page, 'Admitted in all')).toHaveText('3');
  const total = page.getByRole('table', { name: 'Seats by date' }).getByRole('row', { name: /^All dates/ });
  await expect(total.getByRole('cell')).toHaveText(['10', '4', '0', '6']);
  // The chart's text alternative ends at the count the figures show.
  await expect(page.locator('figcaption')).toContainText(/6 at \d\d:\d\d:\d\d, of 10 seats\./);
  await expectAccessible(page, 'the sale view after the sale');
  await screenshot(page, 'admin-sale-view');
  await page.getByRole('heading', { name: 'Live sale' }).scrollIntoViewIfNeeded();
  await screenshot(page, 'admin-sale-view-window', { fullPage: false });

  // A hidden page stops asking; shown again, it asks at once.
  let asked = 0;
  page.on('request', (r) => {
    if (r.url().endsWith(`/api/admin/concerts/${show.concertId}/sale`)) asked += 1;
  });
  await setHidden(page, true);
  await page.waitForTimeout(500); // a request already under way may still be answered
  const whileHidden = asked;
  await page.waitForTimeout(4_000);
  expect(asked, 'requests while hidden').toBe(whileHidden);
  await setHidden(page, false);
  await expect.poll(() => asked, { timeout: 3_000 }).toBeGreaterThan(whileHidden);

  // The last seats go to a crowd: the load tool sells what is left of this concert to a dozen
  // fans at once (and audits the sale: no seat twice, money conserved). Once a tick sees
  // nothing left, the line is sold out, and that — unlike the figures — is announced.
  await sellTheRest(show, 12);
  await expect(figure(page, 'Sold')).toHaveText('10');
  await expect(figure(page, 'Revenue')).toHaveText('₩400,000');
  await expect(page.getByRole('status').filter({ hasText: 'Sold out' })).toBeVisible({ timeout: 30_000 });
  await expect(figure(page, 'State')).toHaveText('Sold out');
  await expect(page.getByRole('button', { name: 'Reopen the line' })).toBeVisible();

  // A phone's width: everything still fits.
  await page.setViewportSize({ width: 390, height: 844 });
  await expect(figure(page, 'Sold')).toHaveText('10');
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
  await expectAccessible(page, 'the sale view on a phone');
  await screenshot(page, 'admin-sale-view-phone');
});

test('a fan sees that the console is for organisers only', async ({ page }) => {
  await logInPage(page, await newFan('notadmin'));
  for (const path of ['/admin', '/admin/concerts/1']) {
    await page.goto(path);
    await expect(page.getByRole('heading', { level: 1, name: 'Organisers only' })).toBeVisible();
    await expect(page.getByText('a fan account')).toBeVisible();
    await expect(page.getByRole('link', { name: 'Log in as an organiser' })).toHaveAttribute(
      'href',
      `/login?next=${encodeURIComponent(path)}`,
    );
    await expectAccessible(page, `${path} as a fan`);
  }
  await screenshot(page, 'admin-organisers-only');
});

test('a visitor who is not logged in is asked to log in as an organiser', async ({ page }) => {
  await page.goto('/admin');
  await expect(page.getByRole('heading', { level: 1, name: 'Organisers only' })).toBeVisible();
  await expect(page.getByText('you are not logged in')).toBeVisible();
  await expect(page.getByRole('link', { name: 'Log in as an organiser' })).toHaveAttribute('href', '/login?next=%2Fadmin');
  await expectAccessible(page, '/admin logged out');
});
