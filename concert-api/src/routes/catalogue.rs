//! Public catalogue: concerts and their schedules (cached), and the seat map (session +
//! active queue token for the schedule's concert).

use actix_web::{HttpResponse, web};
use chrono::Utc;
use common::ApiError;
use common::auth::ActiveQueuePass;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::catalogue::{
    PageQuery, concert_cursor, parse_concert_cursor, parse_schedule_cursor, schedule_cursor,
};
use crate::routes::AppState;
use crate::store::catalogue::{self, Concert, Schedule};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/concerts", web::get().to(list_concerts))
        .route("/api/concerts/{id}", web::get().to(get_concert))
        .route(
            "/api/concerts/{id}/schedules",
            web::get().to(list_schedules),
        )
        .route("/api/schedules/{id}/seats", web::get().to(seat_map));
}

#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

/// Serves `what` from the cache, or computes it, caches it and serves it.
async fn cached<F, Fut>(
    state: &AppState,
    what: String,
    compute: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String, ApiError>>,
{
    let (hit, version) = state.cache.get(&what).await;
    let body = match hit {
        Some(body) => body,
        None => {
            let body = compute().await?;
            state.cache.put(&version, &what, &body).await;
            body
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

fn to_json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(ApiError::internal)
}

fn concert_not_found(id: i64) -> ApiError {
    ApiError::not_found("CONCERT_NOT_FOUND", format!("concert {id} does not exist"))
}

#[utoipa::path(get, path = "/api/concerts", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<Concert>), (status = 400)))]
pub async fn list_concerts(
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit()?;
    let after = q
        .cursor
        .as_deref()
        .map(parse_concert_cursor)
        .transpose()?
        .unwrap_or(0);
    cached(&state, format!("concerts:{after}:{limit}"), || async {
        let mut items = catalogue::list_concerts(&state.db, after, limit).await?;
        let next_cursor = (items.len() as u64 > limit).then(|| {
            items.truncate(limit as usize);
            concert_cursor(items.last().map_or(after, |c| c.id))
        });
        to_json(&Page { items, next_cursor })
    })
    .await
}

#[utoipa::path(get, path = "/api/concerts/{id}", responses((status = 200, body = Concert), (status = 404)))]
pub async fn get_concert(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    cached(&state, format!("concert:{id}"), || async {
        let concert = catalogue::find_concert(&state.db, id)
            .await?
            .ok_or_else(|| concert_not_found(id))?;
        to_json(&concert)
    })
    .await
}

#[utoipa::path(get, path = "/api/concerts/{id}/schedules",
    params(("available" = Option<bool>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<Schedule>), (status = 400), (status = 404)))]
pub async fn list_schedules(
    state: web::Data<AppState>,
    id: web::Path<i64>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let concert_id = id.into_inner();
    let limit = q.limit()?;
    let after = q.cursor.as_deref().map(parse_schedule_cursor).transpose()?;
    let only_available = q.available.unwrap_or(false);
    let what = format!(
        "schedules:{concert_id}:{only_available}:{}:{limit}",
        q.cursor.as_deref().unwrap_or("")
    );
    cached(&state, what, || async {
        catalogue::find_concert(&state.db, concert_id)
            .await?
            .ok_or_else(|| concert_not_found(concert_id))?;
        let now = Utc::now();
        let mut items = catalogue::list_schedules(
            &state.db,
            concert_id,
            only_available,
            after,
            limit,
            now,
            state.stale_before(now),
        )
        .await?;
        let next_cursor = (items.len() as u64 > limit).then(|| {
            items.truncate(limit as usize);
            let last = items.last().expect("a full page has a last item");
            schedule_cursor(last.starts_at, last.id)
        });
        to_json(&Page { items, next_cursor })
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub struct SeatView {
    seat_no: i32,
    price: i64,
    status: String,
}

#[derive(Serialize, ToSchema)]
pub struct SeatMap {
    schedule_id: i64,
    seats: Vec<SeatView>,
}

pub fn schedule_not_found(id: i64) -> ApiError {
    ApiError::not_found(
        "SCHEDULE_NOT_FOUND",
        format!("schedule {id} does not exist"),
    )
}

#[utoipa::path(get, path = "/api/schedules/{id}/seats",
    responses((status = 200, body = SeatMap), (status = 401), (status = 404)))]
pub async fn seat_map(
    state: web::Data<AppState>,
    pass: ActiveQueuePass,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let schedule_id = id.into_inner();
    let facts = state
        .schedule(schedule_id)
        .await?
        .ok_or_else(|| schedule_not_found(schedule_id))?;
    pass.require_concert(facts.concert_id)?;
    let seats = catalogue::seat_map(&state.db, schedule_id, state.stale_before(Utc::now())).await?;
    Ok(HttpResponse::Ok().json(SeatMap {
        schedule_id,
        seats: seats
            .into_iter()
            .map(|s| SeatView {
                seat_no: s.seat_no,
                price: s.price,
                status: s.status,
            })
            .collect(),
    }))
}
