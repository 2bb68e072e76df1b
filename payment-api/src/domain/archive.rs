//! Archival, payment-api's part (DESIGN §4 "Archive"): the payments of a finished show's
//! reservations move to `archive.payments` — the step batch runs before concert-api moves the
//! show's seats and reservations — and the ledger's monthly partitions are created ahead of
//! time. The ledger itself is never archived: it keeps every row.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeDelta, Utc};
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use crate::store::archive::{self, PaymentState};
use crate::store::ledger;
use crate::store::payments::PaymentStatus;

/// Months after the current one whose ledger partition must exist.
pub const LEDGER_MONTHS_AHEAD: u32 = 2;

/// How long a month of the ledger has been over when it is closed (`ledger::close_before`):
/// far longer than any transaction that could still write a row dated in it.
pub const LEDGER_CLOSE_AFTER: TimeDelta = TimeDelta::days(1);

/// The longest archiving payments, or creating a ledger month, waits for a lock (a refund or
/// a confirmation of one of them; payments written into the DEFAULT partition): then the
/// schedule, or the month, waits for the next pass.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// What [`archive_payments`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentArchival {
    /// Payments moved in all (0: none, or all moved by an earlier pass).
    pub moved: u64,
    /// For each show asked about, in that order: how many of its payments are COMPLETED and
    /// not seen confirmed (nor refunded). 0: the show's payments are archived; more: still
    /// settling, so none of them moved, and a later pass tries again.
    pub unsettled: Vec<u64>,
}

/// Payments whose fate is not settled: COMPLETED without a confirmation seen. A REFUNDED one
/// is settled (the money is back), and so is a confirmed one (the seat is sold).
fn is_unsettled(p: &PaymentState) -> bool {
    p.status == PaymentStatus::Completed && p.confirmed_at.is_none()
}

/// How many of `payments` are unsettled for each of `shows` (their reservations).
fn unsettled_by_show(shows: &[Vec<i64>], payments: &[PaymentState]) -> Vec<u64> {
    let show_of: HashMap<i64, usize> = shows
        .iter()
        .enumerate()
        .flat_map(|(n, reservations)| reservations.iter().map(move |&r| (r, n)))
        .collect();
    let mut unsettled = vec![0; shows.len()];
    for p in payments.iter().filter(|p| is_unsettled(p)) {
        if let Some(&n) = show_of.get(&p.reservation_id) {
            unsettled[n] += 1;
        }
    }
    unsettled
}

/// Moves the payments of finished shows into the archive, stamped `now`, in one transaction:
/// `shows` holds each show's reservations, and a show's payments move only if every one is
/// settled; the others' stay. Idempotent: what an earlier pass moved is no longer here, so
/// asking again moves nothing more.
pub async fn archive_payments(
    db: &DatabaseConnection,
    shows: &[Vec<i64>],
    now: DateTime<Utc>,
) -> Result<PaymentArchival, DbErr> {
    let all: Vec<i64> = shows.iter().flatten().copied().collect();
    if all.is_empty() {
        return Ok(PaymentArchival {
            moved: 0,
            unsettled: vec![0; shows.len()],
        });
    }
    let txn = db.begin().await?;
    common::db::bound_lock_waits(&txn, LOCK_WAIT).await?;
    let unsettled = unsettled_by_show(shows, &archive::lock_for_reservations(&txn, &all).await?);
    let settled: Vec<i64> = shows
        .iter()
        .zip(&unsettled)
        .filter(|(_, waiting)| **waiting == 0)
        .flat_map(|(reservations, _)| reservations.iter().copied())
        .collect();
    let moved = if settled.is_empty() {
        0
    } else {
        archive::move_for_reservations(&txn, &settled, now).await?
    };
    txn.commit().await?;
    Ok(PaymentArchival { moved, unsettled })
}

/// After a large backlog was archived: `payments`' dead rows cleared and the statistics of
/// both tables brought up to date, now rather than by autovacuum in the middle of the next
/// sale. Answers the tables.
pub async fn vacuum_after_archival(
    db: &DatabaseConnection,
) -> Result<&'static [&'static str], DbErr> {
    archive::vacuum(db).await?;
    Ok(&archive::TABLES)
}

