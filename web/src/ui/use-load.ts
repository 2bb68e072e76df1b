import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { type ApiProblem, asProblem, isAbort } from '../api/problems';

export interface Loaded<T> {
  /** The last answer; kept while a reload runs, so a refreshing page does not flicker. */
  data: T | undefined;
  problem: ApiProblem | null;
  /** Asks again (a refresh, or "Try again" after a problem). */
  reload: () => void;
  set: (data: T) => void;
}

/**
 * Runs `load` when the page mounts and whenever `deps` change; an answer that comes back after
 * the page moved on is dropped (its request is aborted).
 */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: readonly unknown[]): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [problem, setProblem] = useState<ApiProblem | null>(null);
  const [round, setRound] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    const abort = new AbortController();
    loadRef
      .current(abort.signal)
      .then((d) => {
        if (abort.signal.aborted) return;
        setData(d);
        setProblem(null);
      })
      .catch((e: unknown) => {
        if (!abort.signal.aborted && !isAbort(e)) setProblem(asProblem(e));
      });
    return () => abort.abort();
    // `deps` are the caller's; a new `round` is a reload.
  }, [...deps, round]);
  const reload = useCallback(() => setRound((r) => r + 1), []);
  return { data, problem, reload, set: setData };
}

/** Calls `tick` every `ms` while `active`; for refreshing what the page shows. */
export function useInterval(tick: () => void, ms: number, active = true): void {
  const tickRef = useRef(tick);
  tickRef.current = tick;
  useEffect(() => {
    if (!active) return;
    const id = setInterval(() => tickRef.current(), ms);
    return () => clearInterval(id);
  }, [ms, active]);
}
