// `/admin/concerts/:id`: one concert's sale — the live view, the line's levers, the dates and
// the per-buyer limit.
import { useEffect, useState } from 'preact/hooks';
import { api, type Concert, type Problem } from '../api/client';
import { PageHeading } from '../ui/heading';
import { NotFound } from '../ui/not-found';
import { AccessDenied } from './access';
import { Dates } from './dates';
import { Levers } from './levers';
import { LimitForm } from './limit-form';
import { attempt } from './problem';
import { ProblemNotice } from './problem-notice';
import { SaleView } from './sale-view';
import { useLiveSale } from './use-live-sale';

export function ConcertPage({ id }: { id: string }) {
  const concertId = Number(id);
  if (!Number.isSafeInteger(concertId) || concertId < 1) return <NotFound />;
  // Keyed, so that moving to another concert starts its page afresh (polling, samples, forms).
  return <ConcertSale key={concertId} concertId={concertId} />;
}

function ConcertSale({ concertId }: { concertId: number }) {
  const [concert, setConcert] = useState<Concert | null>(null);
  const [problem, setProblem] = useState<Problem | null>(null);
  const { live, showRoom } = useLiveSale(concertId);

  useEffect(() => {
    void attempt(api.GET('/api/concerts/{id}', { params: { path: { id: concertId } } })).then((r) =>
      r.ok ? setConcert(r.data) : setProblem(r.problem),
    );
  }, [concertId]);

  if (problem?.status === 404 || live.problem?.status === 404) return <NotFound />;
  if (live.problem?.status === 403) return <AccessDenied reason="not-organiser" />;

  return (
    <>
      <p class="admin-breadcrumb">
        <a href="/admin">All concerts</a>
      </p>
      <PageHeading title={concert ? concert.title : `Concert ${concertId}`} />
      {concert && (
        <p class="admin-hint">
          By {concert.performer} · concert {concert.id}
        </p>
      )}
      {problem && <ProblemNotice problem={problem} />}
      <nav aria-label="On this page" class="admin-toc">
        <ul>
          <li>
            <a href="#live">Live sale</a>
          </li>
          <li>
            <a href="#levers">The line’s levers</a>
          </li>
          <li>
            <a href="#dates">Dates</a>
          </li>
          <li>
            <a href="#limit">Ticket limit</a>
          </li>
        </ul>
      </nav>
      <SaleView live={live} />
      {live.room && <Levers concertId={concertId} room={live.room} onRoom={showRoom} />}
      <Dates concertId={concertId} />
      {concert && <LimitForm concert={concert} onConcert={setConcert} />}
    </>
  );
}
