//! Archival, payment-api's part (DESIGN §4 "Archive"): the payments of a finished show's
//! reservations move to `archive.payments` — the step batch runs before concert-api moves the
//! show's seats and reservations — and the ledger's monthly partitions are created ahead of
//! time. The ledger itself is never archived: it keeps every row.

use std::time::Duration;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use crate::store::archive::{self, PaymentState};
use crate::store::ledger;
use crate::store::payments::PaymentStatus;

/// Months after the current one whose ledger partition must exist.
pub const LEDGER_MONTHS_AHEAD: u32 = 2;

/// The longest archiving payments, or creating a ledger month, waits for a lock (a refund or
/// a confirmation of one of them; payments written into the DEFAULT partition): then the
/// schedule, or the month, waits for the next pass.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// What [`archive_payments`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentArchival {
    /// These many payments moved (0: none, or all moved by an earlier pass).
    Archived(u64),
    /// These many are COMPLETED and not seen confirmed (nor refunded): still settling, so
    /// nothing moved; a later pass tries again.
    Unsettled(u64),
}

/// Payments whose fate is not settled: COMPLETED without a confirmation seen. A REFUNDED one
/// is settled (the money is back), and so is a confirmed one (the seat is sold).
fn unsettled(payments: &[PaymentState]) -> u64 {
    payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Completed && p.confirmed_at.is_none())
        .count() as u64
}

/// Moves the payments of `reservations` (a finished show's) into the archive, stamped `now`,
/// in one transaction — only if every one is settled; otherwise nothing. Idempotent: what an
/// earlier pass moved is no longer here, so asking again moves nothing more.
pub async fn archive_payments(
    db: &DatabaseConnection,
    reservations: &[i64],
    now: DateTime<Utc>,
) -> Result<PaymentArchival, DbErr> {
    if reservations.is_empty() {
        return Ok(PaymentArchival::Archived(0));
    }
    let txn = db.begin().await?;
    common::db::bound_lock_waits(&txn, LOCK_WAIT).await?;
    let locked = archive::lock_for_reservations(&txn, reservations).await?;
    let waiting = unsettled(&locked);
    if waiting > 0 {
        txn.rollback().await?;
        return Ok(PaymentArchival::Unsettled(waiting));
    }
    let moved = archive::move_for_reservations(&txn, reservations, now).await?;
    txn.commit().await?;
    Ok(PaymentArchival::Archived(moved))
}

/// What one upkeep of the ledger's partitions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerMonths {
    /// Partitions created, by name.
    pub created: Vec<String>,
    /// Rows they took over from the DEFAULT partition.
    pub rows_moved: u64,
    /// Rows left in the DEFAULT partition afterwards (0 in normal running).
    pub default_rows: i64,
}

/// The month (its first day) of `at`, in UTC.
fn month_of(at: DateTime<Utc>) -> NaiveDate {
    let d = at.date_naive();
    NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap_or(d)
}

/// The months whose partition must exist at `now`: this one and [`LEDGER_MONTHS_AHEAD`]
/// after it, and every month that has rows in the DEFAULT partition (they move into it).
pub fn months_wanted(now: DateTime<Utc>, in_default: &[NaiveDate]) -> Vec<NaiveDate> {
    let this = month_of(now);
    let mut months: Vec<NaiveDate> = (0..=LEDGER_MONTHS_AHEAD)
        .filter_map(|n| this.checked_add_months(Months::new(n)))
        .chain(in_default.iter().copied())
        .collect();
    months.sort_unstable();
    months.dedup();
    months
}

/// Creates every ledger partition [`months_wanted`] at `now` that does not exist yet (with
/// the rows the DEFAULT partition holds for it). Idempotent: an existing month is left alone.
pub async fn keep_ledger_months(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
) -> Result<LedgerMonths, DbErr> {
    let in_default = ledger::months_in_default(db).await?;
    let mut done = LedgerMonths::default();
    for month in months_wanted(now, &in_default) {
        if ledger::has_partition(db, month).await? {
            continue;
        }
        done.rows_moved += ledger::create_month(db, month, LOCK_WAIT).await?;
        done.created.push(ledger::partition_name(month));
    }
    done.default_rows = ledger::rows_in_default(db).await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn this_month_and_the_next_two_are_wanted_and_months_stranded_in_default() {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 59).unwrap();
        assert_eq!(
            months_wanted(now, &[]),
            [day(2026, 11, 1), day(2026, 12, 1), day(2027, 1, 1)]
        );
        assert_eq!(
            months_wanted(now, &[day(2026, 3, 1), day(2026, 12, 1)]),
            [
                day(2026, 3, 1),
                day(2026, 11, 1),
                day(2026, 12, 1),
                day(2027, 1, 1)
            ]
        );
    }

    #[test]
    fn only_a_completed_payment_not_seen_confirmed_is_unsettled() {
        let at = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let p = |status, confirmed_at| PaymentState {
            id: 1,
            status,
            confirmed_at,
        };
        assert_eq!(
            unsettled(&[
                p(PaymentStatus::Completed, Some(at)),
                p(PaymentStatus::Refunded, None),
                p(PaymentStatus::Completed, None),
            ]),
            1
        );
        assert_eq!(unsettled(&[]), 0);
    }
}
