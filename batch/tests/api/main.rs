//! batch integration tests: one binary, real PostgreSQL, Redis and broker.

mod archive;
mod backup;
mod helpers;
mod invariants;
mod jobs;
mod leadership;
mod platform;
mod unsettled;
