// `/queue/:concertId`: the waiting page. Joins the line (or picks up the tab's token), follows
// the token live, and shows what the fan needs at each stage: the pre-sale countdown and the
// draw's commitment, the position and wait, the draw's result, the sold-out notice, and once
// let in, the pass's time left and the way to the seat map.
import { useEffect, useRef, useState } from 'preact/hooks';
import { useRoute } from 'preact-iso';
import { api, type Schemas } from '../api/client';
import { type ApiProblem, asProblem, must } from '../api/problems';
import { ProblemAlert } from '../ui/alert';
import { Countdown } from '../ui/countdown';
import { clockTime, duration, when } from '../ui/format';
import { PageHeading } from '../ui/heading';
import { SessionRequired } from '../ui/session-required';
import { secondsUntil, useNow } from '../ui/time';
import { useLoad } from '../ui/use-load';
import { getConcert, getSchedules } from './catalogue';
import { followQueue, type QueueStatus } from './queue-watch';
import { drawPlace, forgetPass, savedPass, saveDrawPlace, savePass } from './storage';

type Room = Schemas['WaitingRoomPublic'];

export function QueuePage() {
  return (
    <SessionRequired title="Waiting line">
      <Queue concertId={Number(useRoute().params.concertId)} />
    </SessionRequired>
  );
}

function Queue({ concertId }: { concertId: number }) {
  const concert = useLoad(() => getConcert(concertId), [concertId]);
  const [token, setToken] = useState(() => savedPass(concertId)?.token ?? null);
  const [status, setStatus] = useState<QueueStatus | null>(null);
  const [trouble, setTrouble] = useState<ApiProblem | null>(null);
  const [problem, setProblem] = useState<ApiProblem | null>(null);
  const [joining, setJoining] = useState(false);
  // Bumped by each join, so following starts again even if the join handed back the same token.
  const [joins, setJoins] = useState(0);
  // Whether this tab saw the token pre-queued, so the first position after it is the draw's.
  const preQueued = useRef(false);
  const [drawn, setDrawn] = useState(() => drawPlace(concertId));
  // Drawn and let in by the same tick, so no position was ever shown.
  const [inAtDraw, setInAtDraw] = useState(false);

  useEffect(() => {
    if (!token) return;
    const abort = new AbortController();
    followQueue(
      token,
      {
        onStatus: (s) => {
          setStatus(s);
          if (s.pre_queue) preQueued.current = true;
          else if (preQueued.current && s.status === 'WAITING' && s.position) {
            preQueued.current = false;
            saveDrawPlace(concertId, s.position);
            setDrawn(s.position);
          } else if (preQueued.current && s.status === 'ACTIVE') {
            preQueued.current = false;
            setInAtDraw(true);
          }
          if (s.status === 'ACTIVE') savePass(concertId, { token: s.token, activeUntil: s.active_until ?? null });
        },
        onTrouble: setTrouble,
        onLost: (p) => {
          forgetPass(concertId);
          setToken(null);
          setStatus(null);
          setProblem(p);
        },
      },
      abort.signal,
    );
    return () => abort.abort();
  }, [token, concertId, joins]);

  const join = async () => {
    setJoining(true);
    setProblem(null);
    try {
      const s = await must(api.POST('/api/queue/tokens', { body: { concert_id: concertId } }));
      savePass(concertId, { token: s.token, activeUntil: s.active_until ?? null });
      setStatus(s);
      setToken(s.token);
      setJoins((n) => n + 1);
    } catch (e) {
      setProblem(asProblem(e));
    } finally {
      setJoining(false);
    }
  };

  const title = concert.data ? `Waiting line: ${concert.data.title}` : 'Waiting line';
  const preQueue = status?.status === 'WAITING' && status.pre_queue;
  return (
    <section>
      <PageHeading title={title} />
      <p aria-live="polite" aria-atomic="true" class="lead">
        {status && headline(status)}
      </p>
      {trouble && <ProblemAlert problem={trouble} />}
      {/* No concert in the context: the way back into the line is the button on this page. */}
      {problem && <ProblemAlert problem={problem} />}
      {!token && !status && (
        <>
          <p>You are not in the line for this concert yet. Join it, and when it is your turn you can pick seats.</p>
          <JoinButton onJoin={join} joining={joining} />
        </>
      )}
      {token && !status && !problem && <p role="status">Finding your place in the line…</p>}
      {status?.status === 'WAITING' && (preQueue ? <PreQueue status={status} /> : <Waiting status={status} />)}
      {status?.status === 'ACTIVE' && <Admitted concertId={concertId} status={status} onRejoin={join} joining={joining} />}
      {status?.status === 'EXPIRED' && (
        <>
          <p>
            Your place is gone: the page was closed for too long, your pass ran out, or you already bought tickets with
            it. Joining again puts you at the back of the line.
          </p>
          <JoinButton onJoin={join} joining={joining} again />
        </>
      )}
      {status?.status === 'SOLD_OUT' && (
        <div role="alert" class="notice notice-error">
          <p>Sold out: every seat of this concert has been sold, so the line is closed.</p>
          <p class="actions">
            <a href="/">See other concerts</a>
          </p>
        </div>
      )}
      {status && <Draw concertId={concertId} preQueue={!!preQueue} place={drawn} inAtDraw={inAtDraw} />}
    </section>
  );
}

