//! concert-api integration tests: one binary, real PostgreSQL, Redis and broker.

mod catalogue;
mod direct_settlement;
mod helpers;
mod holds;
mod internal;
mod invariants;
mod on_sale;
mod platform;
mod settlement;
