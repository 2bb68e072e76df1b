//! Admin: create concerts and schedules (a schedule creates its seats). Every write makes
//! the cached public lists stale at once.

use actix_web::{HttpResponse, web};
use common::ApiError;
use common::auth::AuthUser;
use common::http::Json;

use crate::domain::catalogue::{self, NewConcertRequest, NewScheduleRequest};
use crate::routes::AppState;
use crate::store::catalogue::{Concert, Schedule, insert_concert};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/concerts", web::post().to(create_concert))
        .route(
            "/api/admin/concerts/{id}/schedules",
            web::post().to(create_schedule),
        );
}

#[utoipa::path(post, path = "/api/admin/concerts", request_body = NewConcertRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "the new concert", body = Concert),
        (status = 400, description = "`INVALID_REQUEST`: a malformed body, or a `title` or `performer` that is not 1 to 200 characters once trimmed; the detail names the field"),
        (status = 403, description = "`FORBIDDEN`: the session's role is not ADMIN"),
    ))]
pub async fn create_concert(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Json<NewConcertRequest>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let (title, performer) = body.into_inner().validate()?;
    let concert = insert_concert(&state.db, &title, &performer).await?;
    state.catalogue.invalidate().await;
    Ok(HttpResponse::Created().json(concert))
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
    let schedule = catalogue::add_schedule(&state.db, &new).await?;
    state.catalogue.invalidate().await;
    Ok(HttpResponse::Created().json(schedule))
}
