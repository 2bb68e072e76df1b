//! concert-api: concerts, schedules, seats and holds.

pub mod config;
pub mod startup;
pub mod store;

pub use config::Config;
pub use startup::Application;
