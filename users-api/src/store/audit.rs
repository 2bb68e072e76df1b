//! The `admin_audit` table: one row per admin change (who, when, what, before → after).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, Statement};

/// One change, as recorded.
pub struct AuditEntry<'a> {
    pub actor_id: i64,
    pub actor_username: &'a str,
    pub at: DateTime<Utc>,
    /// What was done, e.g. `queue.settings`.
    pub action: &'a str,
    /// What it was done to, e.g. `concert:7`.
    pub target: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

/// Writes the row.
pub async fn record<C: ConnectionTrait>(db: &C, e: AuditEntry<'_>) -> Result<(), DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO admin_audit (actor_id, actor_username, at, action, target, before, after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            e.actor_id.into(),
            e.actor_username.into(),
            e.at.into(),
            e.action.into(),
            e.target.into(),
            e.before.into(),
            e.after.into(),
        ],
    ))
    .await?;
    Ok(())
}
