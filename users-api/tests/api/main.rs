//! users-api integration tests: one binary, real PostgreSQL, Redis and broker.

mod accounts;
mod helpers;
mod platform;
mod queue;
mod rooms;
mod sessions;
mod stream_port;
mod throttle;
