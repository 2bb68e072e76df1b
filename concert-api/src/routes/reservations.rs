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
    responses((status = 201, body = ReservationView), (status = 400), (status = 401), (status = 404),
        (status = 409, description = "SEAT_UNAVAILABLE or BOOKING_CLOSED")))]
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

#[derive(Serialize, ToSchema)]
pub struct ReservationList {
    items: Vec<ReservationView>,
}

#[utoipa::path(get, path = "/api/reservations", responses((status = 200, body = ReservationList), (status = 401)))]
pub async fn list(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let rows = reservations::list_for_user(&state.db, user.id, LISTED).await?;
    let now = state.clock.now();
    let items = rows.into_iter().map(|r| state.view(r, now)).collect();
    Ok(HttpResponse::Ok().json(ReservationList { items }))
}

#[utoipa::path(get, path = "/api/reservations/{id}", responses((status = 200, body = ReservationView), (status = 404)))]
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

#[utoipa::path(delete, path = "/api/reservations/{id}",
    responses((status = 200, body = ReservationView), (status = 404), (status = 409, description = "NOT_CANCELLABLE: not a live hold")))]
pub async fn cancel(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let cancelled = state.office.cancel(user.id, id.into_inner(), now).await?;
    Ok(HttpResponse::Ok().json(state.view(cancelled, now)))
}
