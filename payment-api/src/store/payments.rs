//! Payments: one per reservation (a unique index), refunded at most once; the reads also
//! answer from `archive.payments` (the payments of archived shows).

use crate::events;
use crate::store::stmt;
use chrono::{DateTime, Utc};
use common::{inbox, outbox};
use sea_orm::prelude::Uuid;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbErr, DeriveActiveEnum, EnumIter, FromQueryResult,
};
use serde::Serialize;
use utoipa::ToSchema;

/// A payment's status, mapped to the `status` column here once. (Statements still write
/// `'COMPLETED'` into their text rather than bind it: a prepared statement's generic plan can
/// use the partial index `payments_unsettled` only when its predicate is spelled out.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize, ToSchema)]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Paid; stands until refunded.
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    /// concert-api rejected it and the money is back in the wallet.
    #[sea_orm(string_value = "REFUNDED")]
    Refunded,
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct PaymentRow {
    pub id: i64,
    pub user_id: i64,
    pub reservation_id: i64,
    pub amount: i64,
    pub status: PaymentStatus,
    /// When it was paid (`paid_at` in events).
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, user_id, reservation_id, amount, status, created_at";

/// Inserts the payment for a reservation and, in the same statement, takes its amount from
/// the payer's wallet with the PAYMENT ledger row that says so (`ref` `payment:<id>`, as
/// [`crate::store::wallet::debit`] writes it): the debit is tried only once the payment row
/// is in. `None` if the reservation already has a payment (nothing is debited); `debited`
/// false if the wallet holds less than the amount, when the caller must take the payment row
/// out again ([`delete`]). A concurrent insert for the same reservation waits on the unique
/// index until the first commits (then this returns `None`) or rolls back (then this one
/// proceeds); concurrent debits of one wallet wait on its row, and each re-checks the balance.
pub async fn insert_paid<C: ConnectionTrait>(
    txn: &C,
    user_id: i64,
    reservation_id: i64,
    amount: i64,
    paid_at: DateTime<Utc>,
) -> Result<Option<(PaymentRow, bool)>, DbErr> {
    let Some(row) = txn
        .query_one_raw(stmt(
            txn,
            &format!(
                "WITH p AS ( \
                    INSERT INTO payments (user_id, reservation_id, amount, status, created_at) \
                    VALUES ($1, $2, $3, 'COMPLETED', $4) \
                    ON CONFLICT (reservation_id) DO NOTHING RETURNING {COLUMNS}), \
                 w AS ( \
                    UPDATE wallets SET balance = balance - $3, updated_at = $4 \
                    WHERE user_id = $1 AND balance >= $3 AND EXISTS (SELECT FROM p) RETURNING balance), \
                 l AS ( \
                    INSERT INTO ledger (user_id, kind, amount, balance_after, ref, created_at) \
                    SELECT $1, 'PAYMENT', $3, w.balance, 'payment:' || p.id, $4 FROM w, p) \
                 SELECT {COLUMNS}, EXISTS (SELECT FROM w) AS debited FROM p"
            ),
            vec![
                user_id.into(),
                reservation_id.into(),
                amount.into(),
                paid_at.into(),
            ],
        ))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some((
        PaymentRow::from_query_result(&row, "")?,
        row.try_get("", "debited")?,
    )))
}

/// SQLSTATE of `pay_at_once` declining: it changed nothing.
const PAY_AT_ONCE_DECLINED: &str = "TKP01";

