//! Inbox dedup: a consumer records each event id in the same transaction as its effect, so
//! a redelivered event (at-least-once delivery) changes nothing the second time.

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, Statement, TransactionTrait,
};
use uuid::Uuid;

/// Records `event_id` for `consumer`. Returns `false` if it was already recorded: the caller
/// must then skip the effect. Call inside the effect's transaction.
pub async fn record<C: ConnectionTrait>(
    txn: &C,
    event_id: Uuid,
    consumer: &str,
) -> Result<bool, DbErr> {
    let res = txn
        .execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "INSERT INTO inbox (event_id, consumer) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [event_id.into(), consumer.into()],
        ))
        .await?;
    Ok(res.rows_affected() == 1)
}

/// Runs `effect`, the data-modifying CTEs of one statement, at most once per `event_id` for
/// `consumer`, in one round trip and no transaction of its own. The statement starts with
/// the inbox row as a CTE named `first` (one row when this delivery is the first, none for a
/// repeat); `effect` must do nothing unless `EXISTS (SELECT FROM first)`. Its parameters are
/// `values`, from `$3` (`$1` and `$2` are the event and the consumer). A concurrent delivery
/// of the same event waits on the inbox row, as in [`once`]. Returns whether this delivery
/// was the first.
pub async fn once_in_statement<C: ConnectionTrait>(
    db: &C,
    event_id: Uuid,
    consumer: &str,
    effect: &str,
    values: Vec<sea_orm::Value>,
) -> Result<bool, DbErr> {
    let mut all: Vec<sea_orm::Value> = vec![event_id.into(), consumer.into()];
    all.extend(values);
    db.query_one_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!(
            "WITH first AS (INSERT INTO inbox (event_id, consumer) VALUES ($1, $2) \
               ON CONFLICT DO NOTHING RETURNING true), \
             {effect} \
             SELECT EXISTS (SELECT FROM first) AS first"
        ),
        all,
    ))
    .await?
    .ok_or_else(|| DbErr::RecordNotFound("inbox verdict".into()))?
    .try_get("", "first")
}

/// [`once_in_statement`] for many events at once: `effect` runs once for the events of
/// `event_ids` seen for the first time by `consumer`. `first` is the CTE of their ids (the
/// column `event_id`; an id repeated in `event_ids` is recorded once), and `$1` is
/// `event_ids` as a `uuid[]`, so that `effect` can line its own arrays up with it
/// (`unnest($1::uuid[], $3::…[])`). The inbox rows go in in id order, so that two such
/// statements over the same events wait for one another instead of deadlocking. Returns how
/// many were first.
pub async fn each_once_in_statement<C: ConnectionTrait>(
    db: &C,
    event_ids: Vec<Uuid>,
    consumer: &str,
    effect: &str,
    values: Vec<sea_orm::Value>,
) -> Result<i64, DbErr> {
    let mut all: Vec<sea_orm::Value> = vec![event_ids.into(), consumer.into()];
    all.extend(values);
    db.query_one_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!(
            "WITH first AS (INSERT INTO inbox (event_id, consumer) \
               SELECT id, $2 FROM unnest($1::uuid[]) AS id GROUP BY id ORDER BY id \
               ON CONFLICT DO NOTHING RETURNING event_id), \
             {effect} \
             SELECT count(*) AS first FROM first"
        ),
        all,
    ))
    .await?
    .ok_or_else(|| DbErr::RecordNotFound("inbox verdict".into()))?
    .try_get("", "first")
}

/// Runs `effect` at most once per `event_id` for `consumer`: in one transaction, the inbox row
/// first, then the effect, then the commit. `Ok(None)`: the event was handled before and
/// nothing ran. A concurrent delivery of the same event waits on the inbox row until the
/// first commits (then skips) or rolls back (then runs). An effect that fails rolls back its
/// inbox row too, so a retry runs it again.
pub async fn once<T, E>(
    db: &DatabaseConnection,
    event_id: Uuid,
    consumer: &str,
    effect: impl AsyncFnOnce(&DatabaseTransaction) -> Result<T, E>,
) -> Result<Option<T>, E>
where
    E: From<DbErr>,
{
    let txn = db.begin().await?;
    if !record(&txn, event_id, consumer).await? {
        txn.rollback().await?;
        return Ok(None);
    }
    let out = effect(&txn).await?;
    txn.commit().await?;
    Ok(Some(out))
}

/// Deletes inbox rows received before `before` (batch's cleanup); returns how many went. A
/// redelivery older than that would run its effect again, so `before` must lie well past any
/// broker retention or replay window.
pub async fn delete_received_before<C: ConnectionTrait>(
    db: &C,
    before: DateTime<Utc>,
) -> Result<u64, DbErr> {
    crate::db::delete_before(db, "DELETE FROM inbox WHERE received_at < $1", before).await
}
