// What the fan's tab remembers across reloads (sessionStorage: per tab, gone with it): the
// waiting-line pass per concert, the draw placement, and the Idempotency-Key of each payment,
// so a retry or a reload of the same payment can never charge twice.

const PASS = 'ticketing.queue.';
const DRAW = 'ticketing.draw.';
const PAY_KEY = 'ticketing.pay.';

function read(key: string): string | null {
  try {
    return sessionStorage.getItem(key);
  } catch {
    return null;
  }
}

function write(key: string, value: string | null): void {
  try {
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, value);
  } catch {
    // Storage refused (private mode, quota): the page still works, a reload forgets.
  }
}

export interface SavedPass {
  token: string;
  /** Set once the pass is ACTIVE: when it runs out. */
  activeUntil: string | null;
}

export function savedPass(concertId: number): SavedPass | null {
  const raw = read(PASS + concertId);
  if (!raw) return null;
  try {
    const pass = JSON.parse(raw) as SavedPass;
    return typeof pass.token === 'string' ? pass : null;
  } catch {
    return null;
  }
}

export function savePass(concertId: number, pass: SavedPass): void {
  write(PASS + concertId, JSON.stringify(pass));
}

export function forgetPass(concertId: number): void {
  write(PASS + concertId, null);
}

/** An ACTIVE pass for the concert that has not run out yet, if the tab has one. */
export function livePass(concertId: number, now = Date.now()): SavedPass | null {
  const pass = savedPass(concertId);
  return pass?.activeUntil && new Date(pass.activeUntil).getTime() > now ? pass : null;
}

/** The place the fan got in the concert's lottery (the first position after the draw). */
export function drawPlace(concertId: number): number | null {
  const n = Number(read(DRAW + concertId));
  return n > 0 ? n : null;
}

export function saveDrawPlace(concertId: number, place: number): void {
  write(DRAW + concertId, String(place));
}

/** The payment's Idempotency-Key: made once per reservation, reused by every retry. */
export function paymentKey(reservationId: number): string {
  const existing = read(PAY_KEY + reservationId);
  if (existing) return existing;
  const key = crypto.randomUUID();
  write(PAY_KEY + reservationId, key);
  return key;
}

/**
 * Forgets the payment's key after a refusal the server stores against it (402, an expired hold):
 * a retry with the same key would only replay that refusal, even after a top-up.
 */
export function forgetPaymentKey(reservationId: number): void {
  write(PAY_KEY + reservationId, null);
}
