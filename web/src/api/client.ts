// The typed API client. `schema.d.ts` is generated from the gateway's merged OpenAPI document
// (`docs/openapi.json`) by `npm run gen:api` before every type check and build, so a contract
// change that the app does not follow fails `npm run typecheck`, not a fan.
import createClient, { type Middleware } from 'openapi-fetch';
import type { components, paths } from './schema';
import { currentSession, endSession } from '../session';

export type Schemas = components['schemas'];
export type User = Schemas['User'];
export type Concert = Schemas['Concert'];
export type Schedule = Schemas['Schedule'];
export type Reservation = Schemas['Reservation'];
export type Problem = Schemas['Problem'];

const auth: Middleware = {
  onRequest({ request }) {
    const session = currentSession();
    if (session && !request.headers.has('authorization')) {
      request.headers.set('authorization', `Bearer ${session.token}`);
    }
    return request;
  },
  async onResponse({ response, request }) {
    // A session that ended elsewhere (log-out everywhere, expiry) ends here too.
    if (response.status === 401 && request.headers.has('authorization')) {
      const problem = (await response.clone().json().catch(() => null)) as Problem | null;
      if (problem?.code === 'UNAUTHENTICATED') endSession();
    }
    return response;
  },
};

/** Same-origin: the gateway serves the app at `/` and the API at `/api`. */
export const api = createClient<paths>({ baseUrl: '' });
api.use(auth);
