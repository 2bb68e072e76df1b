//! The box office: holds seats, cancels holds and shows the seat map (DESIGN §2 step 5,
//! "Cancel"), deciding by the hold policy against the concert DB and the two memories in
//! front of it — the facts of known schedules and the seats just seen taken.

use chrono::{DateTime, Utc};
use common::auth::ActiveQueuePass;
use common::error::{Code, ErrorCode};
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use crate::domain::hold::{SaleError, ValidHold, check_booking_open};
use crate::domain::policy::HoldPolicy;
use crate::domain::reservation::Reservation;
use crate::domain::status::ReservationStatus;
use crate::error::{Catalogued, ConcertCode};
use crate::store::catalogue::{self, ScheduleFacts, SeatRow};
use crate::store::holds::{self, Claim, NewHold};
use crate::store::known_schedules::KnownSchedules;
use crate::store::taken_seats::TakenSeats;
use crate::store::{cancel, reservations};

pub struct BoxOffice {
    pub db: DatabaseConnection,
    pub policy: HoldPolicy,
    schedules: KnownSchedules,
    taken: TakenSeats,
}

/// Why an owner could not read or cancel a reservation.
#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    /// Unknown and someone else's look the same: existence is not revealed.
    #[error("no such reservation")]
    NotFound,
    /// Only a live hold can be cancelled; this is the status its owner sees.
    #[error("only a held reservation can be cancelled; this one is {0}")]
    NotCancellable(ReservationStatus),
    #[error(transparent)]
    Store(#[from] DbErr),
}

impl ReservationError {
    fn catalogued(&self) -> Catalogued {
        match self {
            Self::NotFound => Code::NotFound.into(),
            Self::NotCancellable(_) => ConcertCode::NotCancellable.into(),
            Self::Store(_) => Code::Internal.into(),
        }
    }
}

impl ErrorCode for ReservationError {
    fn status(&self) -> actix_web::http::StatusCode {
        self.catalogued().status()
    }
    fn code(&self) -> &'static str {
        self.catalogued().code()
    }
}

impl BoxOffice {
    pub fn new(db: DatabaseConnection, policy: HoldPolicy, clock: common::clock::Clock) -> Self {
        Self {
            schedules: KnownSchedules::new(db.clone()),
            taken: TakenSeats::new(clock),
            db,
            policy,
        }
    }

    /// Schedule `id`, if the pass admits its holder to its concert's sale.
    async fn schedule_for(
        &self,
        pass: &ActiveQueuePass,
        id: i64,
    ) -> Result<ScheduleFacts, SaleError> {
        let schedule = self
            .schedules
            .get(id)
            .await?
            .ok_or(SaleError::ScheduleNotFound(id))?;
        if schedule.concert_id != pass.concert_id {
            return Err(SaleError::NotAdmitted);
        }
        Ok(schedule)
    }

    /// Holds the requested seats for the pass's holder at `now`: all of them or none, in the
    /// order of checks of API.md. A seat seen taken a moment ago is refused from memory; a
    /// seat free only because its hold is dead is taken over in a short transaction.
    pub async fn hold_seats(
        &self,
        pass: &ActiveQueuePass,
        request: ValidHold,
        now: DateTime<Utc>,
    ) -> Result<Reservation, SaleError> {
        let schedule = self.schedule_for(pass, request.schedule_id).await?;
        request.check_seats_exist(&schedule)?;
        check_booking_open(&schedule, now)?;
        // Losers of a race for a hot seat are turned away from memory.
        let recent = self.taken.recently_taken(schedule.id, &request.seat_nos);
        if !recent.is_empty() {
            return Err(SaleError::SeatsUnavailable(recent));
        }
        let mut seat_nos = request.seat_nos;
        seat_nos.sort_unstable();
        let hold = NewHold {
            user_id: pass.user_id,
            schedule: &schedule,
            seat_nos: &seat_nos,
            held_until: self.policy.held_until(now),
            stale_before: self.policy.stale_before(now),
        };
        let claim = match holds::claim_free(&self.db, hold).await? {
            Claim::FreeByTakeover => holds::claim_with_takeover(&self.db, hold, now).await?,
            claim => claim,
        };
        match claim {
            Claim::Held(r) => {
                self.taken.remember(schedule.id, &seat_nos);
                Ok(r)
            }
            Claim::Taken(seats) => {
                self.taken.remember(schedule.id, &seats);
                Err(SaleError::SeatsUnavailable(seats))
            }
            // The takeover path claims or refuses; it never sends us back to itself.
            Claim::FreeByTakeover => Err(SaleError::SeatsUnavailable(seat_nos)),
        }
    }

    /// Cancels `user_id`'s live hold `id` at `now`: its seats are free at once, for everyone.
    pub async fn cancel(
        &self,
        user_id: i64,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Reservation, ReservationError> {
        let txn = self.db.begin().await?;
        let held = cancel::lock_own(&txn, id, user_id)
            .await?
            .ok_or(ReservationError::NotFound)?;
        let status = held.status_seen(self.policy.stale_before(now));
        if status != ReservationStatus::Held {
            return Err(ReservationError::NotCancellable(status));
        }
        let cancelled = cancel::cancel(&txn, id).await?;
        txn.commit().await?;
        // Freed here: nobody should be refused them from memory.
        self.taken
            .forget(cancelled.schedule_id, &cancelled.seat_nos);
        Ok(cancelled)
    }

    /// The seat map of schedule `id` at `now`, for a pass to its concert.
    pub async fn seat_map(
        &self,
        pass: &ActiveQueuePass,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<SeatRow>, SaleError> {
        self.schedule_for(pass, id).await?;
        Ok(catalogue::seat_map(&self.db, id, self.policy.stale_before(now)).await?)
    }

    /// `user_id`'s own reservation `id` (someone else's reads as missing).
    pub async fn reservation_of(
        &self,
        user_id: i64,
        id: i64,
    ) -> Result<Reservation, ReservationError> {
        reservations::find(&self.db, id)
            .await?
            .filter(|r| r.user_id == user_id)
            .ok_or(ReservationError::NotFound)
    }
}
