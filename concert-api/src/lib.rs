//! concert-api: concerts, schedules, seats and holds, and confirmation of paid holds.

pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod routes;
pub mod startup;
pub mod store;

pub use config::Config;
pub use domain::reservation::expire_holds;
pub use startup::{Application, openapi};
