//! The rules of payment-api: charging, paying, refunding, reconciling, archiving.
//!
//! Money is `i64` whole KRW. Every balance change is a conditional UPDATE and a ledger row
//! in one transaction; an event that must follow a change is an outbox row in that same
//! transaction. Answers to requests with an `Idempotency-Key` are kept in the same
//! transaction too, so a replay gets exactly what the first request got. Time is the
//! caller's `now`, from the service's clock. The domain answers in typed outcomes and
//! refusals; the routes turn them into HTTP.

pub mod archive;
pub mod idempotency;
pub mod payment;
pub mod reconciliation;
pub mod settle;
pub mod wallet;

pub use archive::{
    LedgerMonths, PaymentArchival, archive_payments, keep_ledger_months, vacuum_after_archival,
};
pub use reconciliation::{Reconciliation, reconcile, reopen_settlement};
pub use wallet::MAX_CHARGE;