/** The sentence the live region announces when the fan's stage or place changes. */
function headline(s: QueueStatus): string {
  switch (s.status) {
    case 'WAITING':
      if (s.pre_queue) return 'You are in the pre-sale line. Your place is drawn when the sale opens.';
      return s.position ? `You are number ${s.position} in line.` : 'You are in line.';
    case 'ACTIVE':
      return 'It is your turn: you can pick seats now.';
    case 'EXPIRED':
      return 'You lost your place in the line.';
    case 'SOLD_OUT':
      return '';
  }
}

function JoinButton({ onJoin, joining, again }: { onJoin: () => void; joining: boolean; again?: boolean }) {
  return (
    <button type="button" class="primary" onClick={onJoin} disabled={joining}>
      {joining ? 'Joining the line…' : again ? 'Join the line again' : 'Join the line'}
    </button>
  );
}

function Waiting({ status }: { status: QueueStatus }) {
  return (
    <>
      <p>
        {status.eta_seconds != null
          ? `Estimated wait: ${status.eta_seconds < 60 ? 'less than a minute' : `about ${duration(status.eta_seconds)}`}.`
          : 'Nobody is being let in at this moment (the sale is paused or waiting for seats to come back); your place is kept.'}
      </p>
      <p>Keep this page open: a closed page loses its place after two minutes.</p>
    </>
  );
}

function PreQueue({ status }: { status: QueueStatus }) {
  const now = useNow(1000);
  const opensAt = status.opens_at;
  const opened = !opensAt || secondsUntil(opensAt, now) <= 0;
  return (
    <>
      {opensAt && !opened && (
        <p>
          The sale opens in <Countdown until={opensAt} />, at <time dateTime={opensAt}>{clockTime(opensAt)}</time>.
        </p>
      )}
      {opened && <p>The sale is opening: the draw is under way…</p>}
      <p>
        Keep this page open. When the sale opens, everyone here is put in line in a random order, ahead of anyone who
        comes later.
      </p>
    </>
  );
}

function Admitted(props: { concertId: number; status: QueueStatus; onRejoin: () => void; joining: boolean }) {
  const dates = useLoad((signal) => getSchedules(props.concertId, true, signal), [props.concertId]);
  const now = useNow(1000);
  const until = props.status.active_until;
  if (until && secondsUntil(until, now) <= 0) {
    return (
      <>
        <p>Your pass has run out.</p>
        <JoinButton onJoin={props.onRejoin} joining={props.joining} again />
      </>
    );
  }
  return (
    <>
      {until && (
        <p>
          Your pass lets you pick and pay for seats for <Countdown until={until} /> more.
        </p>
      )}
      {dates.problem && <ProblemAlert problem={dates.problem} onRetry={dates.reload} />}
      {dates.data && dates.data.length === 0 && <p>No date has seats left right now.</p>}
      {dates.data && dates.data.length > 0 && (
        <ul class="choices">
          {dates.data.map((d) => (
            <li key={d.id}>
              <a class="button primary" href={`/seats/${d.id}?concert=${props.concertId}`}>
                Choose seats for {when(d.starts_at)}
              </a>
            </li>
          ))}
        </ul>
      )}
    </>
  );
}

/**
 * The lottery, as anyone may check it: the commitment (SHA-256 of the secret seed) before the
 * draw; the seed and the time after it, with the place this fan got.
 */
function Draw(props: { concertId: number; preQueue: boolean; place: number | null; inAtDraw: boolean }) {
  const { concertId, preQueue } = props;
  // Asked again when the fan leaves the pre-queue: that is when the seed is published.
  const room = useLoad(
    (signal) => must(api.GET('/api/queue/concerts/{id}', { params: { path: { id: concertId } }, signal })),
    [concertId, preQueue],
  );
  const lottery = room.data?.lottery;
  if (!lottery?.commitment) return null;
  return (
    <section aria-labelledby="draw-title" class="draw">
      <h2 id="draw-title">The draw</h2>
      {lottery.drawn_at ? (
        <DrawResult room={room.data as Room} place={props.place} inAtDraw={props.inAtDraw} />
      ) : (
        <p>The order of everyone in the pre-sale line will be drawn with a secret seed. Its fingerprint, published now:</p>
      )}
      <dl>
        <dt>Commitment (SHA-256 of the seed)</dt>
        <dd>
          <code>{lottery.commitment}</code>
        </dd>
        {lottery.seed && (
          <>
            <dt>Seed</dt>
            <dd>
              <code>{lottery.seed}</code>
            </dd>
          </>
        )}
      </dl>
    </section>
  );
}

function DrawResult({ room, place, inAtDraw }: { room: Room; place: number | null; inAtDraw: boolean }) {
  const drawnAt = room.lottery.drawn_at ?? '';
  const yours = place
    ? `You were placed ${place} in the draw. `
    : inAtDraw
      ? 'You were drawn and let in straight away. '
      : '';
  return (
    <p>
      Drawn at <time dateTime={drawnAt}>{clockTime(drawnAt)}</time>. {yours}Anyone can check the draw: the seed below
      hashes to the commitment published before the sale.
    </p>
  );
}
