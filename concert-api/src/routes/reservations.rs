//! Holds: create (session + active queue token), list, read, cancel.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use common::ApiError;
use common::auth::{ActiveQueuePass, AuthUser};
use common::http::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::reservation::{HoldRequest, ReservationView, check_booking_open};
use crate::routes::AppState;
use crate::routes::catalogue::schedule_not_found;
use crate::store::reservations::{self, CancelOutcome, HoldOutcome};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/reservations", web::post().to(create))
        .route("/api/reservations", web::get().to(list))
        .route("/api/reservations/{id}", web::get().to(get))
        .route("/api/reservations/{id}", web::delete().to(cancel));
}

fn seats_unavailable(seats: Vec<i32>) -> ApiError {
    let list = seats
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    ApiError::conflict("SEAT_UNAVAILABLE", format!("seats not available: {list}"))
        .with_extension("seat_nos", serde_json::json!(seats))
}

/// Unknown and someone else's look the same: existence is not revealed.
fn not_found() -> ApiError {
    ApiError::not_found("NOT_FOUND", "no such reservation")
}

#[utoipa::path(post, path = "/api/reservations", request_body = HoldRequest,
    responses((status = 201, body = ReservationView), (status = 400), (status = 401), (status = 404),
        (status = 409, description = "SEAT_UNAVAILABLE or BOOKING_CLOSED")))]
pub async fn create(
    state: web::Data<AppState>,
    pass: ActiveQueuePass,
    body: Json<HoldRequest>,
) -> Result<HttpResponse, ApiError> {
    let hold = body.into_inner().validate(state.rules.max_seats)?;
    let schedule = state
        .schedule(hold.schedule_id)
        .await?
        .ok_or_else(|| schedule_not_found(hold.schedule_id))?;
    pass.require_concert(schedule.concert_id)?;
    hold.check_seats_exist(&schedule)?;
    let now = Utc::now();
    check_booking_open(&schedule, now)?;
    let stale_before = state.stale_before(now);
    // Losers of a race for a hot seat are turned away from memory.
    let recent = state.recently_taken(schedule.id, &hold.seat_nos);
    if !recent.is_empty() {
        return Err(seats_unavailable(recent));
    }
    let outcome = reservations::hold(
        &state.db,
        pass.user_id,
        &schedule,
        &hold.seat_nos,
        state.hold_until(now),
        stale_before,
    )
    .await?;
    match outcome {
        HoldOutcome::Held(row) => {
            state.remember_taken(schedule.id, &hold.seat_nos);
            Ok(HttpResponse::Created().json(ReservationView::at(row, stale_before)))
        }
        HoldOutcome::Unavailable(seats) => {
            state.remember_taken(schedule.id, &seats);
            Err(seats_unavailable(seats))
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReservationList {
    items: Vec<ReservationView>,
}

#[utoipa::path(get, path = "/api/reservations", responses((status = 200, body = ReservationList), (status = 401)))]
pub async fn list(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let stale_before = state.stale_before(Utc::now());
    let rows = reservations::list_for_user(&state.db, user.id, 200).await?;
    Ok(HttpResponse::Ok().json(ReservationList {
        items: rows
            .into_iter()
            .map(|r| ReservationView::at(r, stale_before))
            .collect(),
    }))
}

#[utoipa::path(get, path = "/api/reservations/{id}", responses((status = 200, body = ReservationView), (status = 404)))]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let row = reservations::find(&state.db, id.into_inner())
        .await?
        .filter(|r| r.user_id == user.id)
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(ReservationView::at(row, state.stale_before(Utc::now()))))
}

#[utoipa::path(delete, path = "/api/reservations/{id}",
    responses((status = 200, body = ReservationView), (status = 404), (status = 409, description = "NOT_CANCELLABLE")))]
pub async fn cancel(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let stale_before = state.stale_before(Utc::now());
    match reservations::cancel(&state.db, user.id, id.into_inner(), stale_before).await? {
        CancelOutcome::Cancelled(row) => {
            // Its seats are free this moment, for the canceller and everyone else.
            state.forget_taken(row.schedule_id, &row.seat_nos);
            Ok(HttpResponse::Ok().json(ReservationView::at(row, stale_before)))
        }
        CancelOutcome::NotFound => Err(not_found()),
        CancelOutcome::NotCancellable(status) => Err(ApiError::conflict(
            "NOT_CANCELLABLE",
            format!("only a held reservation can be cancelled; this one is {status}"),
        )),
    }
}
