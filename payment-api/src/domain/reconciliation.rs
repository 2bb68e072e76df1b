//! Reconciliation (DESIGN §6): chasing COMPLETED payments whose reservation has not been seen
//! confirmed, so a lost event, a crashed consumer or a stuck broker can delay a settlement but
//! never leave money taken and no seat. batch runs it on its leader.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use crate::concerts::{ConcertClient, RemoteStatus};
use crate::config::PaymentConfig;
use crate::domain::settle::{self, DirectOutcome, SettleError, UnsettledByAge};
use crate::events::{completed_event_id, publish_completed};
use crate::store::payments;
use crate::store::reconciliation;

/// Payments handled per path in one pass.
const PASS_LIMIT: i64 = 500;

/// What one reconciliation pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Payments looked at, each by one of the two paths.
    pub checked: u64,
    /// Found or made CONFIRMED: the bookkeeping caught up.
    pub confirmed: u64,
    /// `payment.completed` published again (or found still waiting for the relay).
    pub republished: u64,
    /// Settled over HTTP with concert-api (each also counted in `confirmed` or, when this
    /// pass gave the money back, `refunded`).
    pub settled_directly: u64,
    pub refunded: u64,
    /// concert-api could not answer; the next pass tries again.
    pub unreachable: u64,
    /// What is still unsettled after the pass, by age (batch's `payments_unsettled` gauge).
    pub unsettled: UnsettledByAge,
}

/// One pass at `now`.
///
/// Older than `cfg.settle_direct_after`: settled directly through concert-api's internal
/// endpoint, whatever the broker is doing — confirmed (the bookkeeping catches up) or
/// rejected (refunded here and now). Older than `cfg.reconcile_after` only: if concert-api
/// shows it CONFIRMED by this payment, the bookkeeping catches up; otherwise
/// `payment.completed` is published again (same event id) for concert-api's consumer to
/// settle. concert-api being unreachable is counted, not an error.
pub async fn reconcile(
    db: &DatabaseConnection,
    concerts: &ConcertClient,
    cfg: &PaymentConfig,
    now: DateTime<Utc>,
) -> Result<Reconciliation, DbErr> {
    let ago = |d: std::time::Duration, fallback_secs: i64| {
        now - chrono::Duration::from_std(d)
            .unwrap_or_else(|_| chrono::Duration::seconds(fallback_secs))
    };
    let republish_before = ago(cfg.reconcile_after, 30);
    let direct_before = ago(cfg.settle_direct_after, 120);
    let mut report = Reconciliation::default();
    // Candidates are read without locks; each is then handled on its own, in short
    // transactions, so no lock is held while concert-api is asked.
    for p in reconciliation::overdue(db, direct_before, PASS_LIMIT).await? {
        report.checked += 1;
        match settle::settle_directly(db, concerts, &p, now).await {
            Ok(DirectOutcome::Confirmed) => {
                report.settled_directly += 1;
                report.confirmed += 1;
            }
            Ok(DirectOutcome::Rejected { refunded }) => {
                report.settled_directly += 1;
                report.refunded += u64::from(refunded);
            }
            Err(SettleError::Unreachable(_)) => report.unreachable += 1,
            Err(SettleError::Db(e)) => return Err(e),
        }
    }
    let due = reconciliation::due_for_republish(db, republish_before, direct_before, PASS_LIMIT);
    for p in due.await? {
        report.checked += 1;
        let Ok(remote) = concerts.reservation(p.reservation_id).await else {
            report.unreachable += 1;
            continue;
        };
        let txn = db.begin().await?;
        match remote {
            Some(r) if r.status == RemoteStatus::Confirmed && r.payment_id == Some(p.id) => {
                payments::mark_confirmed(&txn, p.id, now).await?;
                report.confirmed += 1;
            }
            _ => {
                if reconciliation::clear_published(&txn, completed_event_id(p.id)).await? {
                    publish_completed(&txn, &p).await?;
                }
                payments::mark_republished(&txn, p.id, now).await?;
                report.republished += 1;
            }
        }
        txn.commit().await?;
    }
    report.unsettled = UnsettledByAge::at(db, now).await?;
    Ok(report)
}

/// After a restore whose concert database was dumped from `since` on: a confirmation
/// payment-api saw since then may be missing from the restored concert database (the
/// reservation still HELD there, or not there at all), so every one of them is forgotten and
/// reconciliation asks concert-api about each payment again — confirmed if its hold is
/// still there, refunded if not. Asking about one that is in fact confirmed only catches the
/// bookkeeping up. The number of payments reopened.
pub async fn reopen_settlement(
    db: &DatabaseConnection,
    since: DateTime<Utc>,
) -> Result<u64, DbErr> {
    reconciliation::reopen_since(db, since).await
}
