//! concert DB (and the catalogue cache in Redis): schema, queries, the statements that
//! decide who gets a seat, and the short-lived memories in front of them.

pub mod archive;
pub mod audit;
pub mod cache;
pub mod cancel;
pub mod catalogue;
pub mod confirmed;
pub mod holds;
pub mod idempotency;
pub mod invariants;
pub mod inventory;
pub mod known_schedules;
pub mod migration;
pub mod reservations;
pub mod sale;
pub mod seat_maps;
pub mod settlement;
pub mod sweep;
pub mod taken_seats;

use sea_orm::{ConnectionTrait, Statement, Value};

/// A statement for `db`'s backend with positional values.
fn stmt<C: ConnectionTrait>(db: &C, sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(db.get_database_backend(), sql, values)
}
