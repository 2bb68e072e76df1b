//! Archival of finished shows (DESIGN §4 "Archive"): once a schedule's show is over by
//! `ARCHIVE_AFTER_DAYS`, batch moves its seats, `reservation_seats` and reservations into the
//! `archive` schema, after payment-api has archived the payments of those reservations. The
//! schedule and its concert stay (the catalogue); every read that answers about a reservation
//! or a seat of an archived schedule reads the archive, so nothing a user or an organiser
//! sees changes.
//!
//! The order across the two databases (batch's `archive` module), for a set of schedules at
//! once: read their reservations ([`schedule_reservations`]), archive the payments of those
//! whose reservations are all final (payment-api), then [`archive_schedules`] here. A crash
//! between the two leaves payments archived and schedules not: the next pass reads the same
//! reservations, finds their payments already moved, and finishes here. Only a schedule whose
//! reservations are all final is archived.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use crate::domain::status::ReservationStatus;
use crate::store::archive::{self, DueSchedule, MovedRows, ReservationState};

/// The longest archival waits for a lock (a settlement or a cancel working on one of the
/// schedules' reservations): then it gives the schedules up until the next pass.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// A schedule's reservations as archival sees them before it moves anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleReservations {
    pub schedule_id: i64,
    /// Every reservation of the schedule, by id: whose payments are archived first.
    pub ids: Vec<i64>,
    /// Of those, the ones still HELD: not final, so the schedule waits.
    pub held: u64,
}

impl ScheduleReservations {
    /// Each of `schedules`, in that order (a repeat dropped), with its reservations among
    /// `states` (in their order).
    fn of(schedules: &[i64], states: &[ReservationState]) -> Vec<Self> {
        let mut by_schedule: BTreeMap<i64, Self> = schedules
            .iter()
            .map(|&schedule_id| {
                (
                    schedule_id,
                    Self {
                        schedule_id,
                        ..Self::default()
                    },
                )
            })
            .collect();
        for r in states {
            if let Some(s) = by_schedule.get_mut(&r.schedule_id) {
                s.ids.push(r.id);
                s.held += u64::from(r.status == ReservationStatus::Held);
            }
        }
        schedules
            .iter()
            .filter_map(|id| by_schedule.remove(id))
            .collect()
    }

    /// Every reservation has reached a status nothing changes any more.
    pub fn all_final(&self) -> bool {
        self.held == 0
    }
}

/// The reservations of each of `schedules` (in that order, duplicates dropped), read without
/// locks (for the payment step).
pub async fn schedule_reservations(
    db: &DatabaseConnection,
    schedules: &[i64],
) -> Result<Vec<ScheduleReservations>, DbErr> {
    let states = archive::reservations_of(db, schedules).await?;
    Ok(ScheduleReservations::of(schedules, &states))
}

/// What [`archive_schedules`] made of one schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleArchival {
    /// Moved; the schedule is archived.
    Archived,
    /// Archived already (by an earlier pass), or not a schedule: nothing to do.
    AlreadyArchived,
    /// A reservation is still HELD: nothing moved; a later pass tries again.
    Held(u64),
    /// The schedule's reservations are not the ones whose payments were archived (one was
    /// added since): nothing moved; the next pass archives the payments of all of them first.
    Changed,
}

/// What [`archive_schedules`] did: each schedule's outcome, in the order asked, and the rows
/// moved in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archival {
    pub schedules: Vec<(i64, ScheduleArchival)>,
    pub moved: MovedRows,
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

/// Moves the seats, `reservation_seats` and reservations of the schedules in
/// `payments_archived` (each named once) into the archive, stamped `now`, and marks them archived — in one
/// transaction, under the locks a settlement or a cancel takes (the reservations, then their
/// seats). A schedule moves only if every reservation is final and they are exactly the
/// `ids` given for it, the reservations whose payments payment-api has archived; the others
/// are left as they are. Idempotent: an archived schedule is left alone.
pub async fn archive_schedules(
    db: &DatabaseConnection,
    payments_archived: &[ScheduleReservations],
    now: DateTime<Utc>,
) -> Result<Archival, DbErr> {
    let asked: Vec<i64> = payments_archived.iter().map(|s| s.schedule_id).collect();
    let mut archival = Archival::default();
    if asked.is_empty() {
        return Ok(archival);
    }
    let txn = db.begin().await?;
    common::db::bound_lock_waits(&txn, LOCK_WAIT).await?;
    let unarchived = archive::lock_unarchived(&txn, &asked).await?;
    let locked = ScheduleReservations::of(
        &unarchived,
        &archive::lock_reservations_and_seats(&txn, &unarchived).await?,
    );
    let locked: BTreeMap<i64, ScheduleReservations> =
        locked.into_iter().map(|s| (s.schedule_id, s)).collect();
    let (mut moving, mut reservations) = (Vec::new(), Vec::new());
    for asked in payments_archived {
        let outcome = match locked.get(&asked.schedule_id) {
            None => ScheduleArchival::AlreadyArchived,
            Some(now_locked) => match verdict(now_locked, &asked.ids) {
                Some(not_now) => not_now,
                None => {
                    moving.push(asked.schedule_id);
                    reservations.extend_from_slice(&now_locked.ids);
                    ScheduleArchival::Archived
                }
            },
        };
        archival.schedules.push((asked.schedule_id, outcome));
    }
    if moving.is_empty() {
        txn.rollback().await?;
        return Ok(archival);
    }
    archival.moved = archive::move_schedules(&txn, &moving, &reservations, now).await?;
    txn.commit().await?;
    Ok(archival)
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

/// After a large backlog was archived: the hot tables' dead rows (a deleted row stays in the
/// table and its indexes until a vacuum) cleared and every table's statistics brought up to
/// date, now rather than by autovacuum in the middle of the next sale. Answers the tables.
pub async fn vacuum_after_archival(
    db: &DatabaseConnection,
) -> Result<&'static [&'static str], DbErr> {
    archive::vacuum(db).await?;
    Ok(&archive::TABLES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(list: &[(i64, ReservationStatus)]) -> ScheduleReservations {
        let states: Vec<_> = list
            .iter()
            .map(|&(id, status)| ReservationState {
                id,
                schedule_id: 7,
                status,
            })
            .collect();
        ScheduleReservations::of(&[7], &states).remove(0)
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

    #[test]
    fn reservations_are_sorted_to_their_schedules_in_the_order_asked() {
        use ReservationStatus::*;
        let r = |id, schedule_id, status| ReservationState {
            id,
            schedule_id,
            status,
        };
        let states = [
            r(1, 9, Confirmed),
            r(2, 4, Held),
            r(3, 9, Expired),
            r(4, 5, Held),
        ];
        let of = ScheduleReservations::of(&[9, 4, 6, 9], &states);
        let summary: Vec<_> = of
            .iter()
            .map(|s| (s.schedule_id, s.ids.clone(), s.held))
            .collect();
        assert_eq!(
            summary,
            [(9, vec![1, 3], 0), (4, vec![2], 1), (6, vec![], 0)],
            "a schedule nobody booked is there, empty; one not asked for is not"
        );
    }
}
