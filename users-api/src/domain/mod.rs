//! The rules of users-api, free of HTTP: accounts and sessions, and the waiting room.

pub mod account;
pub mod queue;
pub mod throttle;
