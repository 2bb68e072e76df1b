// The live sale: `GET /api/admin/concerts/{id}/sale` and `GET /api/admin/queue/concerts/{id}`
// polled together every POLL_MS while the page is visible — stopped when the tab is hidden or
// the page left, resumed (at once) when it is shown again. Each answer adds a sample of the
// seats sold, for the chart.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, type Problem, type Schemas } from '../api/client';
import { attempt } from './problem';

export type SaleStats = Schemas['SaleStats'];
export type WaitingRoom = Schemas['WaitingRoom'];

/** Seats sold at one moment, as seen by this page. */
export interface Sample {
  at: number;
  sold: number;
}

export interface LiveSale {
  sale: SaleStats | null;
  room: WaitingRoom | null;
  samples: Sample[];
  updatedAt: Date | null;
  /** Why the last refresh failed; null once one succeeds again. */
  problem: Problem | null;
}

const POLL_MS = 1500;
/** An hour at POLL_MS: the chart keeps the most recent ones. */
const MAX_SAMPLES = 2400;
/** Answers after which polling again cannot help: the session or the concert is gone. */
const FINAL_STATUSES = [401, 403, 404];

export function useLiveSale(concertId: number) {
  const [live, setLive] = useState<LiveSale>({ sale: null, room: null, samples: [], updatedAt: null, problem: null });
  // Counts the organiser's changes: a room read before the latest change is older than the
  // one that change answered, and must not undo it on screen (nor be announced as a change).
  const changes = useRef(0);

  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let inFlight: AbortController | null = null;
    let finished = false;

    async function refresh() {
      timer = undefined;
      const controller = new AbortController();
      inFlight = controller;
      const changesBefore = changes.current;
      const path = { params: { path: { id: concertId } }, signal: controller.signal };
      const [sale, room] = await Promise.all([
        attempt(api.GET('/api/admin/concerts/{id}/sale', path)),
        attempt(api.GET('/api/admin/queue/concerts/{id}', path)),
      ]);
      if (controller.signal.aborted) return; // hidden or left meanwhile
      inFlight = null;
      const failure = !sale.ok ? sale.problem : !room.ok ? room.problem : null;
      setLive((prev) => ({
        sale: sale.ok ? sale.data : prev.sale,
        room: room.ok && changes.current === changesBefore ? room.data : prev.room,
        samples: sale.ok ? [...prev.samples, { at: Date.now(), sold: sale.data.sold }].slice(-MAX_SAMPLES) : prev.samples,
        updatedAt: sale.ok && room.ok ? new Date() : prev.updatedAt,
        problem: failure,
      }));
      finished = failure !== null && FINAL_STATUSES.includes(failure.status);
      if (finished) return;
      if (!document.hidden) timer = setTimeout(refresh, POLL_MS);
    }

    function stop() {
      clearTimeout(timer);
      timer = undefined;
      inFlight?.abort();
      inFlight = null;
    }

    function onVisibilityChange() {
      if (document.hidden) stop();
      else if (!timer && !inFlight && !finished) void refresh();
    }

    void refresh();
    document.addEventListener('visibilitychange', onVisibilityChange);
    return () => {
      document.removeEventListener('visibilitychange', onVisibilityChange);
      stop();
    };
  }, [concertId]);

  /** Shows a room the organiser just changed without waiting for the next refresh. */
  const showRoom = (room: WaitingRoom) => {
    changes.current += 1;
    setLive((prev) => ({ ...prev, room }));
  };
  return { live, showRoom };
}
