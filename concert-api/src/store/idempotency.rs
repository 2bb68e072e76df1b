//! Hold idempotency keys, the same table and statements as payment-api's
//! (`payment-api/src/store/idempotency.rs`): the first request with a key does the work and
//! stores its answer in the same transaction; a repeat with the same request gets that
//! answer again, a repeat with another request is refused. Concurrent requests with one key
//! serialize on the key's row: a repeat waits for the first to commit, up to
//! [`IN_FLIGHT_WAIT`].
//!
//! Unlike payment-api, concert-api's pool sets no `lock_timeout` (a hold waits on hot seat
//! rows), so the claim bounds its own wait with `SET LOCAL lock_timeout` and lifts it again
//! before the seats are touched.

use std::ops::Deref;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, RuntimeErr};

use crate::store::stmt;

/// How long a repeat waits for a first request with the same key that is still running.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// First use: do the work, then [`record`] the answer before committing.
    Fresh,
    Replay {
        status: u16,
        body: serde_json::Value,
    },
    /// Same key, different request: 422 `IDEMPOTENCY_KEY_REUSED`.
    Reused,
    /// A request with this key is still running after [`IN_FLIGHT_WAIT`]: 409, retry later.
    InUse,
}

#[derive(FromQueryResult)]
struct Stored {
    request_hash: String,
    status_code: Option<i32>,
    response_body: Option<serde_json::Value>,
}

fn judge(stored: Stored, request_hash: &str) -> Claim {
    if stored.request_hash != request_hash {
        return Claim::Reused;
    }
    match (stored.status_code, stored.response_body) {
        (Some(status), Some(body)) => Claim::Replay {
            status: status as u16,
            body,
        },
        // Never committed without an answer; treat a stray one as a conflicting reuse.
        _ => Claim::Reused,
    }
}

/// What is stored for a key, without claiming it (a cheap early replay).
pub async fn lookup<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    key: &str,
    request_hash: &str,
) -> Result<Option<Claim>, DbErr> {
    Ok(Stored::find_by_statement(stmt(
        db,
        "SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        vec![user_id.into(), key.into()],
    ))
    .one(db)
    .await?
    .map(|s| judge(s, request_hash)))
}

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
    let inserted = match txn
        .execute_raw(stmt(
            txn,
            "INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            vec![user_id.into(), key.into(), request_hash.into()],
        ))
        .await
    {
        Ok(done) => done.rows_affected(),
        // The transaction is aborted now; the caller answers 409 and drops it.
        Err(err) if is_lock_timeout(&err) => return Ok(Claim::InUse),
        Err(err) => return Err(err),
    };
    txn.execute_raw(stmt(txn, "SET LOCAL lock_timeout = 0", vec![]))
        .await?;
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    Ok(lookup(txn, user_id, key, request_hash)
        .await?
        .unwrap_or(Claim::Reused))
}

/// Stores the answer of a claimed key (same transaction as the work).
pub async fn record<C: ConnectionTrait>(
    txn: &C,
    user_id: i64,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), DbErr> {
    txn.execute_raw(stmt(
        txn,
        "UPDATE idempotency_keys SET status_code = $3, response_body = $4 WHERE user_id = $1 AND key = $2",
        vec![
            user_id.into(),
            key.into(),
            i32::from(status).into(),
            body.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Forgets keys stored before `before` (they are kept 24 hours); answers how many.
pub async fn delete_before<C: ConnectionTrait>(
    db: &C,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    Ok(db
        .execute_raw(stmt(
            db,
            "DELETE FROM idempotency_keys WHERE created_at < $1",
            vec![before.into()],
        ))
        .await?
        .rows_affected())
}

/// PostgreSQL's `lock_not_available` (SQLSTATE 55P03): `lock_timeout` passed.
fn is_lock_timeout(err: &DbErr) -> bool {
    matches!(
        err,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))
            if matches!(e.deref(), sea_orm::sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
    )
}
