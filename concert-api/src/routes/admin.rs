//! Admin: create concerts and schedules (a schedule creates its seats), change a concert's
//! per-buyer limit, and watch a sale live. Every change is audited (`admin_audit`) and makes
//! the cached public lists stale at once; seat counts follow in the inventory hashes.

use actix_web::{HttpResponse, web};
use common::ApiError;
use common::auth::AuthUser;
use common::http::Json;

use crate::domain::catalogue::{
    self, Actor, ConcertChangeRequest, NewConcertRequest, NewScheduleRequest,
};
use crate::domain::sale::{self, SaleStats};
use crate::routes::AppState;
use crate::store::catalogue::{Concert, Schedule};
use crate::store::inventory::Change;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/concerts", web::post().to(create_concert))
        .route("/api/admin/concerts/{id}", web::patch().to(update_concert))
        .route(
            "/api/admin/concerts/{id}/schedules",
            web::post().to(create_schedule),
        )
        .route("/api/admin/concerts/{id}/sale", web::get().to(sale_view));
}

fn actor(user: &AuthUser) -> Actor<'_> {
    Actor {
        id: user.id,
        username: &user.username,
    }
}

/// Brings a concert's inventory hashes up to date after an admin change; a failure is
/// logged (the periodic resync repairs it).
async fn resync(state: &AppState, concert_id: i64) {
    if let Err(e) = state.office.inventory.resync(&state.db, concert_id).await {
        tracing::warn!(error = %e, concert_id, "inventory resync failed");
    }
}

#[utoipa::path(post, path = "/api/admin/concerts", request_body = NewConcertRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the new concert", body = Concert),
        (status = 400, description = "`INVALID_REQUEST`: a malformed body, a `title` or `performer` that is not 1 to 200 characters once trimmed, or `max_tickets_per_user` out of 1 to 20; the detail names the field"),
        (status = 403, description = "`FORBIDDEN`: the session's role is not ADMIN"),
    ))]
pub async fn create_concert(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Json<NewConcertRequest>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let new = body.into_inner().validate()?;
    let concert = catalogue::create_concert(&state.db, actor(&user), &new).await?;
    state.catalogue.invalidate().await;
    resync(&state, concert.id).await;
    Ok(HttpResponse::Created().json(concert))
}

#[utoipa::path(patch, path = "/api/admin/concerts/{id}", request_body = ConcertChangeRequest,
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "the concert's id")),
    responses(
        (status = 200, description = "the concert as it now is; the change is in `admin_audit` (before and after)", body = Concert),
        (status = 400, description = "`INVALID_REQUEST`: a malformed body, or `max_tickets_per_user` missing or out of 1 to 20; the detail names the field"),
        (status = 403, description = "`FORBIDDEN`: the session's role is not ADMIN"),
        (status = 404, description = "`CONCERT_NOT_FOUND`: no such concert"),
    ))]
pub async fn update_concert(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
    body: Json<ConcertChangeRequest>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let change = body.into_inner().validate()?;
    let concert =
        catalogue::update_concert(&state.db, actor(&user), id.into_inner(), &change).await?;
    state.catalogue.invalidate().await;
    Ok(HttpResponse::Ok().json(concert))
}

#[utoipa::path(post, path = "/api/admin/concerts/{id}/schedules", request_body = NewScheduleRequest,
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "the concert's id")),
    responses(
        (status = 201, description = "the new schedule; seats 1 to `seat_count` are created, each at `price`", body = Schedule),
        (status = 400, description = "`INVALID_REQUEST`: a malformed body, `seat_count` out of 1 to 1000, `price` out of 1 to 10,000,000, or `booking_opens_at` after `starts_at`; the detail names the field"),
        (status = 403, description = "`FORBIDDEN`: the session's role is not ADMIN"),
        (status = 404, description = "`CONCERT_NOT_FOUND`: no such concert"),
    ))]
pub async fn create_schedule(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
    body: Json<NewScheduleRequest>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let new = body.into_inner().validate(id.into_inner())?;
    let schedule = catalogue::add_schedule(&state.db, actor(&user), &new).await?;
    state.catalogue.invalidate().await;
    let inventory = &state.office.inventory;
    inventory
        .apply(Change::created(
            schedule.concert_id,
            schedule.id,
            i64::from(schedule.seat_count),
        ))
        .await;
    // The concert's hash exists but not yet the schedule's: count it from the database.
    resync(&state, schedule.concert_id).await;
    Ok(HttpResponse::Created().json(schedule))
}

#[utoipa::path(get, path = "/api/admin/concerts/{id}/sale",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "the concert's id")),
    responses(
        (status = 200, description = "the sale as it stands: seat counts from the inventory (exact after every hold, expiry, cancel, rejection and sale); reservations by status, revenue and the last minute's holds and sales as read up to `SALE_VIEW_CACHE_MS` (1 s) before, one read for every organiser polling; cheap enough to poll every second", body = SaleStats),
        (status = 403, description = "`FORBIDDEN`: the session's role is not ADMIN"),
        (status = 404, description = "`CONCERT_NOT_FOUND`: no such concert"),
    ))]
pub async fn sale_view(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let stats = sale::sale_stats(
        &state.db,
        &state.office.inventory,
        &state.sale_view,
        id.into_inner(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(stats))
}
