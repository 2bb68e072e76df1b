//! The box office: holds seats, cancels holds and shows the seat map (DESIGN §2 step 5,
//! "Cancel"), deciding by the hold policy against the concert DB and the memories in front
//! of it — the facts of known schedules, the seats just seen taken and the maps just read.

use chrono::{DateTime, Utc};
use common::ApiError;
use common::auth::ActiveQueuePass;
use common::error::{Code, ErrorCode};
use common::held::{HeldNote, HoldBoard};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};

use crate::domain::hold::{SaleError, ValidHold, check_booking_open};
use crate::domain::idempotency::{Answer, KeyedRequest, judge};
use crate::domain::policy::HoldPolicy;
use crate::domain::reservation::{Reservation, ReservationView};
use crate::domain::status::{ReservationStatus, SeatStatus};
use crate::error::{Catalogued, ConcertCode};
use crate::store::catalogue::{self, ScheduleFacts, SeatRow};
use crate::store::confirmed::ConfirmedReservations;
use crate::store::holds::{self, Claim, NewHold};
use crate::store::idempotency;
use crate::store::inventory::{Change, Inventory};
use crate::store::known_schedules::KnownSchedules;
use crate::store::seat_maps::SeatMaps;
use crate::store::taken_seats::TakenSeats;
use crate::store::{cancel, reservations};

/// What a hold request came to, when it was not refused.
#[derive(Debug)]
pub enum HoldOutcome {
    /// This request's own hold.
    Held(Reservation),
    /// A retry's: the first request's answer with this key, as it was given.
    Replay(Answer),
}

