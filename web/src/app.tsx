// The app's shell: the header with the navigation and the session, and the routes. Fan pages
// live in `src/fan/`, the organiser's console in `src/admin/`, shared pieces in `src/ui/`.
import { LocationProvider, Router, Route, lazy, ErrorBoundary } from 'preact-iso';
import { Header } from './ui/header';
import { NotFound } from './ui/not-found';

const Concerts = lazy(() => import('./fan/concerts').then((m) => m.Concerts));
const ConcertPage = lazy(() => import('./fan/concert').then((m) => m.ConcertPage));
const QueuePage = lazy(() => import('./fan/queue').then((m) => m.QueuePage));
const SeatsPage = lazy(() => import('./fan/seats').then((m) => m.SeatsPage));
const ReservationPage = lazy(() => import('./fan/reservation').then((m) => m.ReservationPage));
const TicketsPage = lazy(() => import('./fan/tickets').then((m) => m.TicketsPage));
const WalletPage = lazy(() => import('./fan/wallet').then((m) => m.WalletPage));
const LoginPage = lazy(() => import('./fan/auth').then((m) => m.LoginPage));
const SignupPage = lazy(() => import('./fan/auth').then((m) => m.SignupPage));
const AccountPage = lazy(() => import('./fan/account').then((m) => m.AccountPage));
const Admin = lazy(() => import('./admin/console').then((m) => m.Console));

export function App() {
  return (
    <LocationProvider>
      <Header />
      <main id="main" tabIndex={-1}>
        <ErrorBoundary>
          <Router>
            <Route path="/" component={Concerts} />
            <Route path="/concerts/:id" component={ConcertPage} />
            <Route path="/queue/:concertId" component={QueuePage} />
            <Route path="/seats/:scheduleId" component={SeatsPage} />
            <Route path="/reservations/:id" component={ReservationPage} />
            <Route path="/tickets" component={TicketsPage} />
            <Route path="/wallet" component={WalletPage} />
            <Route path="/login" component={LoginPage} />
            <Route path="/signup" component={SignupPage} />
            <Route path="/account" component={AccountPage} />
            <Route path="/admin" component={Admin} />
            <Route path="/admin/*" component={Admin} />
            <Route default component={NotFound} />
          </Router>
        </ErrorBoundary>
      </main>
    </LocationProvider>
  );
}
