//! The waiting room over HTTP: join, status (the heartbeat), and a Server-Sent Events stream.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use common::ApiError;
use common::auth::AuthUser;
use common::http::Json;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::Notify;
use utoipa::ToSchema;

use crate::domain::queue::{
    Following, Place, QueueError, QueueState, QueueStatus, Reading, StreamSlot, cadence,
};
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
        (status = 200, description = "the token's status; this poll is its heartbeat", body = QueueStatus,
            headers(("Retry-After" = u64, description = "while waiting: when to poll again, in seconds (a tenth of the wait, 1 s at the front, never later than the heartbeat needs)"))),
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
    let mut res = HttpResponse::Ok();
    let idle = state.room.config().waiting_idle_timeout;
    if let Some(secs) = status.poll_after(state.clock.now(), idle) {
        res.insert_header(("retry-after", secs.to_string()));
    }
    Ok(res.json(status))
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
    let frames = open_status_stream(state.into_inner(), user.id, &token).await?;
    let mut res = HttpResponse::Ok();
    for (name, value) in STREAM_HEADERS {
        res.insert_header((name, value));
    }
    Ok(res.streaming(frames.map(Ok::<_, actix_web::Error>)))
}

/// The headers of a status stream's 200, wherever it is served.
pub const STREAM_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    // Tells nginx not to buffer the events, whatever its location's settings.
    ("x-accel-buffering", "no"),
];

/// Opens `token`'s status stream for `user_id`, as `GET /api/queue/tokens/{token}/events`
/// does on either listener (this one or [`crate::stream_port`]): a slot among the user's
/// streams, the token's first status, and its place in its line's ticker.
pub async fn open_status_stream(
    state: Arc<AppState>,
    user_id: i64,
    token: &str,
) -> Result<impl Stream<Item = Bytes> + Send + use<>, ApiError> {
    let slot = state.room.open_stream(user_id)?;
    let (first, place) = state.room.watch(user_id, token).await?;
    let follow = StreamFollow::new(&state, token, first.concert_id, place);
    Ok(status_frames(state, user_id, first, slot, follow))
}

fn sse_frame(status: &QueueStatus) -> Bytes {
    Bytes::from(format!(
        "data: {}\n\n",
        serde_json::to_string(status).unwrap_or_default()
    ))
}

/// A stream's hold on its fan's token: its line's readings and wake-ups, and a guard that
/// hands the token back to its own heartbeat when the stream ends, however it ends.
struct StreamFollow {
    line: Following,
    place: Option<Place>,
    leave: LeaveOnDrop,
}

impl StreamFollow {
    fn new(state: &Arc<AppState>, token: &str, concert_id: i64, place: Option<Place>) -> Self {
        Self {
            line: state.lines.follow(concert_id, place),
            place,
            leave: LeaveOnDrop {
                state: state.clone(),
                token: token.to_owned(),
            },
        }
    }

    /// The stream saw its fan ACTIVE: admission took the token out of the line, and its
    /// stream's registration with it (`drop` in the admission script), and a token never goes
    /// back in line. So there is nothing to hand back when the stream ends: no `leave`, a
    /// Redis round trip saved for every admitted fan.
    fn admitted(&mut self) {
        self.leave.token.clear();
    }
}

/// Shares the process's state rather than cloning the waiting room: a stream is held by tens
/// of thousands at once, and the room carries its scripts' text.
struct LeaveOnDrop {
    state: Arc<AppState>,
    token: String,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if self.token.is_empty() {
            return;
        }
        let (state, token) = (self.state.clone(), std::mem::take(&mut self.token));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(error) = state.room.leave(&token).await {
                    // The process's lease still covers the token until it lapses.
                    tracing::warn!(%error, "a closed stream's token could not be handed back");
                }
            });
        }
    }
}

/// Where a status stream stands between looks.
struct Watching {
    /// Held for as long as the stream lives; dropped with it.
    slot: StreamSlot,
    probe: Arc<Notify>,
    follow: StreamFollow,
    last: QueueStatus,
    last_sent: tokio::time::Instant,
    done: bool,
    first: bool,
}

impl Drop for Watching {
    /// A stream whose last status was ACTIVE ends without handing its token back
    /// ([`StreamFollow::admitted`]); any other ends with it.
    fn drop(&mut self) {
        if self.last.status == QueueState::Active {
            self.follow.admitted();
        }
    }
}

/// What woke a stream.
enum Wake {
    /// Admission reached its place, the line had an event, or its own time to look came.
    Look,
    /// A refusal of another stream of its user: find out whether its client is still there.
    Probe,
}

/// `first` at once; then the stream looks at its line's latest reading when admission
/// reaches its fan's place or the line has an event (at once), and on its own every
/// [`cadence`] (each tick at the front, less often further back) — sending a frame when the
/// status changed or `sse_keepalive` has passed since the last one. Redis is asked about this
/// fan only when a reading says its turn may have come ([`Place::read`]).
fn status_frames(
    state: Arc<AppState>,
    user_id: i64,
    first: QueueStatus,
    slot: StreamSlot,
    follow: StreamFollow,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let keepalive = state.room.config().sse_keepalive;
    let period = state.lines.look_every();
    let init = Watching {
        probe: slot.probe_signal(),
        slot,
        follow,
        done: first.status != QueueState::Waiting,
        last: first,
        last_sent: tokio::time::Instant::now(),
        first: true,
    };
    futures_util::stream::unfold(init, move |mut s| {
        let state = state.clone();
        async move {
            if s.first {
                s.first = false;
                s.last_sent = tokio::time::Instant::now();
                return Some((sse_frame(&s.last), s));
            }
            if s.done {
                return None;
            }
            loop {
                let position = s.last.position.filter(|_| !s.last.pre_queue);
                let look_at = tokio::time::Instant::now() + cadence(position, period, keepalive);
                let due = look_at.min(s.last_sent + keepalive);
                let wake = tokio::select! {
                    () = s.follow.line.woken() => Wake::Look,
                    () = tokio::time::sleep_until(due) => Wake::Look,
                    () = s.probe.notified() => Wake::Probe,
                };
                if matches!(wake, Wake::Probe) || s.slot.should_probe() {
                    // A comment line, ignored by clients: if this one is gone, the write
                    // fails and the stream (and its slot) is dropped.
                    return Some((Bytes::from_static(b":\n\n"), s));
                }
                let now = match (s.follow.line.line(), s.follow.place) {
                    (Some(line), Some(place)) => match place.read(&line) {
                        Reading::Waiting(position) => Some(s.last.waiting_at(position, line.rate)),
                        Reading::AskRedis => None,
                    },
                    (None, Some(_)) => Some(s.last.clone()),
                    (_, None) => None,
                };
                let now = match now {
                    Some(now) => now,
                    // Boxed: the check's future is large, and held inline it would weigh on every
                    // stream for its whole life, not only while it asks.
                    None => match Box::pin(state.room.watch(user_id, &s.last.token)).await {
                        Ok((now, place)) => {
                            s.follow.place = place;
                            s.follow.line.wait_at(place);
                            now
                        }
                        Err(QueueError::TokenNotFound) => return None,
                        Err(e) => {
                            tracing::warn!(error = %e, "queue status check failed in SSE stream");
                            s.last.clone()
                        }
                    },
                };
                if now != s.last || s.last_sent.elapsed() >= keepalive {
                    s.done = now.status != QueueState::Waiting;
                    s.last = now;
                    s.last_sent = tokio::time::Instant::now();
                    return Some((sse_frame(&s.last), s));
                }
            }
        }
    })
}
