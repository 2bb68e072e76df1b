//! A concert's waiting room as a whole: the public view, and the organiser's live controls
//! (DESIGN §10). Every change is persisted in `queue_rooms` with its `admin_audit` row, in
//! one transaction, and logged.

use actix_web::{HttpResponse, web};
use common::ApiError;
use common::auth::AuthUser;
use common::http::Json;

use crate::domain::queue::{Actor, RoomSettingsPatch, WaitingRoomPublic, WaitingRoomView};
use crate::routes::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/queue/concerts/{id}", web::get().to(public_view))
        .route("/api/admin/queue/concerts/{id}", web::get().to(admin_view))
        .route("/api/admin/queue/concerts/{id}", web::patch().to(update));
}

#[utoipa::path(get, path = "/api/queue/concerts/{id}",
    params(("id" = i64, Path, description = "the concert's id")),
    responses(
        (status = 200, description = "the room's state, its lottery and its line's figures", body = WaitingRoomPublic),
        (status = 400, description = "`INVALID_REQUEST`: an id that is not an integer"),
        (status = 404, description = "`CONCERT_NOT_FOUND`: concert-api knows no such concert"),
        (status = 503, description = "`DEPENDENCY_UNAVAILABLE`: concert-api or Redis cannot answer right now, or the database cannot while the room's settings are restored after Redis lost them",
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn public_view(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    state.concerts.require(id).await?;
    let view = state.room.view(id).await?;
    Ok(HttpResponse::Ok().json(view.public))
}

#[utoipa::path(get, path = "/api/admin/queue/concerts/{id}", security(("bearer" = [])),
    params(("id" = i64, Path, description = "the concert's id")),
    responses(
        (status = 200, description = "the room's settings in effect and its figures", body = WaitingRoomView),
        (status = 400, description = "`INVALID_REQUEST`: an id that is not an integer"),
        (status = 401, description = "`UNAUTHENTICATED`: no valid session"),
        (status = 403, description = "`FORBIDDEN`: the session's role is not ADMIN"),
        (status = 404, description = "`CONCERT_NOT_FOUND`: concert-api knows no such concert"),
        (status = 503, description = "`DEPENDENCY_UNAVAILABLE`: concert-api or Redis cannot answer right now, or the database cannot while the room's settings are restored after Redis lost them",
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn admin_view(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let id = id.into_inner();
    state.concerts.require(id).await?;
    Ok(HttpResponse::Ok().json(state.room.view(id).await?))
}

#[utoipa::path(patch, path = "/api/admin/queue/concerts/{id}", request_body = RoomSettingsPatch,
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "the concert's id")),
    responses(
        (status = 200, description = "the room after the change, effective at the next admission tick", body = WaitingRoomView),
        (status = 400, description = "`INVALID_REQUEST`: a malformed body, no field, an unknown field, `state` not OPEN or PAUSED, `max_active` out of 1 to 100000, `admit_per_tick` out of 1 to 10000, or `sale_opens_at` not in the future; the detail names the field"),
        (status = 401, description = "`UNAUTHENTICATED`: no valid session"),
        (status = 403, description = "`FORBIDDEN`: the session's role is not ADMIN"),
        (status = 404, description = "`CONCERT_NOT_FOUND`: concert-api knows no such concert"),
        (status = 409, description = "`LOTTERY_DRAWN`: the pre-queue was drawn, `sale_opens_at` cannot change"),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: a `Content-Type` that is not JSON"),
        (status = 503, description = "`DEPENDENCY_UNAVAILABLE`: concert-api, Redis or the database cannot answer right now; nothing was changed",
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn update(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
    body: Json<RoomSettingsPatch>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let id = id.into_inner();
    let patch = body.into_inner();
    patch.validate(state.clock.now())?;
    state.concerts.require(id).await?;
    let actor = Actor {
        id: user.id,
        username: &user.username,
    };
    let (before, after) = state.room.update_settings_by(id, &patch, actor).await?;
    let to_json = |r| serde_json::to_value(r).unwrap_or_default();
    let (before, after) = (to_json(&before), to_json(&after));
    tracing::info!(
        actor_id = user.id,
        actor = %user.username,
        concert_id = id,
        %before,
        %after,
        "admin changed the waiting room's settings"
    );
    Ok(HttpResponse::Ok().json(state.room.view(id).await?))
}
