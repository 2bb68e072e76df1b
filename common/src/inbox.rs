//! Inbox dedup: a consumer records each event id in the same transaction as its effect, so
//! a redelivered event (at-least-once delivery) changes nothing the second time.

use sea_orm::{ConnectionTrait, DbErr, Statement};
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
