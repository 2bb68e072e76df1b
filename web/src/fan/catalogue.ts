// Concerts and their dates, read from the public catalogue. A concert rarely changes, so each is
// asked for once per page load; dates carry live seat counts and are always asked afresh.
import { api, type Concert, type Schedule } from '../api/client';
import { must } from '../api/problems';

const concerts = new Map<number, Promise<Concert>>();

export function getConcert(id: number): Promise<Concert> {
  let known = concerts.get(id);
  if (!known) {
    known = must(api.GET('/api/concerts/{id}', { params: { path: { id } } }));
    // A failure is not remembered: the next page asks again.
    known.catch(() => concerts.delete(id));
    concerts.set(id, known);
  }
  return known;
}

/** Every date of a concert (`available`: only those a fan can book now), following the pages. */
export async function getSchedules(concertId: number, available: boolean, signal?: AbortSignal): Promise<Schedule[]> {
  const all: Schedule[] = [];
  let cursor: string | undefined;
  do {
    const page = await must(
      api.GET('/api/concerts/{id}/schedules', {
        params: { path: { id: concertId }, query: { available, limit: 100, cursor } },
        signal,
      }),
    );
    all.push(...page.items);
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  return all;
}

export async function getSchedule(concertId: number, scheduleId: number, signal?: AbortSignal): Promise<Schedule | null> {
  const all = await getSchedules(concertId, false, signal);
  return all.find((s) => s.id === scheduleId) ?? null;
}
