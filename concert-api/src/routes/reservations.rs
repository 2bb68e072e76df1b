//! Holds: create (session + active queue token), list, read, cancel.

use actix_web::{HttpResponse, web};
use common::ApiError;
use common::auth::{ActiveQueuePass, AuthUser};
use common::http::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::hold::HoldRequest;
use crate::domain::reservation::ReservationView;
use crate::routes::AppState;
use crate::store::reservations;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/reservations", web::post().to(create))
        .route("/api/reservations", web::get().to(list))
        .route("/api/reservations/{id}", web::get().to(get))
        .route("/api/reservations/{id}", web::delete().to(cancel));
}

/// The newest this many of a user's reservations are listed.
const LISTED: u64 = 200;

#[utoipa::path(post, path = "/api/reservations", request_body = HoldRequest,
    security(("bearer" = [], "queue_token" = [])),
    responses(
        (status = 201, description = "the hold (HELD until `held_until`)", body = ReservationView),
        (status = 400, description = "`INVALID_REQUEST`: a malformed body, `schedule_id` under 1, not 1 to 4 distinct seat numbers of 1 or more, or a seat the schedule does not have; the detail names the field"),
        (status = 401, description = "`UNAUTHENTICATED`: no valid session; or `QUEUE_TOKEN_INVALID`: the pass is missing, unknown, another user's, still waiting, expired, or for another concert than the schedule's (the detail says which)"),
        (status = 404, description = "`SCHEDULE_NOT_FOUND`: no such schedule"),
        (status = 409, description = "`SEAT_UNAVAILABLE`: some seats are taken (all or none are held); the problem's `seat_nos` lists them. \
            `BOOKING_CLOSED`: booking has not opened yet or the show has started (the detail says which)"),
        (status = 429, description = "`HOLD_RATE_LIMITED` (the gateway): too many holds and cancels with this session token"),
    ))]
pub async fn create(
    state: web::Data<AppState>,
    pass: ActiveQueuePass,
    body: Json<HoldRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner().validate(state.office.policy.max_seats)?;
    let now = state.clock.now();
    let held = state.office.hold_seats(&pass, request, now).await?;
    Ok(HttpResponse::Created().json(state.view(held, now)))
}

/// The caller's own reservations, newest first, at most 200.
#[derive(Serialize, ToSchema)]
pub struct ReservationList {
    items: Vec<ReservationView>,
}

#[utoipa::path(get, path = "/api/reservations", security(("bearer" = [])),
    responses((status = 200, description = "the caller's reservations, newest first, at most 200", body = ReservationList)))]
pub async fn list(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let rows = reservations::list_for_user(&state.db, user.id, LISTED).await?;
    let now = state.clock.now();
    let items = rows.into_iter().map(|r| state.view(r, now)).collect();
    Ok(HttpResponse::Ok().json(ReservationList { items }))
}

#[utoipa::path(get, path = "/api/reservations/{id}", security(("bearer" = [])),
    params(("id" = i64, Path, description = "the reservation's id")),
    responses(
        (status = 200, description = "the reservation (a hold past its end plus grace reads EXPIRED)", body = ReservationView),
        (status = 404, description = "`NOT_FOUND`: no such reservation, or another user's (which is not said)"),
    ))]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let r = state
        .office
        .reservation_of(user.id, id.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(state.view(r, state.clock.now())))
}

#[utoipa::path(delete, path = "/api/reservations/{id}", security(("bearer" = [])),
    params(("id" = i64, Path, description = "the reservation's id")),
    responses(
        (status = 200, description = "the reservation, now CANCELLED; its seats are free at once", body = ReservationView),
        (status = 404, description = "`NOT_FOUND`: no such reservation, or another user's (which is not said)"),
        (status = 409, description = "`NOT_CANCELLABLE`: not a live hold (the detail names its status)"),
        (status = 429, description = "`HOLD_RATE_LIMITED` (the gateway): too many holds and cancels with this session token"),
    ))]
pub async fn cancel(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let cancelled = state.office.cancel(user.id, id.into_inner(), now).await?;
    Ok(HttpResponse::Ok().json(state.view(cancelled, now)))
}
