//! payment-api integration tests: one binary, real PostgreSQL, Redis, broker and concert-api.

mod backstop;
mod gateway;
mod helpers;
mod journey;
mod loadtest;
mod payments;
mod platform;
mod processes;
mod retries;
mod saga;
mod wallet;
