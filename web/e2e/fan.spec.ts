// The fan's side in a real browser against a live gateway: the whole purchase, the same by
// keyboard alone, the races and endings a fan meets (a seat taken first, a hold that runs out
// or is released elsewhere, a pre-sale draw, a sell-out). Set-up goes through the API
// (support.ts); everything the fan does goes through the page, found by role and accessible
// name as a screen reader would find it.
import { test, expect, type Locator, type Page } from '@playwright/test';
import { expectAccessible } from './a11y';
import {
  type Account,
  type OnSale,
  PASSWORD,
  adminAccount,
  call,
  concertOnSale,
  logInPage,
  newFan,
  screenshot,
  uniqueName,
} from './support';

/** Through the API: joins the concert's line as `fan` and waits until the pass is ACTIVE. */
async function activePass(fan: Account, concertId: number): Promise<string> {
  const join = await call('POST', '/api/queue/tokens', { token: fan.token, body: { concert_id: concertId } });
  expect([200, 201], JSON.stringify(join.body)).toContain(join.status);
  const token: string = join.body.token;
  await expect
    .poll(
      async () => (await call('GET', `/api/queue/tokens/${encodeURIComponent(token)}`, { token: fan.token })).body.status,
      { timeout: 30_000, intervals: [500] },
    )
    .toBe('ACTIVE');
  return token;
}

/** Through the API: `fan` holds `seats` and pays for them, and the purchase is CONFIRMED. */
async function buy(fan: Account, sale: OnSale, seats: number[]): Promise<void> {
  const pass = await activePass(fan, sale.concertId);
  const headers = { 'x-queue-token': pass };
  const hold = await call('POST', '/api/reservations', {
    token: fan.token,
    headers,
    body: { schedule_id: sale.scheduleId, seat_nos: seats },
  });
  expect(hold.status, JSON.stringify(hold.body)).toBe(201);
  const pay = await call('POST', '/api/payments', { token: fan.token, headers, body: { reservation_id: hold.body.id } });
  expect(pay.status, JSON.stringify(pay.body)).toBe(201);
  await expect
    .poll(async () => (await call('GET', `/api/reservations/${hold.body.id}`, { token: fan.token })).body.status, {
      timeout: 30_000,
    })
    .toBe('CONFIRMED');
}

/** From the concert's page: joins the line and waits to be let in; leaves the page on the seat map. */
async function joinAndOpenSeatMap(page: Page, sale: OnSale, shots?: string): Promise<void> {
  await page.goto(`/concerts/${sale.concertId}`);
  await expect(page.getByRole('heading', { level: 1, name: sale.title })).toBeVisible();
  await expectAccessible(page, 'concert');
  await page.getByRole('button', { name: 'Join the line' }).click();
  await expect(page).toHaveURL(new RegExp(`/queue/${sale.concertId}$`));
  await expect(page.getByText('It is your turn: you can pick seats now.')).toBeVisible({ timeout: 30_000 });
  await expect(page.getByRole('timer').first()).toBeVisible();
  await expectAccessible(page, 'waiting page, admitted');
  if (shots) await screenshot(page, `${shots}-waiting`);
  await page.getByRole('link', { name: /^Choose seats for / }).click();
  await expect(page.getByRole('heading', { level: 1, name: `Choose seats: ${sale.title}` })).toBeVisible();
  await expect(seat(page, 1)).toBeVisible();
}

function seat(page: Page, n: number): Locator {
  return page.getByRole('button', { name: new RegExp(`^Seat ${n} `) });
}

/**
 * A new fan (`prefix`, with money) holds seat 4 of a new five-seat concert in the page and is
 * left looking at the hold; returns the fan and the reservation's id.
 */