/// A payment that goes through, in one round trip (the function `pay_at_once`, migration
/// `PAY_AT_ONCE`): `key`'s claim (key and request), the payment row, the debit and its ledger
/// row, `payment.completed` in the outbox, and `answer` kept as the key's 201 — its `id`, like
/// the payment's and the event's, filled in by the database. `draft` is the payment as it
/// will be, its `id` 0. Answers the new payment's id, or `None` if the function declined: the
/// key was there already, the reservation paid, or the wallet short — then nothing happened,
/// and the caller takes the general path, which answers each of those.
///
/// Why this is as safe under concurrency as that path: it is the same statements in the same
/// order in one transaction. A second request with the key waits on the key's row (up to the
/// connection's `lock_timeout`, then its error), a concurrent payer of the reservation on the
/// payments' unique index, concurrent debits of one wallet on its row, each re-checking the
/// balance; a decline raises, so its transaction rolls back whole, as does a wait past
/// `lock_timeout`.
pub async fn pay_at_once(
    db: &DatabaseConnection,
    draft: &PaymentRow,
    key: Option<(&str, &str)>,
    answer: &serde_json::Value,
) -> Result<Option<i64>, DbErr> {
    let event = events::completed_event(draft);
    let [_, topic, _, payload, traceparent] = outbox::row(
        common::events::PAYMENT_COMPLETED,
        &draft.reservation_id.to_string(),
        &event,
    )?;
    let (event_high, event_low) = events::completed_event_id_parts();
    let paid = db
        .query_one_raw(stmt(
            db,
            "SELECT pay_at_once($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) AS id",
            vec![
                draft.user_id.into(),
                key.map(|(k, _)| k.to_owned()).into(),
                key.map(|(_, request)| request.to_owned()).into(),
                draft.reservation_id.into(),
                draft.amount.into(),
                draft.created_at.into(),
                topic,
                payload,
                event_high.into(),
                event_low.into(),
                traceparent,
                answer.clone().into(),
            ],
        ))
        .await;
    match paid {
        Ok(Some(row)) => {
            outbox::written();
            Ok(Some(row.try_get("", "id")?))
        }
        Ok(None) => Err(DbErr::RecordNotFound("pay_at_once answered no row".into())),
        Err(e) if common::db::has_sqlstate(&e, PAY_AT_ONCE_DECLINED) => Ok(None),
        // A wait past `lock_timeout` (most likely on a key still in flight) rolled it back
        // too: the general path waits its own turn and answers IDEMPOTENCY_KEY_IN_USE.
        Err(e) if common::db::is_lock_timeout(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Payment `id`, from the hot table or the archive (`archive.payments`: a payment of an
/// archived show, unchanged). One statement, so one snapshot: it is found in exactly one.
pub async fn find<C: ConnectionTrait>(db: &C, id: i64) -> Result<Option<PaymentRow>, DbErr> {
    PaymentRow::find_by_statement(stmt(
        db,
        &format!(
            "SELECT {COLUMNS} FROM payments WHERE id = $1 \
             UNION ALL SELECT {COLUMNS} FROM archive.payments WHERE id = $1"
        ),
        vec![id.into()],
    ))
    .one(db)
    .await
}

/// The user's standing (COMPLETED, not refunded) payment of a reservation, if any — archived
/// or not: "already paid" stays true after the show is archived.
pub async fn find_completed<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    reservation_id: i64,
) -> Result<Option<PaymentRow>, DbErr> {
    PaymentRow::find_by_statement(stmt(
        db,
        &format!(
            "SELECT {COLUMNS} FROM payments \
             WHERE reservation_id = $1 AND user_id = $2 AND status = 'COMPLETED' \
             UNION ALL SELECT {COLUMNS} FROM archive.payments \
             WHERE reservation_id = $1 AND user_id = $2 AND status = 'COMPLETED'"
        ),
        vec![reservation_id.into(), user_id.into()],
    ))
    .one(db)
    .await
}

/// Undoes a payment inserted in this same transaction (the debit that should follow failed).
pub async fn delete<C: ConnectionTrait>(txn: &C, payment_id: i64) -> Result<(), DbErr> {
    txn.execute_raw(stmt(
        txn,
        "DELETE FROM payments WHERE id = $1",
        vec![payment_id.into()],
    ))
    .await?;
    Ok(())
}

/// A user's payments, newest first, hot and archived: the newest `limit` of each (both
/// through their `(user_id, id DESC)` index), merged.
pub async fn list_for_user<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    limit: u64,
) -> Result<Vec<PaymentRow>, DbErr> {
    PaymentRow::find_by_statement(stmt(
        db,
        &format!(
            "(SELECT {COLUMNS} FROM payments WHERE user_id = $1 ORDER BY id DESC LIMIT $2) \
             UNION ALL \
             (SELECT {COLUMNS} FROM archive.payments WHERE user_id = $1 ORDER BY id DESC LIMIT $2) \
             ORDER BY id DESC LIMIT $2"
        ),
        vec![user_id.into(), (limit as i64).into()],
    ))
    .all(db)
    .await
}

/// Marks a COMPLETED payment REFUNDED at `now` and returns it; `None` if it is unknown or was
/// already refunded — so a refund happens once however many times it is asked for.
pub async fn mark_refunded<C: ConnectionTrait>(
    txn: &C,
    payment_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<PaymentRow>, DbErr> {
    PaymentRow::find_by_statement(stmt(
        txn,
        &format!(
            "UPDATE payments SET status = 'REFUNDED', refunded_at = $2 \
             WHERE id = $1 AND status = 'COMPLETED' RETURNING {COLUMNS}"
        ),
        vec![payment_id.into(), now.into()],
    ))
    .one(txn)
    .await
}

/// Records that concert-api's confirmation of the reservation this payment bought was seen
/// at `now` (the first time only).
pub async fn mark_confirmed<C: ConnectionTrait>(
    txn: &C,
    payment_id: i64,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    txn.execute_raw(stmt(
        txn,
        "UPDATE payments SET confirmed_at = $2 WHERE id = $1 AND confirmed_at IS NULL",
        vec![payment_id.into(), now.into()],
    ))
    .await?;
    Ok(())
}

/// Records, once per event `event_id` for `consumer` (the inbox), that concert-api's
/// confirmation of the reservation this payment bought was seen at `now` (the first time
/// only): one statement, no transaction. Returns whether this delivery was the first.
pub async fn mark_confirmed_once<C: ConnectionTrait>(
    db: &C,
    event_id: Uuid,
    consumer: &str,
    payment_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    inbox::once_in_statement(
        db,
        event_id,
        consumer,
        "confirmed AS (UPDATE payments SET confirmed_at = $4 \
            WHERE id = $3 AND confirmed_at IS NULL AND EXISTS (SELECT FROM first))",
        vec![payment_id.into(), now.into()],
    )
    .await
}

/// [`mark_confirmed_once`] for many confirmations in one statement: each `(event id,
/// payment id)` once per event for `consumer`. Returns how many events were first.
pub async fn mark_each_confirmed_once<C: ConnectionTrait>(
    db: &C,
    consumer: &str,
    confirmations: &[(Uuid, i64)],
    now: DateTime<Utc>,
) -> Result<i64, DbErr> {
    let (events, payments): (Vec<Uuid>, Vec<i64>) = confirmations.iter().copied().unzip();
    inbox::each_once_in_statement(
        db,
        events,
        consumer,
        "confirmed AS (UPDATE payments SET confirmed_at = $4 \
            FROM unnest($1::uuid[], $3::bigint[]) AS e (event_id, payment_id) \
            WHERE payments.id = e.payment_id AND payments.confirmed_at IS NULL \
              AND e.event_id IN (SELECT event_id FROM first))",
        vec![payments.into(), now.into()],
    )
    .await
}

/// Records that `payment.completed` was published again at `now` (reconciliation's window).
pub async fn mark_republished<C: ConnectionTrait>(
    txn: &C,
    payment_id: i64,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    txn.execute_raw(stmt(
        txn,
        "UPDATE payments SET republished_at = $2 WHERE id = $1",
        vec![payment_id.into(), now.into()],
    ))
    .await?;
    Ok(())
}
