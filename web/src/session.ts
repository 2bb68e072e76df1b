// The fan's or organiser's session: the bearer token from `POST /api/sessions`, kept in
// localStorage under `ticketing.session` so a reload or a second tab stays logged in. The
// browser tests log in through the page, or seed this key with `page.addInitScript`.
import { signal } from '@preact/signals';
import type { User } from './api/client';

export const SESSION_KEY = 'ticketing.session';

export interface Session {
  token: string;
  expires_at: string;
  absolute_expires_at: string;
  user: User;
}

function load(): Session | null {
  try {
    const raw = localStorage.getItem(SESSION_KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

/** The session, reactive: components re-render when it changes. */
export const session = signal<Session | null>(load());

export function currentSession(): Session | null {
  return session.value;
}

export function startSession(s: Session): void {
  localStorage.setItem(SESSION_KEY, JSON.stringify(s));
  session.value = s;
}

export function endSession(): void {
  localStorage.removeItem(SESSION_KEY);
  session.value = null;
}

addEventListener('storage', (e) => {
  if (e.key === SESSION_KEY) session.value = load();
});
