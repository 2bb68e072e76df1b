// Every failed call as a problem+json body (API.md "Errors"), including the ones that never
// reached a service: no answer at all, or a body that is not problem+json (a proxy's page).
import type { Problem } from '../api/client';

/** What an openapi-fetch call resolves to, whatever the operation. */
interface ApiResult<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

export type Outcome<T> = { ok: true; data: T } | { ok: false; problem: Problem };

/** Runs one API call and says either what it answered or why it failed. */
export async function attempt<T>(request: Promise<ApiResult<T>>): Promise<Outcome<T>> {
  let result: ApiResult<T>;
  try {
    result = await request;
  } catch (e) {
    return { ok: false, problem: unreachable(e) };
  }
  if (result.response.ok && result.data !== undefined) return { ok: true, data: result.data };
  return { ok: false, problem: asProblem(result.error, result.response) };
}

function isProblem(body: unknown): body is Problem {
  return (
    typeof body === 'object' &&
    body !== null &&
    typeof (body as Problem).code === 'string' &&
    typeof (body as Problem).status === 'number'
  );
}

function asProblem(body: unknown, response: Response): Problem {
  if (isProblem(body)) return body;
  return {
    type: 'about:blank',
    title: response.statusText || 'Error',
    status: response.status,
    code: `HTTP_${response.status}`,
    detail: `The server answered ${[response.status, response.statusText].filter(Boolean).join(' ')}.`,
  };
}

function unreachable(e: unknown): Problem {
  const aborted = e instanceof DOMException && e.name === 'AbortError';
  return {
    type: 'about:blank',
    title: aborted ? 'Aborted' : 'No answer',
    status: 0,
    code: aborted ? 'ABORTED' : 'NETWORK',
    detail: aborted ? 'The request was cancelled.' : 'The server could not be reached. Check the connection and try again.',
  };
}

/** The top-level request field a 400 names (`field \`price\`: …`), if any. */
export function problemField(p: Problem): string | null {
  if (p.status !== 400) return null;
  return /^field `([A-Za-z_]+)/.exec(p.detail)?.[1] ?? null;
}

/** The reason of a 400 without the `field \`x\`: ` prefix, for showing next to that field. */
export function fieldReason(p: Problem): string {
  const reason = p.detail.replace(/^field `[^`]*`: /, '');
  return reason.charAt(0).toUpperCase() + reason.slice(1);
}

/** What a problem means to an organiser: plain words for the codes they can meet. */
export function describeProblem(p: Problem): string {
  switch (p.code) {
    case 'UNAUTHENTICATED':
      return 'Your session has ended: log in again.';
    case 'FORBIDDEN':
      return 'Only organisers may do this, and this account is not an organiser’s.';
    case 'CONCERT_NOT_FOUND':
      return 'This concert does not exist (any more).';
    case 'LOTTERY_DRAWN':
      return 'The lottery has already been drawn, so the sale’s opening can no longer change: the order of the pre-queue is final and published.';
    case 'DEPENDENCY_UNAVAILABLE':
    case 'UPSTREAM_UNAVAILABLE':
    case 'UPSTREAM_TIMEOUT':
      return `The platform cannot answer right now; nothing was changed. Try again in a moment. (${p.detail})`;
    case 'RATE_LIMITED':
      return 'Too many requests at once: wait a second and try again.';
    default:
      return p.detail || p.title;
  }
}
