//! batch: queue admission, hold expiry sweeps, reconciliation, local backups, archival of
//! finished shows — scheduled, single-leader.

pub mod archive;
pub mod backup;
pub mod config;
pub mod jobs;
pub mod leader;
pub mod startup;

pub use config::Config;
pub use startup::Application;
