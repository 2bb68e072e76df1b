//! Admin: create concerts and schedules (a schedule creates its seats).

use actix_web::{HttpResponse, web};
use common::ApiError;
use common::auth::AuthUser;
use common::http::Json;

use crate::domain::catalogue::{NewConcertRequest, NewScheduleRequest};
use crate::routes::AppState;
use crate::store::catalogue::{self, Concert, Schedule};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/concerts", web::post().to(create_concert))
        .route(
            "/api/admin/concerts/{id}/schedules",
            web::post().to(create_schedule),
        );
}

async fn invalidate(state: &AppState) {
    if let Err(e) = state.cache.invalidate().await {
        // Lists catch up when their short TTL runs out.
        tracing::warn!(error = %e, "catalogue cache invalidation failed");
    }
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
    let concert = catalogue::insert_concert(&state.db, &title, &performer).await?;
    invalidate(&state).await;
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
    let concert_id = id.into_inner();
    let new = body.into_inner().validate(concert_id)?;
    catalogue::find_concert(&state.db, concert_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "CONCERT_NOT_FOUND",
                format!("concert {concert_id} does not exist"),
            )
        })?;
    let schedule = catalogue::insert_schedule(&state.db, &new).await?;
    invalidate(&state).await;
    Ok(HttpResponse::Created().json(schedule))
}
