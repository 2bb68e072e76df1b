//! The rules of users-api, free of HTTP and storage.

pub mod account;
pub mod queue;
