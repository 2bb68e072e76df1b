//! payment-api: wallets, ledger, payments, refunds, and the payment → seat saga.

pub mod concerts;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod store;

pub use config::Config;
pub use domain::{
    LedgerMonths, PaymentArchival, archive_payments, keep_ledger_months, reconcile,
    reopen_settlement, vacuum_after_archival,
};
pub use startup::{Application, openapi};
