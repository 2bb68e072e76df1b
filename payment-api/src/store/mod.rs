//! payment DB: schema, wallets and ledger, payments, idempotency keys, the money invariants.

pub mod idempotency;
pub mod invariants;
pub mod migration;
pub mod payments;
pub mod reconciliation;
pub mod retention;
pub mod wallet;
