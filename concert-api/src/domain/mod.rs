//! The rules of concert-api, free of HTTP and storage.

pub mod catalogue;
pub mod reservation;
pub mod settlement;
