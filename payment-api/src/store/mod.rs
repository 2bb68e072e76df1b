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
