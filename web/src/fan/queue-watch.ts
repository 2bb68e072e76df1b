// Follows a waiting-line token until it is let in, lost or sold out: over the status stream
// (`…/events`, read with fetch because it needs the Authorization header), or — when a stream
// cannot be had (429 TOO_MANY_STREAMS: the fan has the line open in other tabs; a proxy that
// breaks streaming; a network hiccup) — by polling the status every 2 s. Either one is the
// token's heartbeat, which keeps its place.
import { api, type Schemas } from '../api/client';
import { ApiProblem, isAbort, must } from '../api/problems';
import { readEventStream } from '../api/sse';

export type QueueStatus = Schemas['QueueStatus'];

const POLL_MS = 2000;
/** A stream that closes before a final status (a restart, the gateway's one-hour cap) reopens after this. */
const REOPEN_MS = 1000;

export function isFinal(s: QueueStatus): boolean {
  return s.status !== 'WAITING';
}

/** A token that cannot be followed at all: unknown (another account's, forgotten), or no session. */
function isFatal(e: unknown): boolean {
  return e instanceof ApiProblem && (e.status === 401 || e.code === 'QUEUE_TOKEN_NOT_FOUND');
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const id = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(id);
      resolve();
    });
  });
}

async function streamOnce(token: string, onStatus: (s: QueueStatus) => void, signal: AbortSignal) {
  const body = await must(
    api.GET('/api/queue/tokens/{token}/events', { params: { path: { token } }, parseAs: 'stream', signal }),
  );
  if (!body) throw new ApiProblem(0, 'NETWORK', 'the status stream has no body');
  let last: QueueStatus | null = null;
  await readEventStream(body, (data) => {
    last = JSON.parse(data) as QueueStatus;
    onStatus(last);
  });
  return last as QueueStatus | null;
}

export interface QueueWatch {
  onStatus: (s: QueueStatus) => void;
  /** A passing problem while polling (shown; polling goes on), or null once it answers again. */
  onTrouble: (p: ApiProblem | null) => void;
  /** The token cannot be followed: the page must offer to join again. */
  onLost: (p: ApiProblem) => void;
}

/** Runs until the token's status is final (ACTIVE, EXPIRED, SOLD_OUT), it is lost, or `signal` aborts. */
export async function followQueue(token: string, watch: QueueWatch, signal: AbortSignal): Promise<void> {
  let streaming = true;
  while (!signal.aborted) {
    if (streaming) {
      try {
        const last = await streamOnce(token, watch.onStatus, signal);
        watch.onTrouble(null);
        if (last && isFinal(last)) return;
        await sleep(REOPEN_MS, signal);
      } catch (e) {
        if (isAbort(e) || signal.aborted) return;
        if (isFatal(e)) return watch.onLost(e as ApiProblem);
        streaming = false;
      }
      continue;
    }
    try {
      const status = await must(api.GET('/api/queue/tokens/{token}', { params: { path: { token } }, signal }));
      watch.onTrouble(null);
      watch.onStatus(status);
      if (isFinal(status)) return;
    } catch (e) {
      if (isAbort(e) || signal.aborted) return;
      if (isFatal(e)) return watch.onLost(e as ApiProblem);
      if (e instanceof ApiProblem) watch.onTrouble(e);
    }
    await sleep(POLL_MS, signal);
  }
}
