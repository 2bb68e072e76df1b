// The organiser's console under `/admin`: only an ADMIN session gets past the door. Pages:
// `/admin` (concerts, new concert) and `/admin/concerts/:id` (one concert's sale). Each page's
// h1 is the app's `PageHeading`, which takes focus when the page is navigated to.
import { Route, Router } from 'preact-iso';
import { session } from '../session';
import { NotFound } from '../ui/not-found';
import { AccessDenied } from './access';
import { ConcertList } from './concert-list';
import { ConcertPage } from './concert-page';
import './admin.css';

export function Console() {
  const current = session.value;
  if (!current) return <AccessDenied reason="logged-out" />;
  if (current.user.role !== 'ADMIN') return <AccessDenied reason="not-organiser" />;
  return (
    <div class="admin">
      <Router>
        <Route path="/" component={ConcertList} />
        <Route path="/concerts/:id" component={ConcertPage} />
        <Route default component={NotFound} />
      </Router>
    </div>
  );
}
