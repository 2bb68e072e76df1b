//! Archival of finished shows across the concert and payment databases (DESIGN §4
//! "Archive"), run by the leader's `archive` job through the owning services' libraries.
//!
//! One schedule at a time, in an order that survives a crash anywhere:
//! 1. concert-api: the schedule's reservations (read, no locks); a HELD one means not yet.
//! 2. payment-api: the payments of exactly those reservations move to `archive.payments` in
//!    one transaction, only if every one is settled (else not yet); already moved: a no-op.
//! 3. concert-api: under its locks, the schedule's seats, `reservation_seats` and
//!    reservations move to the `archive` schema and the schedule is marked archived, in one
//!    transaction — only if its reservations are still exactly those of step 1 and all final.
//!
//! A crash (or a refusal) between 2 and 3 leaves the payments archived and the schedule not;
//! nothing reads across the two databases in a way that minds (the history reads both tables
//! on each side; the invariant watchdog compares nothing across them), and the next pass
//! repeats 1 and 2 (moving nothing more) and finishes with 3. Each schedule is its own pair
//! of short transactions, at most [`SCHEDULES_PER_PASS`] per pass, so a pass never holds
//! locks for long.

use chrono::{DateTime, TimeDelta, Utc};
use concert_api::ScheduleArchival;
use payment_api::{LedgerMonths, PaymentArchival};
use sea_orm::DatabaseConnection;

/// Schedules one pass of the job archives at most.
pub const SCHEDULES_PER_PASS: u64 = 20;
/// Due schedules one pass of the job looks at at most, those not ready (a hold, an unsettled
/// payment) included, so a pile of them cannot make a pass long.
pub const LOOKED_AT_PER_PASS: u64 = 200;

/// How much one pass may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Schedules archived at most.
    pub archive: u64,
    /// Due schedules looked at at most.
    pub look_at: u64,
}

impl Budget {
    /// The job's: a pass every `BATCH_ARCHIVE_INTERVAL_MS` beside a live sale.
    pub const JOB: Budget = Budget {
        archive: SCHEDULES_PER_PASS,
        look_at: LOOKED_AT_PER_PASS,
    };
    /// `batch archive`'s: an operator working off a backlog (archival switched on over years
    /// of shows), a thousand dates between two reports.
    pub const BACKLOG: Budget = Budget {
        archive: 1000,
        look_at: 10_000,
    };
}
/// Due schedules read per query.
const PAGE: i64 = 50;

/// Rows moved into the archive, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rows {
    pub seats: u64,
    pub reservation_seats: u64,
    pub reservations: u64,
    pub payments: u64,
}

impl Rows {
    /// `(table, rows)` in a fixed order, for metrics and logs.
    pub fn by_table(&self) -> [(&'static str, u64); 4] {
        [
            ("seats", self.seats),
            ("reservation_seats", self.reservation_seats),
            ("reservations", self.reservations),
            ("payments", self.payments),
        ]
    }

    fn add(&mut self, other: &Rows) {
        self.seats += other.seats;
        self.reservation_seats += other.reservation_seats;
        self.reservations += other.reservations;
        self.payments += other.payments;
    }
}

/// What became of one schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Archived(Rows),
    /// An earlier pass (or another archiver) archived it; payments it found still hot (none,
    /// normally) were moved.
    AlreadyArchived,
    /// A reservation is still HELD: nothing of the schedule moved; a later pass tries again.
    WaitingForHold,
    /// A payment is still settling: nothing moved; a later pass tries again.
    WaitingForPayment,
    /// A reservation appeared between steps 1 and 3: the payments are archived, the schedule
    /// is not; the next pass finishes it.
    Changed,
}