pub struct BoxOffice {
    pub db: DatabaseConnection,
    pub policy: HoldPolicy,
    pub inventory: Inventory,
    /// Reservations seen CONFIRMED, filled by the settlement too.
    pub confirmed: ConfirmedReservations,
    schedules: KnownSchedules,
    taken: TakenSeats,
    maps: SeatMaps,
    /// Where payment-api reads live holds without asking us (`common::held`).
    board: HoldBoard,
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
    /// The hold's note could not be taken down, so the cancel did not happen.
    #[error("the hold board cannot be reached: {0}")]
    Board(#[from] redis::RedisError),
}

impl ReservationError {
    fn catalogued(&self) -> Catalogued {
        match self {
            Self::NotFound => Code::NotFound.into(),
            Self::NotCancellable(_) => ConcertCode::NotCancellable.into(),
            Self::Store(e) => common::error::db_code(e).into(),
            Self::Board(_) => Code::DependencyUnavailable.into(),
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
    pub fn new(
        db: DatabaseConnection,
        policy: HoldPolicy,
        clock: common::clock::Clock,
        inventory: Inventory,
        board: HoldBoard,
    ) -> Self {
        Self {
            inventory,
            confirmed: ConfirmedReservations::default(),
            schedules: KnownSchedules::new(db.clone()),
            taken: TakenSeats::new(clock.clone()),
            maps: SeatMaps::new(clock),
            board,
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
    /// seat free only because its hold is dead is taken over. Everything from the buyer's
    /// limit to the reservation runs under the buyer's lock ([`holds::claim_free`]): the
    /// common hold is one call on the pool, its own transaction; a takeover, or a request with
    /// an `Idempotency-Key` (claimed first, its answer kept with it), is one transaction
    /// around it. Seat counts move after the commit.
    pub async fn hold_seats(
        &self,
        pass: &ActiveQueuePass,
        request: ValidHold,
        now: DateTime<Utc>,
        keyed: Option<&KeyedRequest<'_>>,
    ) -> Result<HoldOutcome, ApiError> {
        let schedule = self.schedule_for(pass, request.schedule_id).await?;
        request.check_seats_exist(&schedule)?;
        check_booking_open(&schedule, now)?;
        // Losers of a race for a hot seat are turned away from memory — but not a keyed
        // request, which may be the retry of the very hold that took them.
        if keyed.is_none() {
            let recent = self.taken.recently_taken(schedule.id, &request.seat_nos);
            if !recent.is_empty() {
                return Err(SaleError::SeatsUnavailable(recent).into());
            }
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
        let outcome = match keyed {
            None => match holds::claim_free(&self.db, hold).await? {
                Claim::FreeByTakeover => {
                    let txn = self.db.begin().await?;
                    let outcome = outcome_of(claim_or_take_over(&txn, hold, now).await?, &seat_nos);
                    if outcome.is_ok() {
                        txn.commit().await?;
                    } else {
                        txn.rollback().await?;
                    }
                    outcome
                }
                claim => outcome_of(claim, &seat_nos),
            },
            Some(k) => {
                let txn = self.db.begin().await?;
                if let Some(answer) =
                    judge(idempotency::claim(&txn, k.user_id, k.key, &k.request).await?)?
                {
                    return Ok(HoldOutcome::Replay(answer));
                }
                let claim = claim_or_take_over(&txn, hold, now).await?;
                let aborted = matches!(claim, Claim::Refused(_) | Claim::FreeByTakeover);
                let outcome = outcome_of(claim, &seat_nos);
                if aborted {
                    // Nothing can be kept: a retry is processed afresh.
                    txn.rollback().await?;
                } else {
                    let answer = match &outcome {
                        Ok((r, _)) => Answer::created(
                            serde_json::to_value(ReservationView::at(
                                r.clone(),
                                self.policy.stale_before(now),
                            ))
                            .map_err(ApiError::internal)?,
                        ),
                        Err(refusal) => {
                            Answer::refused(&ApiError::from(SaleError::clone_refusal(refusal)))
                        }
                    };
                    idempotency::record(
                        &txn,
                        k.user_id,
                        k.key,
                        answer.status.as_u16(),
                        &answer.body,
                    )
                    .await?;
                    txn.commit().await?;
                }
                outcome
            }
        };
        match outcome {
            Ok((r, from_available)) => {
                self.taken.remember(schedule.id, &seat_nos);
                let note = HeldNote {
                    reservation_id: r.id,
                    user_id: r.user_id,
                    concert_id: r.concert_id,
                    amount: r.amount,
                    held_until: r.held_until,
                };
                // Both after the commit, sent together; a note that cannot be pinned only
                // makes payment-api ask us.
                let (_, pinned) = tokio::join!(
                    self.inventory
                        .apply(Change::held(r.concert_id, r.schedule_id, from_available)),
                    self.board.pin(&note, now)
                );
                if let Err(e) = pinned {
                    tracing::warn!(error = %e, reservation_id = r.id, "hold note not pinned");
                }
                Ok(HoldOutcome::Held(r))
            }
            Err(refusal) => {
                if let SaleError::SeatsUnavailable(seats) = &refusal {
                    self.taken.remember(schedule.id, seats);
                }
                Err(refusal.into())
            }
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
        let (cancelled, freed) = cancel::cancel(&txn, id).await?;
        // Down before the commit: once the hold is cancelled, no note says it is held.
        self.board.take_down(id).await?;
        txn.commit().await?;
        self.inventory
            .apply(Change::freed(
                cancelled.concert_id,
                cancelled.schedule_id,
                freed,
            ))
            .await;
        // Freed here: nobody should be refused them from memory.
        self.taken
            .forget(cancelled.schedule_id, &cancelled.seat_nos);
        Ok(cancelled)
    }

    /// The seat map of schedule `id` at `now`, for a pass to its concert: read at most
    /// [`crate::store::seat_maps::FRESH_FOR`] ago, with the seats this process has seen taken
    /// since.
    pub async fn seat_map(
        &self,
        pass: &ActiveQueuePass,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<SeatRow>, SaleError> {
        self.schedule_for(pass, id).await?;
        let stale_before = self.policy.stale_before(now);
        let map = self
            .maps
            .get_or_read(id, || catalogue::seat_map(&self.db, id, stale_before))
            .await?;
        // The map may be a moment old: what this process has seen taken since shows too.
        let free: Vec<i32> = map
            .iter()
            .filter(|s| s.status == SeatStatus::Available)
            .map(|s| s.seat_no)
            .collect();
        let taken: std::collections::HashSet<i32> =
            self.taken.recently_taken(id, &free).into_iter().collect();
        Ok(map
            .iter()
            .map(|s| SeatRow {
                status: if taken.contains(&s.seat_no) {
                    SeatStatus::Held
                } else {
                    s.status
                },
                ..s.clone()
            })
            .collect())
    }

    /// `user_id`'s own reservation `id` (someone else's reads as missing).
    pub async fn reservation_of(
        &self,
        user_id: i64,
        id: i64,
    ) -> Result<Reservation, ReservationError> {
        let found = match self.confirmed.get(id) {
            kept @ Some(_) => kept,
            None => reservations::find(&self.db, id)
                .await?
                .inspect(|r| self.confirmed.keep(r)),
        };
        found
            .filter(|r| r.user_id == user_id)
            .ok_or(ReservationError::NotFound)
    }
}

/// The claim inside a hold's transaction: the common one ([`holds::claim_free`], which takes
/// the buyer's lock for the rest of the transaction), and the takeover of seats free only
/// because their hold is dead.
async fn claim_or_take_over(
    txn: &DatabaseTransaction,
    hold: NewHold<'_>,
    now: DateTime<Utc>,
) -> Result<Claim, DbErr> {
    match holds::claim_free(txn, hold).await? {
        Claim::FreeByTakeover => holds::claim_with_takeover(txn, hold, now).await,
        claim => Ok(claim),
    }
}

/// A claim of `seat_nos` as the hold's answer: the reservation and how many of its seats
/// were AVAILABLE, or the refusal.
fn outcome_of(claim: Claim, seat_nos: &[i32]) -> Result<(Reservation, i64), SaleError> {
    match claim {
        Claim::Held {
            reservation,
            from_available,
        } => Ok((reservation, from_available)),
        Claim::Taken(seats) | Claim::Refused(seats) => Err(SaleError::SeatsUnavailable(seats)),
        Claim::OverLimit { limit, owned } => Err(SaleError::PurchaseLimit {
            limit,
            remaining: (limit - owned).max(0),
        }),
        // The takeover path claims or refuses; it never sends us back to itself.
        Claim::FreeByTakeover => Err(SaleError::SeatsUnavailable(seat_nos.to_vec())),
    }
}
