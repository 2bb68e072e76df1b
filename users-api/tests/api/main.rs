//! users-api integration tests: one binary, real PostgreSQL, Redis and broker.

mod helpers;
mod platform;
