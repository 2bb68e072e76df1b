//! The waiting room over HTTP: join, status (the heartbeat), and a Server-Sent Events stream.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use common::ApiError;
use common::auth::AuthUser;
use common::http::Json;
use futures_util::Stream;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::queue::{QueueError, QueueState, QueueStatus, StreamSlot};
use crate::routes::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/queue/tokens", web::post().to(join))
        .route("/api/queue/tokens/{token}", web::get().to(status))
        .route("/api/queue/tokens/{token}/events", web::get().to(events));
}

#[derive(Deserialize, ToSchema)]
pub struct JoinRequest {
    /// A positive concert id.
    #[schema(minimum = 1)]
    concert_id: i64,
}

impl JoinRequest {
    fn concert_id(self) -> Result<i64, ApiError> {
        if self.concert_id <= 0 {
            return Err(ApiError::invalid_field(
                "concert_id",
                "must be a positive integer",
            ));
        }
        Ok(self.concert_id)
    }
}

#[utoipa::path(post, path = "/api/queue/tokens", request_body = JoinRequest, security(("bearer" = [])),
    responses(
        (status = 201, description = "a new token at the back of the line (or, before the draw of a room with `sale_opens_at`, in the pre-queue: `pre_queue: true`, no position)", body = QueueStatus),
        (status = 200, description = "the caller's existing live token for this concert", body = QueueStatus),
        (status = 400, description = "`INVALID_REQUEST`: a malformed body or a `concert_id` under 1; the detail names the field"),
        (status = 401, description = "`UNAUTHENTICATED`: no valid session"),
        (status = 404, description = "`CONCERT_NOT_FOUND`: concert-api knows no such concert"),
        (status = 409, description = "`SOLD_OUT`: the concert has nothing left to buy (no seat available nor held); no token is issued"),
        (status = 429, description = "`RATE_LIMITED` (the gateway): too many joins from one address"),
        (status = 503, description = "`DEPENDENCY_UNAVAILABLE`: concert-api or Redis cannot answer, or the database cannot while the room's settings are restored after Redis lost them; nothing was written",
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn join(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Json<JoinRequest>,
) -> Result<HttpResponse, ApiError> {
    let concert_id = body.into_inner().concert_id()?;
    state.concerts.require(concert_id).await?;
    let (status, created) = state.room.join(user.id, concert_id).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(code).json(status))
}

#[utoipa::path(get, path = "/api/queue/tokens/{token}", security(("bearer" = [])),
    params(("token" = String, Path, description = "a token from joining (opaque; one of the caller's)")),
    responses(
        (status = 200, description = "the token's status; this poll is its heartbeat", body = QueueStatus),
        (status = 401, description = "`UNAUTHENTICATED`: no valid session"),
        (status = 404, description = "`QUEUE_TOKEN_NOT_FOUND`: unknown, malformed, or another user's token"),
        (status = 503, description = "`DEPENDENCY_UNAVAILABLE`: Redis cannot answer right now, or the database cannot while the room's settings are restored after Redis lost them",
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn status(
    state: web::Data<AppState>,
    user: AuthUser,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let status = state.room.status(user.id, &token).await?;
    Ok(HttpResponse::Ok().json(status))
}

/// Pushes the status whenever it changes and at least every keep-alive period; each check
/// is a heartbeat, so an open stream keeps its token in line. Ends after ACTIVE, EXPIRED or
/// SOLD_OUT.
/// One server-sent event of the status stream: its `data` is a `QueueStatus` as JSON text.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the wire format; the stream is written as text
pub struct QueueEvent {
    /// `QueueStatus` as JSON.
    data: String,
}

#[utoipa::path(get, path = "/api/queue/tokens/{token}/events", security(("bearer" = [])),
    params(("token" = String, Path, description = "a token from joining (opaque; one of the caller's)")),
    responses(
        (status = 200, description = "A stream of `data: <QueueStatus JSON>` frames (text, not one JSON document): one at once, then on every change and at least every keep-alive period; ends after ACTIVE, EXPIRED or SOLD_OUT",
            content_type = "text/event-stream", body = QueueEvent),
        (status = 401, description = "`UNAUTHENTICATED`: no valid session"),
        (status = 404, description = "`QUEUE_TOKEN_NOT_FOUND`: unknown, malformed, or another user's token"),
        (status = 429, description = "`TOO_MANY_STREAMS`: this account already holds as many status streams open as one user may (`QUEUE_SSE_PER_USER`), or (the gateway) this session token does; close one or poll `GET /api/queue/tokens/{token}`",
            headers(("Retry-After" = u64, description = "seconds"))),
        (status = 503, description = "`DEPENDENCY_UNAVAILABLE`: Redis cannot answer right now, or the database cannot while the room's settings are restored after Redis lost them",
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn events(
    state: web::Data<AppState>,
    user: AuthUser,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = token.into_inner();
    let first = state.room.status(user.id, &token).await?;
    let slot = state.room.open_stream(user.id)?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(status_frames(
            state.into_inner(),
            user.id,
            token,
            first,
            slot,
        )))
}

fn sse_frame(status: &QueueStatus) -> Bytes {
    Bytes::from(format!(
        "data: {}\n\n",
        serde_json::to_string(status).unwrap_or_default()
    ))
}

/// Where a status stream stands between checks.
struct Watching {
    /// Held for as long as the stream lives; dropped with it.
    slot: StreamSlot,
    last: QueueStatus,
    last_sent: tokio::time::Instant,
    done: bool,
    first: bool,
}

/// `first` at once, then a frame whenever a check (every `sse_poll`) finds a change or
/// `sse_keepalive` has passed since the last one. The pacing is tokio's monotonic time, not
/// the clock: it is how often to look, not what time it is.
fn status_frames(
    state: Arc<AppState>,
    user_id: i64,
    token: String,
    first: QueueStatus,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let cfg = state.room.config();
    let (poll, keepalive) = (cfg.sse_poll, cfg.sse_keepalive);
    let init = Watching {
        slot,
        done: first.status != QueueState::Waiting,
        last: first,
        last_sent: tokio::time::Instant::now(),
        first: true,
    };
    futures_util::stream::unfold(init, move |mut s| {
        let (state, token) = (state.clone(), token.clone());
        async move {
            if s.first {
                s.first = false;
                s.last_sent = tokio::time::Instant::now();
                return Some((Ok(sse_frame(&s.last)), s));
            }
            if s.done {
                return None;
            }
            loop {
                tokio::time::sleep(poll).await;
                let now = match state.room.status(user_id, &token).await {
                    Ok(st) => st,
                    Err(QueueError::TokenNotFound) => return None,
                    Err(e) => {
                        tracing::warn!(error = %e, "queue status check failed in SSE stream");
                        continue;
                    }
                };
                let changed = now != s.last;
                if changed || s.last_sent.elapsed() >= keepalive {
                    s.done = now.status != QueueState::Waiting;
                    s.last = now;
                    s.last_sent = tokio::time::Instant::now();
                    return Some((Ok(sse_frame(&s.last)), s));
                }
                if s.slot.should_probe() {
                    // A comment line, ignored by clients: if this one is gone, the write
                    // fails and the stream (and its slot) is dropped.
                    return Some((Ok(Bytes::from_static(b":\n\n")), s));
                }
            }
        }
    })
}
