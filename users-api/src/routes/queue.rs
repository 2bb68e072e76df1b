//! The waiting room over HTTP: join, status (the heartbeat), and a Server-Sent Events stream.

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use chrono::Utc;
use common::ApiError;
use common::auth::AuthUser;
use common::http::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::concerts::ConcertDirectory;
use crate::domain::queue::{QueueState, QueueStatus, WaitingRoom};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/queue/tokens", web::post().to(join))
        .route("/api/queue/tokens/{token}", web::get().to(status))
        .route("/api/queue/tokens/{token}/events", web::get().to(events));
}

#[derive(Deserialize, ToSchema)]
pub struct JoinRequest {
    concert_id: i64,
}

fn token_not_found() -> ApiError {
    ApiError::not_found("QUEUE_TOKEN_NOT_FOUND", "no such queue token for this user")
}

#[utoipa::path(post, path = "/api/queue/tokens", request_body = JoinRequest,
    responses((status = 201, body = QueueStatus, description = "new token"), (status = 200, body = QueueStatus, description = "existing token"),
        (status = 400), (status = 401), (status = 404, description = "CONCERT_NOT_FOUND"), (status = 503)))]
pub async fn join(
    user: AuthUser,
    room: web::Data<WaitingRoom>,
    concerts: web::Data<ConcertDirectory>,
    body: Json<JoinRequest>,
) -> Result<HttpResponse, ApiError> {
    let concert_id = body.into_inner().concert_id;
    if concert_id <= 0 {
        return Err(ApiError::invalid_field(
            "concert_id",
            "must be a positive integer",
        ));
    }
    concerts.require(concert_id).await?;
    let (status, created) = room.join(user.id, concert_id, Utc::now()).await?;
    Ok(if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    }
    .json(status))
}

#[utoipa::path(get, path = "/api/queue/tokens/{token}",
    responses((status = 200, body = QueueStatus), (status = 401), (status = 404)))]
pub async fn status(
    user: AuthUser,
    room: web::Data<WaitingRoom>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let status = room
        .status(user.id, &token, Utc::now())
        .await?
        .ok_or_else(token_not_found)?;
    Ok(HttpResponse::Ok().json(status))
}

fn sse_frame(status: &QueueStatus) -> Bytes {
    Bytes::from(format!(
        "data: {}\n\n",
        serde_json::to_string(status).unwrap_or_default()
    ))
}

/// Pushes the status whenever it changes and at least every keep-alive period; each check
/// is a heartbeat, so an open stream keeps its token in line. Ends after ACTIVE or EXPIRED.
#[utoipa::path(get, path = "/api/queue/tokens/{token}/events",
    responses((status = 200, content_type = "text/event-stream", body = QueueStatus), (status = 401), (status = 404)))]
pub async fn events(
    user: AuthUser,
    room: web::Data<WaitingRoom>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = token.into_inner();
    let first = room
        .status(user.id, &token, Utc::now())
        .await?
        .ok_or_else(token_not_found)?;
    let room = room.into_inner();
    let (poll, keepalive) = (room.config().sse_poll, room.config().sse_keepalive);

    struct Stream {
        last: QueueStatus,
        last_sent: tokio::time::Instant,
        done: bool,
        first: bool,
    }
    let init = Stream {
        done: first.status != QueueState::Waiting,
        last: first,
        last_sent: tokio::time::Instant::now(),
        first: true,
    };
    let stream = futures_util::stream::unfold(init, move |mut s| {
        let (room, token) = (room.clone(), token.clone());
        async move {
            if s.first {
                s.first = false;
                s.last_sent = tokio::time::Instant::now();
                return Some((Ok::<_, actix_web::Error>(sse_frame(&s.last)), s));
            }
            if s.done {
                return None;
            }
            loop {
                tokio::time::sleep(poll).await;
                let now = match room.status(user.id, &token, Utc::now()).await {
                    Ok(Some(st)) => st,
                    Ok(None) => return None,
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
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}
