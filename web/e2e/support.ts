// What the browser tests set up through the API (never through the page): fans with money,
// concerts on sale, the admin's session. Every name is unique per run, so tests run in
// parallel against one platform.
import { type Page, expect } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

export const BASE = process.env.WEB_BASE_URL ?? 'http://127.0.0.1:8080';
export const ADMIN = {
  username: process.env.WEB_ADMIN_USERNAME ?? 'admin',
  password: process.env.WEB_ADMIN_PASSWORD ?? 'admin-pass-local',
};
/** A password every account of the tests shares: long and not a common one. */
export const PASSWORD = 'violet-harbour-71-lantern';

export interface Answer<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

/** One request to the gateway; the body is parsed as JSON when there is one. */
export async function call<T = any>(
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<Answer<T>> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(BASE + path, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`.slice(0, 32);
}

export interface Account {
  id: number;
  username: string;
  password: string;
  token: string;
  /** The `POST /api/sessions` answer, as the app stores it (`ticketing.session`). */
  session: unknown;
}

export async function logIn(username: string, password: string): Promise<Account> {
  const s = await call('POST', '/api/sessions', { body: { username, password } });
  expect(s.status, JSON.stringify(s.body)).toBe(201);
  return { id: s.body.user.id, username, password, token: s.body.token, session: s.body };
}

/** A new fan, signed up and logged in; `balance` KRW put in the wallet if given. */
export async function newFan(prefix = 'fan', balance = 0): Promise<Account> {
  const username = uniqueName(prefix);
  const u = await call('POST', '/api/users', { body: { username, password: PASSWORD } });
  expect(u.status, JSON.stringify(u.body)).toBe(201);
  const fan = await logIn(username, PASSWORD);
  if (balance > 0) await topUp(fan, balance);
  return fan;
}

export async function topUp(fan: Account, amount: number): Promise<void> {
  const r = await call('POST', '/api/wallet/charges', { token: fan.token, body: { amount } });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
}

let admin: Promise<Account> | null = null;
export function adminAccount(): Promise<Account> {
  admin ??= logIn(ADMIN.username, ADMIN.password);
  return admin;
}

export interface OnSale {
  concertId: number;
  scheduleId: number;
  title: string;
}

/** A concert with one date a week away whose booking is open, `seats` seats at `price`. */
export async function concertOnSale(
  opts: { seats?: number; price?: number; maxTicketsPerUser?: number; title?: string } = {},
): Promise<OnSale> {
  const { token } = await adminAccount();
  const title = opts.title ?? `Test show ${randomBytes(3).toString('hex')}`;
  const c = await call('POST', '/api/admin/concerts', {
    token,
    body: { title, performer: 'The Testers', max_tickets_per_user: opts.maxTicketsPerUser ?? 4 },
  });
  expect(c.status, JSON.stringify(c.body)).toBe(201);
  const now = Date.now();
  const s = await call('POST', `/api/admin/concerts/${c.body.id}/schedules`, {
    token,
    body: {
      starts_at: new Date(now + 7 * 86_400_000).toISOString(),
      booking_opens_at: new Date(now - 60_000).toISOString(),
      seat_count: opts.seats ?? 20,
      price: opts.price ?? 50_000,
    },
  });
  expect(s.status, JSON.stringify(s.body)).toBe(201);
  return { concertId: c.body.id, scheduleId: s.body.id, title };
}

/** Opens the app already logged in as `account` (the session seeded before any script runs). */
export async function logInPage(page: Page, account: Account): Promise<void> {
  await page.addInitScript(
    ([key, value]) => localStorage.setItem(key, value),
    ['ticketing.session', JSON.stringify(account.session)] as const,
  );
}

/**
 * Writes `test-results/screenshots/<name>.png` (test output, not committed): the whole page,
 * or with `fullPage: false` what the window shows.
 */
export async function screenshot(page: Page, name: string, { fullPage = true } = {}): Promise<void> {
  mkdirSync('test-results/screenshots', { recursive: true });
  await page.screenshot({ path: `test-results/screenshots/${name}.png`, fullPage });
}
