//! Public catalogue: concerts and their schedules (cached), and the seat map (session +
//! active queue token for the schedule's concert).

use actix_web::{HttpResponse, web};
use common::ApiError;
use common::auth::ActiveQueuePass;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::catalogue::{
    self as rules, PageQuery, concert_cursor, parse_concert_cursor, parse_schedule_cursor,
    schedule_cursor,
};
use crate::domain::status::SeatStatus;
use crate::routes::AppState;
use crate::store::catalogue::{self, Concert, Schedule, SeatRow};

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
    let body = state.catalogue.read_through(&what, compute).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

fn to_json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(ApiError::internal)
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
        to_json(&rules::concert(&state.db, id).await?)
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
        rules::concert(&state.db, concert_id).await?;
        let now = state.clock.now();
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
        let next_cursor = if items.len() as u64 > limit {
            items.truncate(limit as usize);
            items
                .last()
                .map(|last| schedule_cursor(last.starts_at, last.id))
        } else {
            None
        };
        to_json(&Page { items, next_cursor })
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub struct SeatView {
    seat_no: i32,
    price: i64,
    status: SeatStatus,
}

impl From<SeatRow> for SeatView {
    fn from(s: SeatRow) -> Self {
        Self {
            seat_no: s.seat_no,
            price: s.price,
            status: s.status,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SeatMap {
    schedule_id: i64,
    seats: Vec<SeatView>,
}

#[utoipa::path(get, path = "/api/schedules/{id}/seats",
    responses((status = 200, body = SeatMap), (status = 401), (status = 404)))]
pub async fn seat_map(
    state: web::Data<AppState>,
    pass: ActiveQueuePass,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let schedule_id = id.into_inner();
    let seats = state
        .office
        .seat_map(&pass, schedule_id, state.clock.now())
        .await?;
    let seats = seats.into_iter().map(SeatView::from).collect();
    Ok(HttpResponse::Ok().json(SeatMap { schedule_id, seats }))
}
