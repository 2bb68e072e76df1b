//! users-api: accounts, sessions and the waiting room.

pub mod concerts;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod routes;
pub mod startup;
pub mod store;
pub mod stream_port;

pub use config::Config;
pub use startup::{Application, openapi};
