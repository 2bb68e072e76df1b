//! The admin audit trail (`admin_audit`): one row per admin change, written in the
//! transaction of the change, with who made it, what it was, and the target before and after.

use sea_orm::{ConnectionTrait, DbErr};
use serde_json::Value;

use crate::store::stmt;

/// An admin change, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry<'a> {
    pub actor_id: i64,
    pub actor_username: &'a str,
    /// What was done, e.g. `concert.update`.
    pub action: &'static str,
    /// What it was done to, e.g. `concert:12`.
    pub target: String,
    /// `None` for a creation.
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Writes `entry` in the caller's transaction (log it with [`log`] once committed).
pub async fn record<C: ConnectionTrait>(txn: &C, entry: &AuditEntry<'_>) -> Result<(), DbErr> {
    txn.execute_raw(stmt(
        txn,
        "INSERT INTO admin_audit (actor_id, actor_username, action, target, before, after) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            entry.actor_id.into(),
            entry.actor_username.into(),
            entry.action.into(),
            entry.target.clone().into(),
            entry.before.clone().into(),
            entry.after.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The log line of a committed change: the same fields as its row.
pub fn log(entry: &AuditEntry<'_>) {
    let show = |v: &Option<Value>| v.as_ref().map_or("null".to_owned(), |v| v.to_string());
    let (before, after) = (show(&entry.before), show(&entry.after));
    tracing::info!(
        actor_id = entry.actor_id,
        actor_username = entry.actor_username,
        action = entry.action,
        target = %entry.target,
        before = %before,
        after = %after,
        "admin change"
    );
}
