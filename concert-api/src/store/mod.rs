//! concert DB (and the catalogue cache in Redis): schema, queries, the statements that
//! decide who gets a seat.

pub mod cache;
pub mod catalogue;
pub mod migration;
pub mod reservations;
pub mod settlements;
