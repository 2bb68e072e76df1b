//! Integration tests of the shared platform against real PostgreSQL, Redis and tansu.

mod auth;
mod helpers;
mod http;
mod messaging;
mod migrate;
