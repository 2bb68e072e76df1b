//! users DB: schema migrations and queries.

pub mod migration;
pub mod users;