/// What one upkeep of the ledger's partitions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerMonths {
    /// Partitions created, by name.
    pub created: Vec<String>,
    /// Rows they took over from the DEFAULT partition.
    pub rows_moved: u64,
    /// Partitions not created because the wait for a lock ran out: for the next pass.
    pub waiting: Vec<String>,
    /// Rows left in the DEFAULT partition afterwards (0 in normal running).
    pub default_rows: i64,
    /// The months this upkeep closed, if any (see [`LEDGER_CLOSE_AFTER`]).
    pub closed: Option<ledger::ClosedMonths>,
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

/// The first month not to close at `now`: every month before it has been over for
/// [`LEDGER_CLOSE_AFTER`].
pub fn close_months_before(now: DateTime<Utc>) -> NaiveDate {
    month_of(now - LEDGER_CLOSE_AFTER)
}

/// Creates every ledger partition [`months_wanted`] at `now` that does not exist yet (with
/// the rows the DEFAULT partition holds for it), then closes the months over for
/// [`LEDGER_CLOSE_AFTER`] (if every month was created). Idempotent: an existing month is left
/// alone, a closed one stays closed. `None`: another archiver is keeping them right now
/// (nothing done; the next pass looks).
pub async fn keep_ledger_months(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
) -> Result<Option<LedgerMonths>, DbErr> {
    // Held, on a connection of its own, for the whole upkeep; each month is its own
    // transaction beside it.
    let upkeep = db.begin().await?;
    if !ledger::lock_upkeep(&upkeep).await? {
        upkeep.rollback().await?;
        return Ok(None);
    }
    let in_default = ledger::months_in_default(db).await?;
    let mut done = LedgerMonths::default();
    for month in months_wanted(now, &in_default) {
        if ledger::has_partition(db, month).await? {
            continue;
        }
        match ledger::create_month(db, month, LOCK_WAIT).await {
            Ok(Some(moved)) => {
                done.rows_moved += moved;
                done.created.push(ledger::partition_name(month));
            }
            Ok(None) => {}
            // A long read of the DEFAULT partition (the invariant watchdog's, while it holds
            // millions of rows) kept the attach waiting: not a fault, the next pass tries.
            Err(e) if common::db::is_lock_timeout(&e) => {
                done.waiting.push(ledger::partition_name(month));
            }
            Err(e) => return Err(e),
        }
    }
    if done.waiting.is_empty() {
        match ledger::close_before(db, close_months_before(now), LOCK_WAIT).await {
            Ok(closed) => done.closed = closed,
            Err(e) if common::db::is_lock_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    done.default_rows = ledger::rows_in_default(db).await?;
    upkeep.commit().await?;
    Ok(Some(done))
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
    fn a_month_closes_a_day_after_it_ends() {
        let at = |d, h| Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0).unwrap();
        assert_eq!(close_months_before(at(1, 23)), day(2026, 11, 1));
        assert_eq!(close_months_before(at(2, 0)), day(2026, 12, 1));
        assert_eq!(close_months_before(at(31, 12)), day(2026, 12, 1));
    }

    #[test]
    fn only_a_completed_payment_not_seen_confirmed_holds_its_show_back() {
        let at = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let p = |reservation_id, status, confirmed_at| PaymentState {
            id: reservation_id * 10,
            reservation_id,
            status,
            confirmed_at,
        };
        let shows = [vec![1, 2, 3], vec![4], vec![5, 6], vec![]];
        let payments = [
            p(1, PaymentStatus::Completed, Some(at)),
            p(2, PaymentStatus::Refunded, None),
            p(3, PaymentStatus::Completed, None),
            p(4, PaymentStatus::Refunded, None),
            p(5, PaymentStatus::Completed, None),
            p(6, PaymentStatus::Completed, None),
            p(7, PaymentStatus::Completed, None),
        ];
        assert_eq!(unsettled_by_show(&shows, &payments), [1, 0, 2, 0]);
        assert_eq!(unsettled_by_show(&shows, &[]), [0, 0, 0, 0]);
    }
}
