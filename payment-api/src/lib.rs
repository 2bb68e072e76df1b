//! payment-api: wallets, payments and refunds.

pub mod config;
pub mod startup;
pub mod store;

pub use config::Config;
pub use startup::Application;
