//! Integration tests of the shared platform against real PostgreSQL, Redis and Kafka.

mod auth;
mod groups;
mod helpers;
mod http;
mod messaging;
mod migrate;
mod transport;
