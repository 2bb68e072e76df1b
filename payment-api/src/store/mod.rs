//! payment DB: schema, wallets and ledger, payments, idempotency keys.

pub mod idempotency;
pub mod migration;
pub mod payments;
pub mod reconciliation;
pub mod retention;
pub mod wallet;
