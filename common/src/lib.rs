//! What every service shares: configuration, telemetry, the problem+json error envelope,
//! PostgreSQL and Redis access, Kafka with a transactional outbox and an inbox, idempotency
//! keys, the session and queue-token extractors, the HTTP plumbing, and (feature `testkit`)
//! the test kit.

pub mod alloc;
pub mod auth;
pub mod client;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod held;
pub mod http;
pub mod idempotency;
pub mod inbox;
pub mod kafka;
pub mod lifecycle;
pub mod metrics;
pub mod migration;
pub mod openapi;
pub mod outbox;
pub mod pressure;
pub mod redis;
pub mod startup;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{ApiError, ErrorCode};

/// The allocator of every binary of the workspace (the services, batch, the load tool and the
/// tests), which all link this crate: see [`alloc::Allocator`].
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;
