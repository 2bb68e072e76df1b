// Every refusal the API can give a fan (application/problem+json, API.md "Errors"), and a request
// that got no answer at all, turned into plain words and the next step. Pages call `must` around
// an `api` call: it returns the data or throws an `ApiProblem`; `explain` then says what happened
// and where to go, with what the page knows (the concert, the reservation, the money missing).
import { duration, money, plural, seatList } from '../ui/format';

/** Status 0: the request never got an answer (offline, DNS, the gateway down). */
export const NO_ANSWER = 0;

/** An API refusal, or a request that never got an answer (`status` 0, code `NETWORK`). */
export class ApiProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    /** Seconds, from `Retry-After`, when the answer had one. */
    readonly retryAfter: number | null = null,
    /** `SEAT_UNAVAILABLE`: the requested seats that are taken. */
    readonly seatNos: readonly number[] = [],
    /** `PURCHASE_LIMIT`: how many more seats the buyer may hold. */
    readonly remaining: number | null = null,
  ) {
    super(`${status} ${code}: ${detail}`);
    this.name = 'ApiProblem';
  }
}

interface Answer<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The data of a successful answer; otherwise throws an `ApiProblem` (an abort is rethrown as is). */
export async function must<T>(request: Promise<Answer<T>>): Promise<T> {
  let answer: Answer<T>;
  try {
    answer = await request;
  } catch (e) {
    if (isAbort(e)) throw e;
    throw new ApiProblem(NO_ANSWER, 'NETWORK', String(e));
  }
  if (answer.response.ok) return answer.data as T;
  throw problemOf(answer.error, answer.response);
}

/** A fetch the page gave up on (it navigated away): not an error to show. */
export function isAbort(e: unknown): boolean {
  return e instanceof DOMException && e.name === 'AbortError';
}

/** The problem body of a refused answer; a body that is not problem+json still gets a code. */
export function problemOf(body: unknown, response: Response): ApiProblem {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const retry = Number(response.headers.get('retry-after'));
  return new ApiProblem(
    response.status,
    typeof b.code === 'string' ? b.code : `HTTP_${response.status}`,
    typeof b.detail === 'string' ? b.detail : response.statusText,
    Number.isFinite(retry) && retry > 0 ? retry : null,
    Array.isArray(b.seat_nos) ? b.seat_nos.filter((n): n is number => typeof n === 'number') : [],
    typeof b.remaining === 'number' ? b.remaining : null,
  );
}

/** What a page knows that makes the next step a precise link. */
export interface ProblemContext {
  concertId?: number;
  scheduleId?: number;
  reservationId?: number;
  /** KRW the wallet lacks, for `INSUFFICIENT_BALANCE`. */
  missing?: number;
}

export interface NextStep {
  href: string;
  label: string;
}

export interface Explanation {
  message: string;
  next?: NextStep;
  /** Seconds to wait before trying again, when waiting is the next step. */
  retryAfter?: number;
}

/** The page a fan re-picks seats from: the seat map if the date is known, else the concert. */
function pickAgain(ctx: ProblemContext): NextStep | undefined {
  if (ctx.scheduleId && ctx.concertId) {
    return { href: `/seats/${ctx.scheduleId}?concert=${ctx.concertId}`, label: 'Pick seats again' };
  }
  if (ctx.concertId) return { href: `/concerts/${ctx.concertId}`, label: 'Back to the concert' };
  return undefined;
}

function rejoin(ctx: ProblemContext): NextStep {
  return ctx.concertId
    ? { href: `/queue/${ctx.concertId}`, label: 'Join the line again' }
    : { href: '/', label: 'Back to the concerts' };
}

function waitWords(p: ApiProblem, fallback: number): { text: string; seconds: number } {
  const seconds = p.retryAfter ?? fallback;
  return { text: `Wait ${duration(seconds)} and try again.`, seconds };
}

