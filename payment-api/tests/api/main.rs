//! payment-api integration tests: one binary, real PostgreSQL, Redis, broker and concert-api.

mod backstop;
mod helpers;
mod payments;
mod platform;
mod retries;
mod saga;
mod wallet;