async function holdSeat4(page: Page, prefix: string): Promise<{ fan: Account; id: string }> {
  const sale = await concertOnSale({ seats: 5 });
  const fan = await newFan(prefix, 100_000);
  await logInPage(page, fan);
  await joinAndOpenSeatMap(page, sale);
  await seat(page, 4).click();
  await page.getByRole('button', { name: 'Hold 1 seat' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Your seats are held' })).toBeVisible();
  return { fan, id: page.url().split('/').pop() ?? 'missing id' };
}

/** Presses Tab until `target` has the focus (at most `max` times): the keyboard's way there. */
async function tabTo(page: Page, target: Locator, max = 80): Promise<void> {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    if (await target.evaluate((el) => el === document.activeElement).catch(() => false)) return;
  }
  throw new Error(`Tab never reached ${target}`);
}

// A hold that really runs out: the e2e harness's platform holds seats for 60 s, not 300 s
// (e2e/tests/api/browser.rs), so this test watches one to its end; against a stack with longer
// holds it waits those out (its timeout grows with the hold). First in this file, so that its
// wait starts early and overlaps the other tests.
test('a hold that runs out before the fan pays says so, and the seat can be picked again', async ({ page }) => {
  const { fan, id } = await holdSeat4(page, 'slow');
  const held = await call('GET', `/api/reservations/${id}`, { token: fan.token });
  expect(held.body.status, JSON.stringify(held.body)).toBe('HELD');
  // The platform's hold length, by the server's clock: every wait for the end allows that much more.
  const holdMs = Date.parse(held.body.held_until) - Date.parse(held.body.created_at);
  test.setTimeout(test.info().timeout + holdMs);
  const untilItEnds = { timeout: holdMs + 30_000 };

  // The fan does not pay: the page's own countdown runs out and the page says so at once (on
  // the server the hold still reads HELD for the grace after its end).
  await expect(page.getByText('Less than a minute left to pay.')).toBeVisible(untilItEnds);
  const ranOut = 'Seat 4: This hold ran out before it was paid, so the seats were released. Nothing was charged.';
  const alert = page.getByRole('alert');
  await expect(alert).toContainText(ranOut, untilItEnds);
  await expect(page.getByRole('heading', { level: 1, name: `Reservation ${id}` })).toBeVisible();
  await expect(page.getByRole('timer')).toHaveCount(0);
  await expect(page.getByRole('button', { name: /^Pay / })).toHaveCount(0);
  await expectAccessible(page, 'reservation, ran out');
  await screenshot(page, 'hold-ran-out');

  // Past the grace the server has it EXPIRED too, and the page, read afresh, says the same.
  await expect
    .poll(async () => (await call('GET', `/api/reservations/${id}`, { token: fan.token })).body.status, {
      timeout: 60_000,
    })
    .toBe('EXPIRED');
  await page.reload();
  await expect(alert).toContainText(ranOut);

  // The seat is back on the map, and the fan can hold it again.
  await alert.getByRole('link', { name: 'Pick seats again' }).click();
  await expect(seat(page, 4)).toHaveAccessibleName('Seat 4 available');
  await seat(page, 4).click();
  await page.getByRole('button', { name: 'Hold 1 seat' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Your seats are held' })).toBeVisible();
});

test('fan journey: sign up, top up, join, pick, hold, pay, ticket @phone', async ({ page }, info) => {
  const sale = await concertOnSale({ seats: 12, price: 40_000 });
  const shots = `journey-${info.project.name}`;

  await page.goto(`/signup?next=${encodeURIComponent('/wallet')}`);
  await expect(page.getByRole('heading', { level: 1, name: 'Create an account' })).toBeVisible();
  await expectAccessible(page, 'sign-up');
  await page.getByLabel('Username').fill(uniqueName('web'));
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();

  await expect(page.getByRole('heading', { level: 1, name: 'Wallet' })).toBeVisible();
  await expect(page.getByText('₩0', { exact: true })).toBeVisible();
  await expectAccessible(page, 'wallet');
  await page.getByLabel('Amount to add (won)').fill('100000');
  await page.getByRole('button', { name: 'Add money' }).click();
  await expect(page.getByRole('status').filter({ hasText: 'Added ₩100,000. Your balance is now ₩100,000.' })).toBeVisible();
  await expect(page.getByRole('listitem').filter({ hasText: 'Top-up' })).toContainText('+₩100,000');

  await joinAndOpenSeatMap(page, sale, shots);
  await expectAccessible(page, 'seat map');
  await seat(page, 2).click();
  await expect(seat(page, 2)).toHaveAttribute('aria-pressed', 'true');
  await expect(page.getByText('Selected: Seat 2, ₩40,000 in total.')).toBeVisible();
  await screenshot(page, `${shots}-seats`);
  await page.getByRole('button', { name: 'Hold 1 seat' }).click();

  await expect(page.getByRole('heading', { level: 1, name: 'Your seats are held' })).toBeVisible();
  // The time left, m:ss (how long a hold lasts is the platform's: 60 s under the e2e harness).
  await expect(page.getByRole('timer')).toHaveText(/^\d+:[0-5]\d$/);
  await expectAccessible(page, 'reservation, held');
  await page.getByRole('button', { name: 'Pay ₩40,000' }).click();

  await expect(page.getByRole('heading', { level: 1, name: 'Your ticket' })).toBeVisible({ timeout: 30_000 });
  const ticket = page.getByRole('article', { name: sale.title });
  await expect(ticket).toContainText('Seat 2');
  await expect(ticket).toContainText('₩40,000');
  await expect(ticket).toContainText('The Testers');
  await expect(ticket).toContainText(page.url().split('/').pop() ?? 'missing id');
  await expectAccessible(page, 'ticket');
  await screenshot(page, `${shots}-ticket`);

  await page.getByRole('link', { name: 'See all my tickets' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'My tickets' })).toBeVisible();
  await expect(page.getByRole('link', { name: sale.title })).toBeVisible();
  await expectAccessible(page, 'my tickets');
  await page.getByRole('link', { name: 'Wallet', exact: true }).click();
  await expect(page.getByText('₩60,000', { exact: true })).toBeVisible();
  await expect(page.getByRole('listitem').filter({ hasText: 'Payment' })).toContainText('−₩40,000');
});

test('keyboard only: join, pick a seat, hold and pay without the mouse', async ({ page }) => {
  const sale = await concertOnSale({ seats: 6, price: 30_000 });
  const fan = await newFan('kbd', 100_000);
  await logInPage(page, fan);

  await page.goto(`/concerts/${sale.concertId}`);
  await expect(page.getByRole('heading', { level: 1, name: sale.title })).toBeVisible();
  const join = page.getByRole('button', { name: 'Join the line' });
  await tabTo(page, join);
  await page.keyboard.press('Enter');

  await expect(page.getByText('It is your turn: you can pick seats now.')).toBeVisible({ timeout: 30_000 });
  // Navigation moved the focus to the new page's heading.
  await expect(page.getByRole('heading', { level: 1 })).toBeFocused();
  await expectAccessible(page, 'waiting page (keyboard)');
  await tabTo(page, page.getByRole('link', { name: /^Choose seats for / }));
  await page.keyboard.press('Enter');

  await expect(seat(page, 3)).toBeVisible();
  await expect(page.getByRole('heading', { level: 1 })).toBeFocused();
  await tabTo(page, seat(page, 3));
  await page.keyboard.press('Space');
  await expect(seat(page, 3)).toHaveAttribute('aria-pressed', 'true');
  await tabTo(page, page.getByRole('button', { name: 'Hold 1 seat' }));
  await page.keyboard.press('Enter');

  await expect(page.getByRole('heading', { level: 1, name: 'Your seats are held' })).toBeFocused();
  await tabTo(page, page.getByRole('button', { name: 'Pay ₩30,000' }));
  await page.keyboard.press('Enter');
  await expect(page.getByRole('heading', { level: 1, name: 'Your ticket' })).toBeVisible({ timeout: 30_000 });
  await expect(page.getByRole('article', { name: sale.title })).toContainText('Seat 3');
  await expectAccessible(page, 'ticket (keyboard)');
});

test('a seat taken by someone else between the map and the hold is named, and leaves the selection', async ({ page }) => {
  const sale = await concertOnSale({ seats: 8 });
  const fan = await newFan('late', 100_000);
  const rival = await newFan('quick', 100_000);
  await logInPage(page, fan);
  await joinAndOpenSeatMap(page, sale);
  await seat(page, 1).click();
  await seat(page, 2).click();
  await expect(page.getByText('Selected: Seats 1 and 2')).toBeVisible();

  // The map stays as the fan saw it (its refreshes are held back) while the rival holds seat 1.
  await page.route('**/api/schedules/*/seats', () => undefined);
  const pass = await activePass(rival, sale.concertId);
  const rivalHold = await call('POST', '/api/reservations', {
    token: rival.token,
    headers: { 'x-queue-token': pass },
    body: { schedule_id: sale.scheduleId, seat_nos: [1] },
  });
  expect(rivalHold.status, JSON.stringify(rivalHold.body)).toBe(201);

  await page.getByRole('button', { name: 'Hold 2 seats' }).click();
  await expect(page.getByRole('alert')).toContainText('Seat 1 was just taken by someone else. Pick other seats.');
  await page.unrouteAll({ behavior: 'ignoreErrors' });
  await expect(seat(page, 1)).toBeDisabled();
  await expect(seat(page, 1)).toHaveAccessibleName('Seat 1 held');
  await expect(seat(page, 2)).toHaveAttribute('aria-pressed', 'true');
  await expect(page.getByText('Selected: Seat 2,')).toBeVisible();
  await expectAccessible(page, 'seat map after a lost seat');
  await page.getByRole('button', { name: 'Hold 1 seat' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Your seats are held' })).toBeVisible();
});

// The other way a hold ends under the fan's eyes: released elsewhere (another tab, another
// device). The page learns it at its next read of the reservation, and the seat is free at once
// (no grace, unlike a hold that ran out).
test('a hold released elsewhere while the fan looks at it says so, and its seat is free at once', async ({ page }) => {
  const { fan, id } = await holdSeat4(page, 'twotabs');

  const cancel = await call('DELETE', `/api/reservations/${id}`, { token: fan.token });
  expect(cancel.status, JSON.stringify(cancel.body)).toBe(200);

  const alert = page.getByRole('alert');
  await expect(alert).toContainText('Seat 4: This hold was cancelled and the seats were released. Nothing was charged.', {
    timeout: 10_000,
  });
  await expect(page.getByRole('button', { name: /^Pay / })).toHaveCount(0);
  await expectAccessible(page, 'reservation, cancelled');
  await alert.getByRole('link', { name: 'Pick seats again' }).click();
  await expect(seat(page, 4)).toHaveAccessibleName('Seat 4 available');
});

test('pre-sale: the countdown and the commitment, then the draw lets the fan in', async ({ page }) => {
  const sale = await concertOnSale({ seats: 10 });
  const fan = await newFan('early', 100_000);
  const admin = await adminAccount();
  const opens = await call('PATCH', `/api/admin/queue/concerts/${sale.concertId}`, {
    token: admin.token,
    body: { sale_opens_at: new Date(Date.now() + 12_000).toISOString() },
  });
  expect(opens.status, JSON.stringify(opens.body)).toBe(200);
  const commitment: string = opens.body.lottery.commitment;

  await logInPage(page, fan);
  await page.goto(`/concerts/${sale.concertId}`);
  await expect(page.getByText(/The sale opens at .* by a fair draw\./)).toBeVisible();
  await page.getByRole('button', { name: 'Join the line' }).click();

  await expect(page.getByText('You are in the pre-sale line.', { exact: false })).toBeVisible();
  await expect(page.getByText('The sale opens in')).toBeVisible();
  await expect(page.getByRole('timer')).toHaveText(/^0:[01]\d$/);
  await expect(page.getByRole('region', { name: 'The draw' })).toContainText(commitment);
  await expectAccessible(page, 'waiting page, pre-sale');
  await screenshot(page, 'pre-sale-waiting');

  await expect(page.getByText('It is your turn: you can pick seats now.')).toBeVisible({ timeout: 30_000 });
  const draw = page.getByRole('region', { name: 'The draw' });
  await expect(draw).toContainText('Drawn at');
  await expect(draw).toContainText(/You were (placed 1 in the draw|drawn and let in straight away)\./);
  await expect(draw.getByText(/^[0-9a-f]{64}$/)).toHaveCount(2);
  await expectAccessible(page, 'waiting page, drawn');
  await screenshot(page, 'pre-sale-drawn');
});

test('a waiting fan is told when the concert sells out', async ({ page }) => {
  const sale = await concertOnSale({ seats: 1 });
  const admin = await adminAccount();
  const room = await call('PATCH', `/api/admin/queue/concerts/${sale.concertId}`, {
    token: admin.token,
    body: { max_active: 1 },
  });
  expect(room.status, JSON.stringify(room.body)).toBe(200);
  const buyer = await newFan('first', 100_000);
  const waiter = await newFan('second', 100_000);
  // The buyer is let in first and takes the one pass the room gives out.
  await activePass(buyer, sale.concertId);

  await logInPage(page, waiter);
  await page.goto(`/concerts/${sale.concertId}`);
  await page.getByRole('button', { name: 'Join the line' }).click();
  await expect(page.getByText('You are number 1 in line.')).toBeVisible({ timeout: 15_000 });
  await expectAccessible(page, 'waiting page, in line');

  await buy(buyer, sale, [1]);
  const soldOut = page.getByRole('alert').filter({ hasText: 'Sold out' });
  await expect(soldOut).toContainText('Sold out: every seat of this concert has been sold, so the line is closed.', {
    timeout: 30_000,
  });
  await expect(soldOut.getByRole('link', { name: 'See other concerts' })).toBeVisible();
  await expectAccessible(page, 'waiting page, sold out');
  await screenshot(page, 'sold-out');

  // Joining again is refused (409 SOLD_OUT), and the concert's page says so instead of offering the line.
  const late = await call('POST', '/api/queue/tokens', { token: waiter.token, body: { concert_id: sale.concertId } });
  expect(late.status, JSON.stringify(late.body)).toBe(409);
  await page.goto(`/concerts/${sale.concertId}`);
  await expect(page.getByText('Sold out: every seat of this concert has been sold.')).toBeVisible();
  await expect(page.getByRole('button', { name: 'Join the line' })).toHaveCount(0);
});

test('a wallet short of the price leads to a top-up of what is missing, and back to pay', async ({ page }) => {
  const sale = await concertOnSale({ seats: 4, price: 30_000 });
  const fan = await newFan('short', 10_000);
  await logInPage(page, fan);
  await joinAndOpenSeatMap(page, sale);
  await seat(page, 1).click();
  await page.getByRole('button', { name: 'Hold 1 seat' }).click();
  await page.getByRole('button', { name: 'Pay ₩30,000' }).click();

  const alert = page.getByRole('alert');
  await expect(alert).toContainText('Your wallet is ₩20,000 short for these seats.');
  await expectAccessible(page, 'reservation, wallet short');
  await alert.getByRole('link', { name: 'Top up ₩20,000' }).click();

  await expect(page.getByRole('heading', { level: 1, name: 'Wallet' })).toBeVisible();
  await expect(page.getByLabel('Amount to add (won)')).toHaveValue('20000');
  await expectAccessible(page, 'wallet, topping up for a hold');
  await page.getByRole('button', { name: 'Add money' }).click();
  await expect(page.getByRole('status').filter({ hasText: 'Your balance is now ₩30,000.' })).toBeVisible();
  await page.getByRole('link', { name: 'Back to your reservation to pay' }).click();

  // The refused payment's key was dropped: paying again is a new attempt, not a replay of the 402.
  await page.getByRole('button', { name: 'Pay ₩30,000' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Your ticket' })).toBeVisible({ timeout: 30_000 });
});

test('sign-up and log-in refusals in plain words; log out everywhere ends every session', async ({ page }) => {
  const existing = await newFan('taken');
  await page.goto('/signup');
  await page.getByLabel('Username').fill(uniqueName('weak'));
  await page.getByLabel('Password').fill('password');
  await page.getByRole('button', { name: 'Create account' }).click();
  await expect(page.getByRole('alert')).toContainText('That password is too easy to guess');

  await page.getByLabel('Username').fill(existing.username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await expect(page.getByRole('alert')).toContainText('That username is taken.');
  await expectAccessible(page, 'sign-up, refused');

  await page.getByRole('alert').getByRole('link', { name: 'Log in' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Log in' })).toBeFocused();
  await page.getByLabel('Username').fill(existing.username);
  await page.getByLabel('Password').fill('not-the-right-password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page.getByRole('alert')).toContainText('The username or the password is wrong.');
  await expectAccessible(page, 'log-in, refused');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();

  await expect(page.getByRole('heading', { level: 1, name: 'Concerts' })).toBeVisible();
  await expect(page.getByRole('main').getByRole('heading', { level: 2 }).first()).toBeVisible();
  await expectAccessible(page, 'concerts');
  await page.getByRole('link', { name: `Account (${existing.username})` }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Your account' })).toBeVisible();
  await expectAccessible(page, 'account');
  await page.getByRole('button', { name: 'Log out everywhere' }).click();
  await expect(page.getByRole('heading', { level: 1, name: 'Concerts' })).toBeVisible();
  await expect(page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Log in' })).toBeVisible();
  // The session the API opened for this fan ended too.
  expect((await call('GET', '/api/users/me', { token: existing.token })).status).toBe(401);
});
