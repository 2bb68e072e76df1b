//! Hold idempotency keys: the table, statements and rules of [`common::idempotency`] (shared
//! with payment-api), with the one thing concert-api does its own way — how the claim bounds
//! its wait for a first request with the same key that is still running.
//!
//! payment-api's pool sets `lock_timeout` for every statement, so its claim is
//! [`common::idempotency::claim`] as is. concert-api's pool sets none: a hold waits on hot
//! seat rows, and a pool-wide bound would turn those waits into errors. So [`claim`] sets
//! `SET LOCAL lock_timeout` to [`IN_FLIGHT_WAIT`] for the key's insert only, and lifts it
//! again before the seats are touched.

use common::idempotency::{self, Inserted};
use sea_orm::{ConnectionTrait, DbErr};

use crate::store::stmt;

pub use common::idempotency::{Claim, IN_FLIGHT_WAIT, delete_before, lookup, record};

/// Claims `key` inside the caller's transaction. If another transaction holds the same key
/// uncommitted, the insert waits for it (at most [`IN_FLIGHT_WAIT`], then [`Claim::InUse`]),
/// then sees its stored answer — or, if it rolled back, claims the key itself.
pub async fn claim<C: ConnectionTrait>(
    txn: &C,
    user_id: i64,
    key: &str,
    request_hash: &str,
) -> Result<Claim, DbErr> {
    txn.execute_raw(stmt(
        txn,
        &format!("SET LOCAL lock_timeout = {}", IN_FLIGHT_WAIT.as_millis()),
        vec![],
    ))
    .await?;
    let inserted = idempotency::insert(txn, user_id, key, request_hash).await?;
    // A timed-out insert aborted the transaction: it takes no more statements, and the
    // caller answers 409 and drops it.
    if inserted != Inserted::TimedOut {
        txn.execute_raw(stmt(txn, "SET LOCAL lock_timeout = 0", vec![]))
            .await?;
    }
    idempotency::decide(txn, inserted, user_id, key, request_hash).await
}
