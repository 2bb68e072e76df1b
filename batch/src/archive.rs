//! Archival of finished shows across the concert and payment databases (DESIGN §4
//! "Archive"), run by the leader's `archive` job through the owning services' libraries.
//!
//! A batch of due schedules at a time, in an order that survives a crash anywhere:
//! 1. concert-api: the schedules' reservations (read, no locks); a schedule with a HELD one
//!    waits.
//! 2. payment-api: the payments of the others' reservations move to `archive.payments` in one
//!    transaction, a schedule's only if every one of them is settled (else it waits); already
//!    moved: a no-op.
//! 3. concert-api: under its locks, the seats, `reservation_seats` and reservations of the
//!    schedules whose payments moved go to the `archive` schema and the schedules are marked
//!    archived, in one transaction — each schedule only if its reservations are still exactly
//!    those of step 1 and all final.
//!
//! A crash (or a refusal) between 2 and 3 leaves payments archived and schedules not; nothing
//! reads across the two databases in a way that minds (the history reads both tables on each
//! side; the invariant watchdog compares nothing across them), and the next pass repeats 1 and
//! 2 (moving nothing more) and finishes with 3. A batch is a pair of short transactions of at
//! most [`Budget::batch`] schedules (one commit per database for all of them, which is what
//! makes a backlog of years go fast); a batch that fails is retried a schedule at a time, so
//! one date that cannot be archived holds up no other.

use chrono::{DateTime, TimeDelta, Utc};
use concert_api::{ScheduleArchival, ScheduleReservations};
use payment_api::LedgerMonths;
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
    /// Schedules archived together, in one transaction per database, at most.
    pub batch: u64,
}

impl Budget {
    /// The job's: a pass every `BATCH_ARCHIVE_INTERVAL_MS` beside a live sale, one batch.
    pub const JOB: Budget = Budget {
        archive: SCHEDULES_PER_PASS,
        look_at: LOOKED_AT_PER_PASS,
        batch: SCHEDULES_PER_PASS,
    };
    /// `batch archive`'s: an operator working off a backlog (archival switched on over years
    /// of shows), ten thousand dates between two reports, in batches of 250 (2,500 seats at
    /// ten a date: transactions of a fraction of a second, locking nothing a sale touches).
    pub const BACKLOG: Budget = Budget {
        archive: 10_000,
        look_at: 100_000,
        batch: 250,
    };
}

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

/// What became of the schedules of one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    pub archived: u64,
    pub rows: Rows,
    /// With a HELD reservation: nothing of them moved; a later pass tries again.
    pub waiting_for_hold: u64,
    /// With a payment still settling: nothing of them moved; a later pass tries again.
    pub waiting_for_payment: u64,
}

/// Archives `schedules` at `now`: steps 1 to 3 of the module's order. A schedule already
/// archived (by an earlier pass, or another archiver) counts as nothing; so does one a
/// reservation was added to between steps 1 and 3 (its payments are archived, the schedule
/// is not; the next pass finishes it).
pub async fn archive_schedules(
    concert_db: &DatabaseConnection,
    payment_db: &DatabaseConnection,
    schedules: &[i64],
    now: DateTime<Utc>,
) -> Result<Batch, String> {
    let which = || match schedules {
        [one] => format!("schedule {one}"),
        _ => format!("{} schedules", schedules.len()),
    };
    let mut batch = Batch::default();
    let (ready, held): (Vec<ScheduleReservations>, _) =
        concert_api::schedule_reservations(concert_db, schedules)
            .await
            .map_err(|e| format!("concert-api: {}: {e}", which()))?
            .into_iter()
            .partition(ScheduleReservations::all_final);
    batch.waiting_for_hold = held.len() as u64;
    let reservations: Vec<Vec<i64>> = ready.iter().map(|s| s.ids.clone()).collect();
    let payments = payment_api::archive_payments(payment_db, &reservations, now)
        .await
        .map_err(|e| format!("payment-api: {}: {e}", which()))?;
    let settled: Vec<ScheduleReservations> = ready
        .into_iter()
        .zip(&payments.unsettled)
        .filter_map(|(schedule, waiting)| (*waiting == 0).then_some(schedule))
        .collect();
    batch.waiting_for_payment = (reservations.len() - settled.len()) as u64;
    let archived = concert_api::archive_schedules(concert_db, &settled, now)
        .await
        .map_err(|e| format!("concert-api: {}: {e}", which()))?;
    for (_, outcome) in &archived.schedules {
        match outcome {
            ScheduleArchival::Archived => batch.archived += 1,
            ScheduleArchival::Held(_) => batch.waiting_for_hold += 1,
            ScheduleArchival::AlreadyArchived | ScheduleArchival::Changed => {}
        }
    }
    batch.rows = Rows {
        seats: archived.moved.seats,
        reservation_seats: archived.moved.reservation_seats,
        reservations: archived.moved.reservations,
        payments: payments.moved,
    };
    Ok(batch)
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
    /// The ledger's partitions (`None` if their upkeep failed: see `failed`; or if another
    /// archiver was keeping them at the time).
    pub ledger: Option<LedgerMonths>,
    /// The first error. A date that failed is left for the next pass and the others go on;
    /// an error reading which dates are due ends the pass.
    pub failed: Option<String>,
}

impl Pass {
    fn add(&mut self, batch: &Batch) {
        self.archived += batch.archived;
        self.rows.add(&batch.rows);
        self.waiting_for_hold += batch.waiting_for_hold;
        self.waiting_for_payment += batch.waiting_for_payment;
    }
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
        Ok(Some(months)) => {
            for name in &months.created {
                tracing::info!(partition = %name, "ledger partition created");
            }
            for name in &months.waiting {
                tracing::warn!(partition = %name, "ledger partition waits for a lock; next pass");
            }
            if let Some(c) = &months.closed {
                tracing::info!(before = %c.before, rows = c.rows, wallets = c.wallets,
                    partitions = c.partitions.len(), "ledger months closed");
            }
            pass.ledger = Some(months);
        }
        Ok(None) => tracing::debug!("another archiver is keeping the ledger's partitions"),
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
        let size = budget
            .batch
            .min(budget.archive - pass.archived)
            .min(budget.look_at - looked)
            .max(1);
        let page = concert_api::due_schedules(concert_db, before, last.as_ref(), size as i64)
            .await
            .map_err(|e| format!("concert-api: schedules due: {e}"))?;
        let Some(newest) = page.last().cloned() else {
            break;
        };
        looked += page.len() as u64;
        let ids: Vec<i64> = page.iter().map(|s| s.id).collect();
        match archive_schedules(concert_db, payment_db, &ids, now).await {
            Ok(batch) => {
                if batch.archived > 0 {
                    tracing::info!(
                        shows = batch.archived,
                        up_to = %newest.starts_at,
                        rows = ?batch.rows,
                        "shows archived"
                    );
                }
                pass.add(&batch);
            }
            // One date that cannot be archived (say, a lock it waited for too long) does not
            // hold up the others: the batch again, a date at a time; the pass reports the
            // dates that failed alone.
            Err(e) if ids.len() > 1 => {
                tracing::warn!(schedules = ids.len(), error = %e, "batch not archived, trying each");
                for id in ids {
                    match archive_schedules(concert_db, payment_db, &[id], now).await {
                        Ok(batch) => pass.add(&batch),
                        Err(e) => {
                            tracing::warn!(schedule_id = id, error = %e, "show not archived");
                            pass.failed.get_or_insert(e);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(schedule_id = ids[0], error = %e, "show not archived");
                pass.failed.get_or_insert(e);
            }
        }
        last = Some(newest);
    }
    Ok(())
}
