//! Archival of finished shows (DESIGN §4 "Archive"): once a schedule's show is over by
//! `ARCHIVE_AFTER_DAYS`, batch moves its seats, `reservation_seats` and reservations into the
//! `archive` schema, after payment-api has archived the payments of those reservations. The
//! schedule and its concert stay (the catalogue); every read that answers about a reservation
//! or a seat of an archived schedule reads the archive, so nothing a user or an organiser
//! sees changes.
//!
//! The order across the two databases (batch's `archive` module): read the schedule's
//! reservations ([`schedule_reservations`]), archive their payments (payment-api), then
//! [`archive_schedule`] here. A crash between the two leaves payments archived and the
//! schedule not: the next pass reads the same reservations, finds their payments already
//! moved, and finishes here. Only a schedule whose reservations are all final is archived.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use crate::domain::status::ReservationStatus;
use crate::store::archive::{self, DueSchedule, MovedRows, ReservationState};

/// The longest archival waits for a lock (a settlement or a cancel working on one of the
/// schedule's reservations): then it gives the schedule up until the next pass.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// A schedule's reservations as archival sees them before it moves anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleReservations {
    /// Every reservation of the schedule, by id: whose payments are archived first.
    pub ids: Vec<i64>,
    /// Of those, the ones still HELD: not final, so the schedule waits.
    pub held: u64,
}

impl ScheduleReservations {
    fn of(states: &[ReservationState]) -> Self {
        Self {
            ids: states.iter().map(|r| r.id).collect(),
            held: states
                .iter()
                .filter(|r| r.status == ReservationStatus::Held)
                .count() as u64,
        }
    }

    /// Every reservation has reached a status nothing changes any more.
    pub fn all_final(&self) -> bool {
        self.held == 0
    }
}

/// The reservations of schedule `schedule_id`, read without locks (for the payment step).
pub async fn schedule_reservations(
    db: &DatabaseConnection,
    schedule_id: i64,
) -> Result<ScheduleReservations, DbErr> {
    Ok(ScheduleReservations::of(
        &archive::reservations_of(db, schedule_id).await?,
    ))
}

/// What [`archive_schedule`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleArchival {
    /// Moved; the schedule is archived.
    Archived(MovedRows),
    /// Archived already (by an earlier pass): nothing to do.
    AlreadyArchived,
    /// A reservation is still HELD: nothing moved; a later pass tries again.
    Held(u64),
    /// The schedule's reservations are not the ones whose payments were archived (one was
    /// added since): nothing moved; the next pass archives the payments of all of them first.
    Changed,
}

/// The rule, once the schedule's rows are locked: every reservation final, and exactly the
/// reservations whose payments were archived.
fn verdict(
    locked: &ScheduleReservations,
    payments_archived_for: &[i64],
) -> Option<ScheduleArchival> {
    if !locked.all_final() {
        return Some(ScheduleArchival::Held(locked.held));
    }
    let mut expected = payments_archived_for.to_vec();
    expected.sort_unstable();
    expected.dedup();
    (locked.ids != expected).then_some(ScheduleArchival::Changed)
}

/// Moves schedule `schedule_id`'s seats, `reservation_seats` and reservations into the
/// archive, stamped `now`, and marks it archived — in one transaction, under the locks a
/// settlement or a cancel takes (its reservations, then its seats), and only if every
/// reservation is final and they are exactly `payments_archived_for`, the reservations whose
/// payments payment-api has archived. Idempotent: an archived schedule is left alone.
pub async fn archive_schedule(
    db: &DatabaseConnection,
    schedule_id: i64,
    payments_archived_for: &[i64],
    now: DateTime<Utc>,
) -> Result<ScheduleArchival, DbErr> {
    let txn = db.begin().await?;
    common::db::bound_lock_waits(&txn, LOCK_WAIT).await?;
    if !archive::lock_unarchived(&txn, schedule_id).await? {
        txn.rollback().await?;
        return Ok(ScheduleArchival::AlreadyArchived);
    }
    let locked =
        ScheduleReservations::of(&archive::lock_reservations_and_seats(&txn, schedule_id).await?);
    if let Some(not_now) = verdict(&locked, payments_archived_for) {
        txn.rollback().await?;
        return Ok(not_now);
    }
    let moved = archive::move_schedule(&txn, schedule_id, &locked.ids, now).await?;
    txn.commit().await?;
    Ok(ScheduleArchival::Archived(moved))
}

/// Schedules to look at: not archived, started before `before`, oldest first.
pub async fn due_schedules(
    db: &DatabaseConnection,
    before: DateTime<Utc>,
    after: Option<&DueSchedule>,
    limit: i64,
) -> Result<Vec<DueSchedule>, DbErr> {
    archive::due(db, before, after.map(|s| (s.starts_at, s.id)), limit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(list: &[(i64, ReservationStatus)]) -> ScheduleReservations {
        ScheduleReservations::of(
            &list
                .iter()
                .map(|&(id, status)| ReservationState { id, status })
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn a_schedule_with_a_held_reservation_waits() {
        let s = states(&[
            (1, ReservationStatus::Confirmed),
            (2, ReservationStatus::Held),
            (3, ReservationStatus::Held),
        ]);
        assert!(!s.all_final());
        assert_eq!(verdict(&s, &[1, 2, 3]), Some(ScheduleArchival::Held(2)));
    }

    #[test]
    fn final_reservations_whose_payments_were_archived_are_moved() {
        use ReservationStatus::*;
        let s = states(&[(1, Confirmed), (2, Expired), (3, Cancelled), (4, Rejected)]);
        assert!(s.all_final());
        assert_eq!(verdict(&s, &[4, 3, 2, 1]), None, "in any order");
        assert_eq!(
            verdict(&states(&[]), &[]),
            None,
            "a show nobody booked moves too"
        );
    }

    #[test]
    fn a_reservation_added_since_the_payment_step_sends_it_back() {
        use ReservationStatus::*;
        let s = states(&[(1, Confirmed), (2, Expired)]);
        assert_eq!(verdict(&s, &[1]), Some(ScheduleArchival::Changed));
        assert_eq!(verdict(&s, &[1, 2, 5]), Some(ScheduleArchival::Changed));
    }
}