/** What happened, in a fan's words, and what to do next. */
export function explain(p: ApiProblem, ctx: ProblemContext = {}): Explanation {
  switch (p.code) {
    case 'NETWORK':
      return { message: 'We could not reach the ticket service. Check your connection and try again.' };
    case 'SEAT_UNAVAILABLE':
      return {
        message: p.seatNos.length
          ? `${seatList(p.seatNos)} ${p.seatNos.length === 1 ? 'was' : 'were'} just taken by someone else. Pick other seats.`
          : 'Some of those seats were just taken by someone else. Pick other seats.',
      };
    case 'PURCHASE_LIMIT':
      return p.remaining
        ? {
            message: `You may hold only ${plural(p.remaining, 'more seat')} for this concert. Pick fewer seats.`,
          }
        : {
            message: 'You already hold or own as many seats for this concert as one fan may have.',
            next: { href: '/tickets', label: 'See my tickets' },
          };
    case 'INSUFFICIENT_BALANCE': {
      const query = new URLSearchParams();
      if (ctx.missing) query.set('need', String(ctx.missing));
      if (ctx.reservationId) query.set('back', `/reservations/${ctx.reservationId}`);
      const href = `/wallet${query.size ? `?${query}` : ''}`;
      return ctx.missing
        ? {
            message: `Your wallet is ${money(ctx.missing)} short for these seats. Top it up, then pay before the hold runs out.`,
            next: { href, label: `Top up ${money(ctx.missing)}` },
          }
        : {
            message: 'Your wallet does not hold enough for these seats. Top it up, then pay again.',
            next: { href, label: 'Top up your wallet' },
          };
    }
    case 'HOLD_EXPIRED':
      return {
        message: 'Your hold on these seats ran out before the payment, so they were released. Nothing was charged.',
        next: pickAgain(ctx),
      };
    case 'RESERVATION_NOT_PAYABLE':
      return {
        message: 'This reservation can no longer be paid: it was cancelled or refused. Nothing was charged.',
        next: pickAgain(ctx),
      };
    case 'ALREADY_PAID':
      return { message: 'This reservation is already paid.' };
    case 'QUEUE_TOKEN_INVALID':
      return {
        message: 'Your pass from the waiting line is missing or has run out. Join the line again to get a new one.',
        next: rejoin(ctx),
      };
    case 'QUEUE_TOKEN_NOT_FOUND':
      return { message: 'We could not find your place in the line. Join the line again.', next: rejoin(ctx) };
    case 'SOLD_OUT':
      return {
        message: 'Sold out: every seat of this concert has been sold.',
        next: { href: '/', label: 'See other concerts' },
      };
    case 'BOOKING_CLOSED':
      return {
        message: 'Booking for this date is not open right now.',
        next: ctx.concertId ? { href: `/concerts/${ctx.concertId}`, label: 'See the dates' } : undefined,
      };
    case 'HOLD_RATE_LIMITED': {
      const w = waitWords(p, 1);
      return { message: `You are asking for seats too quickly. ${w.text}`, retryAfter: w.seconds };
    }
    case 'RATE_LIMITED': {
      const w = waitWords(p, 1);
      return { message: `Too many requests from your connection. ${w.text}`, retryAfter: w.seconds };
    }
    case 'TOO_MANY_STREAMS':
      return { message: 'This line is open in too many tabs. Close the others; this page keeps checking your place.' };
    case 'IDEMPOTENCY_KEY_IN_USE': {
      const w = waitWords(p, 1);
      return { message: `Your previous attempt is still being processed. ${w.text}`, retryAfter: w.seconds };
    }
    case 'IDEMPOTENCY_KEY_REUSED':
      return { message: 'That attempt clashed with an earlier one. Reload the page and try again.' };
    case 'WEAK_PASSWORD':
      return {
        message:
          'That password is too easy to guess: it is a common password, a keyboard pattern or sequence, or your username. Choose a longer, less predictable one.',
      };
    case 'USERNAME_TAKEN':
      return {
        message: 'That username is taken. Choose another one, or log in if it is yours.',
        next: { href: '/login', label: 'Log in' },
      };
    case 'BAD_CREDENTIALS':
      return { message: 'The username or the password is wrong. Check both and try again.' };
    case 'LOGIN_THROTTLED': {
      const w = waitWords(p, 60);
      return { message: `Too many failed log-ins for this account. ${w.text}`, retryAfter: w.seconds };
    }
    case 'LOGIN_BUSY': {
      const w = waitWords(p, 2);
      return { message: `Many people are logging in right now. ${w.text}`, retryAfter: w.seconds };
    }
    case 'BALANCE_LIMIT':
      return { message: `A wallet holds at most ${money(100_000_000)}. Top up a smaller amount.` };
    case 'UNAUTHENTICATED':
      return {
        message: 'You are not logged in, or your session has ended. Log in to go on.',
        next: { href: `/login?next=${encodeURIComponent(location.pathname + location.search)}`, label: 'Log in' },
      };
    case 'FORBIDDEN':
      return { message: 'This page is for organisers only.', next: { href: '/', label: 'Back to the concerts' } };
    case 'CONCERT_NOT_FOUND':
      return { message: 'There is no such concert.', next: { href: '/', label: 'See the concerts' } };
    case 'SCHEDULE_NOT_FOUND':
      return { message: 'There is no such date for this concert.', next: { href: '/', label: 'See the concerts' } };
    case 'NOT_FOUND':
      return { message: 'We could not find that.', next: { href: '/tickets', label: 'See my tickets' } };
    case 'NOT_CANCELLABLE':
      return { message: 'This reservation is no longer held, so there is nothing to cancel.' };
    case 'INVALID_REQUEST':
      return { message: `Something in the request is not right: ${p.detail}.` };
    default:
      if (p.status >= 500) {
        const w = waitWords(p, 2);
        return {
          message: `The ticket service cannot answer right now. Nothing was charged or changed. ${w.text}`,
          retryAfter: w.seconds,
        };
      }
      if (p.status === 429) {
        const w = waitWords(p, 1);
        return { message: `Too many requests. ${w.text}`, retryAfter: w.seconds };
      }
      return { message: `Something went wrong (${p.status || 'no answer'}). Try again.` };
  }
}

/** Any thrown value as a problem to show; a bug in the page reads as "something went wrong". */
export function asProblem(e: unknown): ApiProblem {
  return e instanceof ApiProblem ? e : new ApiProblem(NO_ANSWER, 'UNEXPECTED', String(e));
}