/// Archives schedule `schedule_id` at `now`: steps 1 to 3 of the module's order.
pub async fn archive_schedule(
    concert_db: &DatabaseConnection,
    payment_db: &DatabaseConnection,
    schedule_id: i64,
    now: DateTime<Utc>,
) -> Result<Outcome, String> {
    let reservations = concert_api::schedule_reservations(concert_db, schedule_id)
        .await
        .map_err(|e| format!("concert-api: schedule {schedule_id}: {e}"))?;
    if !reservations.all_final() {
        return Ok(Outcome::WaitingForHold);
    }
    let payments = match payment_api::archive_payments(payment_db, &reservations.ids, now)
        .await
        .map_err(|e| format!("payment-api: schedule {schedule_id}: {e}"))?
    {
        PaymentArchival::Archived(n) => n,
        PaymentArchival::Unsettled(_) => return Ok(Outcome::WaitingForPayment),
    };
    let archived = concert_api::archive_schedule(concert_db, schedule_id, &reservations.ids, now)
        .await
        .map_err(|e| format!("concert-api: schedule {schedule_id}: {e}"))?;
    Ok(match archived {
        ScheduleArchival::Archived(moved) => Outcome::Archived(Rows {
            seats: moved.seats,
            reservation_seats: moved.reservation_seats,
            reservations: moved.reservations,
            payments,
        }),
        ScheduleArchival::AlreadyArchived => Outcome::AlreadyArchived,
        ScheduleArchival::Held(_) => Outcome::WaitingForHold,
        ScheduleArchival::Changed => Outcome::Changed,
    })
}

/// What one pass did (also when it stopped on an error: what was archived before it stays).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub archived: u64,
    pub rows: Rows,
    /// Due schedules this pass found not ready: with a HELD reservation, with a payment still
    /// settling.
    pub waiting_for_hold: u64,
    pub waiting_for_payment: u64,
    /// The ledger's partitions (`None` if their upkeep failed: see `failed`).
    pub ledger: Option<LedgerMonths>,
    /// The first error. A date that failed is left for the next pass and the others go on;
    /// an error reading which dates are due ends the pass.
    pub failed: Option<String>,
}

/// One pass at `now`: the ledger's monthly partitions kept ahead, then the schedules whose
/// show started more than `after` ago archived, oldest first, within `budget`.
pub async fn run_pass(
    concert_db: &DatabaseConnection,
    payment_db: &DatabaseConnection,
    now: DateTime<Utc>,
    after: TimeDelta,
    budget: Budget,
) -> Pass {
    let mut pass = Pass::default();
    // Independent of the schedules: a failure here does not hold archival up (nor the reverse).
    match payment_api::keep_ledger_months(payment_db, now).await {
        Ok(months) => {
            for name in &months.created {
                tracing::info!(partition = %name, "ledger partition created");
            }
            pass.ledger = Some(months);
        }
        Err(e) => pass.failed = Some(format!("payment-api: ledger partitions: {e}")),
    }
    if let Err(e) = archive_due(concert_db, payment_db, now, after, budget, &mut pass).await {
        pass.failed.get_or_insert(e);
    }
    pass
}

async fn archive_due(
    concert_db: &DatabaseConnection,
    payment_db: &DatabaseConnection,
    now: DateTime<Utc>,
    after: TimeDelta,
    budget: Budget,
    pass: &mut Pass,
) -> Result<(), String> {
    let before = now - after;
    let mut last = None;
    let mut looked = 0;
    while pass.archived < budget.archive && looked < budget.look_at {
        let page = concert_api::due_schedules(concert_db, before, last.as_ref(), PAGE)
            .await
            .map_err(|e| format!("concert-api: schedules due: {e}"))?;
        if page.is_empty() {
            break;
        }
        for schedule in page {
            if pass.archived >= budget.archive || looked >= budget.look_at {
                break;
            }
            looked += 1;
            let outcome = archive_schedule(concert_db, payment_db, schedule.id, now).await;
            match outcome {
                Ok(Outcome::Archived(rows)) => {
                    tracing::info!(
                        schedule_id = schedule.id,
                        starts_at = %schedule.starts_at,
                        ?rows,
                        "show archived"
                    );
                    pass.archived += 1;
                    pass.rows.add(&rows);
                }
                Ok(Outcome::AlreadyArchived | Outcome::Changed) => {}
                Ok(Outcome::WaitingForHold) => pass.waiting_for_hold += 1,
                Ok(Outcome::WaitingForPayment) => pass.waiting_for_payment += 1,
                // One date that cannot be archived (say, a lock it waited for too long) does
                // not hold up the others; the pass still reports it.
                Err(e) => {
                    tracing::warn!(schedule_id = schedule.id, error = %e, "show not archived");
                    pass.failed.get_or_insert(e);
                }
            }
            last = Some(schedule);
        }
    }
    Ok(())
}
