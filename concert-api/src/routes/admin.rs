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
    responses((status = 201, body = Concert), (status = 400), (status = 401), (status = 403)))]
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
    responses((status = 201, body = Schedule), (status = 400), (status = 401), (status = 403), (status = 404)))]
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
