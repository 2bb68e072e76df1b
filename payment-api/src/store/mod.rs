//! payment DB: schema, wallets and ledger (and its monthly partitions), payments (and their
//! archive), idempotency keys, the money invariants.

pub mod archive;
pub mod idempotency;
pub mod invariants;
pub mod ledger;
pub mod migration;
pub mod payments;
pub mod reconciliation;
pub mod retention;
pub mod wallet;

use sea_orm::{ConnectionTrait, Statement, Value};

/// A statement for `db`'s backend with positional values.
fn stmt<C: ConnectionTrait>(db: &C, sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(db.get_database_backend(), sql, values)
}
