//! Wallets and their ledger. Every balance change is one statement that moves the balance
//! conditionally and appends the ledger row, inside the caller's transaction.

use crate::store::stmt;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, DeriveActiveEnum, EnumIter, FromQueryResult};
use serde::Serialize;
use utoipa::ToSchema;

/// What moved a balance: the ledger's `kind`, mapped to the column here once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, ToSchema)]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LedgerKind {
    /// Money put in (ref `charge`).
    #[sea_orm(string_value = "CHARGE")]
    Charge,
    /// Money taken for a payment (ref `payment:<id>`).
    #[sea_orm(string_value = "PAYMENT")]
    Payment,
    /// Money given back for a rejected payment (ref `refund:<id>`).
    #[sea_orm(string_value = "REFUND")]
    Refund,
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct LedgerRow {
    pub id: i64,
    pub kind: LedgerKind,
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: DateTime<Utc>,
}

/// Adds `amount` to the wallet (creating it) at `now` unless that would pass `cap`; `None` if
/// it would. The cap is checked in the same statement that moves the balance, so concurrent
/// charges cannot together pass it.
pub async fn credit<C: ConnectionTrait>(
    txn: &C,
    user_id: i64,
    amount: i64,
    cap: i64,
    kind: LedgerKind,
    reference: &str,
    now: DateTime<Utc>,
) -> Result<Option<LedgerRow>, DbErr> {
    LedgerRow::find_by_statement(stmt(
        txn,
        "WITH w AS ( \
            INSERT INTO wallets (user_id, balance, updated_at) SELECT $1, $2, $6 WHERE $2 <= $3 \
            ON CONFLICT (user_id) DO UPDATE SET balance = wallets.balance + EXCLUDED.balance, updated_at = $6 \
            WHERE wallets.balance + EXCLUDED.balance <= $3 \
            RETURNING balance) \
         INSERT INTO ledger (user_id, kind, amount, balance_after, ref, created_at) SELECT $1, $4, $2, balance, $5, $6 FROM w \
         RETURNING id, kind, amount, balance_after, created_at",
        vec![
            user_id.into(),
            amount.into(),
            cap.into(),
            kind.into(),
            reference.into(),
            now.into(),
        ],
    ))
    .one(txn)
    .await
}

/// Takes `amount` from the wallet at `now` if it holds that much; `None` if it does not.
///
/// Safe under concurrency: the UPDATE locks the wallet row and re-checks `balance >= amount`
/// on the latest version, so concurrent debits serialize and none can overdraw; the
/// `balance >= 0` constraint would refuse it anyway.
pub async fn debit<C: ConnectionTrait>(
    txn: &C,
    user_id: i64,
    amount: i64,
    reference: &str,
    now: DateTime<Utc>,
) -> Result<Option<LedgerRow>, DbErr> {
    LedgerRow::find_by_statement(stmt(
        txn,
        "WITH w AS ( \
            UPDATE wallets SET balance = balance - $2, updated_at = $4 \
            WHERE user_id = $1 AND balance >= $2 RETURNING balance) \
         INSERT INTO ledger (user_id, kind, amount, balance_after, ref, created_at) SELECT $1, 'PAYMENT', $2, balance, $3, $4 FROM w \
         RETURNING id, kind, amount, balance_after, created_at",
        vec![user_id.into(), amount.into(), reference.into(), now.into()],
    ))
    .one(txn)
    .await
}

pub async fn balance<C: ConnectionTrait>(db: &C, user_id: i64) -> Result<i64, DbErr> {
    #[derive(FromQueryResult)]
    struct B {
        balance: i64,
    }
    Ok(B::find_by_statement(stmt(
        db,
        "SELECT balance FROM wallets WHERE user_id = $1",
        vec![user_id.into()],
    ))
    .one(db)
    .await?
    .map_or(0, |b| b.balance))
}

/// A page of the user's ledger, newest first, before `before_id`.
pub async fn entries<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    before_id: i64,
    limit: u64,
) -> Result<Vec<LedgerRow>, DbErr> {
    LedgerRow::find_by_statement(stmt(
        db,
        "SELECT id, kind, amount, balance_after, created_at FROM ledger \
         WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        vec![user_id.into(), before_id.into(), (limit as i64 + 1).into()],
    ))
    .all(db)
    .await
}
