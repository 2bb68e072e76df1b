//! users DB: schema migrations and queries.

pub mod audit;
pub mod migration;
pub mod rooms;
pub mod users;
