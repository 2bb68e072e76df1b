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

/// A page of concerts, by id.
#[derive(Serialize, ToSchema)]
pub struct ConcertPage {
    items: Vec<Concert>,
    /// Pass back as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// A page of schedules, by `starts_at` then id.
#[derive(Serialize, ToSchema)]
pub struct SchedulePage {
    items: Vec<Schedule>,
    /// Pass back as `cursor` for the next page; `null` on the last one.
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

#[utoipa::path(get, path = "/api/concerts",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "page size, 1 to 100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "opaque: the `next_cursor` of the previous page, nothing else"),
    ),
    responses(
        (status = 200, description = "concerts by id (cached up to 2 s)", body = ConcertPage),
        (status = 400, description = "`INVALID_REQUEST`: `limit` out of 1 to 100, or a `cursor` this list did not return"),
    ))]
pub async fn list_concerts(
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit()?;
    let after = q
        .cursor()
        .map(parse_concert_cursor)
        .transpose()?
        .unwrap_or(0);
    cached(&state, format!("concerts:{after}:{limit}"), || async {
        let mut items = catalogue::list_concerts(&state.db, after, limit).await?;
        let next_cursor = (items.len() as u64 > limit).then(|| {
            items.truncate(limit as usize);
            concert_cursor(items.last().map_or(after, |c| c.id))
        });
        to_json(&ConcertPage { items, next_cursor })
    })
    .await
}

#[utoipa::path(get, path = "/api/concerts/{id}",
    params(("id" = i64, Path, description = "the concert's id")),
    responses(
        (status = 200, description = "the concert", body = Concert),
        (status = 404, description = "`CONCERT_NOT_FOUND`: no such concert"),
    ))]
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
    params(
        ("id" = i64, Path, description = "the concert's id"),
        ("available" = Option<bool>, Query, description = "`true`: only schedules that start in the future, whose booking has opened, with a free seat (default `false`: all)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "page size, 1 to 100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "opaque: the `next_cursor` of the previous page, nothing else"),
    ),
    responses(
        (status = 200, description = "the concert's schedules by `starts_at` then id (cached up to 2 s)", body = SchedulePage),
        (status = 400, description = "`INVALID_REQUEST`: `limit` out of 1 to 100, `available` not `true`/`false`, or a `cursor` this list did not return"),
        (status = 404, description = "`CONCERT_NOT_FOUND`: no such concert"),
    ))]
pub async fn list_schedules(
    state: web::Data<AppState>,
    id: web::Path<i64>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let concert_id = id.into_inner();
    let limit = q.limit()?;
    let after = q.cursor().map(parse_schedule_cursor).transpose()?;
    let only_available = q.available.unwrap_or(false);
    let what = format!(
        "schedules:{concert_id}:{only_available}:{}:{limit}",
        q.cursor().unwrap_or("")
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
        to_json(&SchedulePage { items, next_cursor })
    })
    .await
}

#[derive(Serialize, ToSchema)]
#[schema(as = Seat)]
pub struct SeatView {
    #[schema(minimum = 1)]
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
    security(("bearer" = [], "queue_token" = [])),
    params(("id" = i64, Path, description = "the schedule's id")),
    responses(
        (status = 200, description = "every seat of the schedule (a seat of a dead hold reads AVAILABLE)", body = SeatMap),
        (status = 401, description = "`UNAUTHENTICATED`: no valid session; or `QUEUE_TOKEN_INVALID`: the pass is missing, unknown, another user's, still waiting, expired, or for another concert than the schedule's (the detail says which)"),
        (status = 404, description = "`SCHEDULE_NOT_FOUND`: no such schedule"),
    ))]
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
