//! The wallet's rules: a charge is 1 to [`MAX_CHARGE`] and never takes a wallet past its cap;
//! the ledger is read newest first, a page at a time.

use chrono::{DateTime, Utc};
use common::{ApiError, ErrorCode};
use sea_orm::{DatabaseConnection, DbErr};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::PaymentConfig;
use crate::domain::idempotency::{self, Idempotent};
use crate::error::PaymentCode;
use crate::store::wallet::{self, LedgerKind, LedgerRow};

/// The most one charge may put in (KRW).
pub const MAX_CHARGE: i64 = 1_000_000;

/// A charge that went in: its ledger row and the balance after it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Charge)]
pub struct ChargeView {
    pub transaction_id: i64,
    pub amount: i64,
    pub balance: i64,
}

/// Why a valid charge was refused (kept for the key's retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeRefusal {
    #[error("a wallet may hold at most {max}")]
    BalanceLimit { max: i64 },
}

impl ErrorCode for ChargeRefusal {
    fn status(&self) -> actix_web::http::StatusCode {
        PaymentCode::BalanceLimit.status()
    }
    fn code(&self) -> &'static str {
        PaymentCode::BalanceLimit.code()
    }
}

/// Charges `amount` into the user's wallet at `now`, up to the balance cap; with a key, at
/// most once (`domain::idempotency`).
pub async fn charge(
    db: &DatabaseConnection,
    cfg: &PaymentConfig,
    user_id: i64,
    amount: i64,
    key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Idempotent<ChargeView, ChargeRefusal>, ApiError> {
    if !(1..=MAX_CHARGE).contains(&amount) {
        return Err(ApiError::invalid_field(
            "amount",
            format!("must be between 1 and {MAX_CHARGE}"),
        ));
    }
    let keyed = key.map(|k| idempotency::charge_request(user_id, k, amount));
    let max = cfg.wallet_max_balance;
    idempotency::run(db, keyed.as_ref(), async |txn| {
        let entry =
            wallet::credit(txn, user_id, amount, max, LedgerKind::Charge, "charge", now).await?;
        Ok(match entry {
            Some(entry) => Ok(ChargeView {
                transaction_id: entry.id,
                amount,
                balance: entry.balance_after,
            }),
            None => Err(ChargeRefusal::BalanceLimit { max }),
        })
    })
    .await
}

/// One page of a user's ledger, newest first.
#[derive(Debug, Clone)]
pub struct LedgerPage {
    pub entries: Vec<LedgerRow>,
    /// The entry id the next page starts before, if there is a next page.
    pub next_before: Option<i64>,
}

/// Up to `limit` ledger entries of the user older than entry `before` (all if `None`).
pub async fn ledger_page(
    db: &DatabaseConnection,
    user_id: i64,
    before: Option<i64>,
    limit: u64,
) -> Result<LedgerPage, DbErr> {
    // One entry more than asked for says whether there is a next page.
    let mut entries = wallet::entries(db, user_id, before.unwrap_or(i64::MAX), limit).await?;
    let more = entries.len() as u64 > limit;
    entries.truncate(limit as usize);
    let next_before = more.then(|| entries.last().map_or(0, |e| e.id));
    Ok(LedgerPage {
        entries,
        next_before,
    })
}
