//! The status stream's own listener (`USERS_API_STREAM_PORT`): a lean HTTP/1.1 server that
//! serves one route, `GET /api/queue/tokens/{token}/events`, exactly as the main port does
//! (same session check, same problem+json refusals, same frames), and nothing else.
//!
//! Why a second listener: an on-sale holds a stream open for every fan in line, for minutes.
//! On actix-web each open stream costs about 13 KiB (its connection state with 8 KiB read and
//! write buffers, which actix-http does not let us size, plus the response's boxed body);
//! here a stream is its socket, one task of ~600 bytes and its [`open_status_stream`] state,
//! ~3 KiB in all. Measured (`bench/waiting-room.sh 10000`, one replica): 51 MiB of users-api
//! holding 10,000 streams here, 146 MiB on the main port (docs/SCALING.md §1).
//!
//! Hence the care about sizes below: a task is as large as the largest state its future can
//! be in, for its whole life, so the request's reading and answering are boxed (done before
//! the stream starts) and the frames are moved about on the heap.
//!
//! It runs on a tokio runtime of its own (`HTTP_WORKERS` threads, like actix-web's workers):
//! on the process's main runtime an opening surge would queue in front of the Redis
//! connection's driver, which every open waits on twice, and of the consumers.
//!
//! What it does: reads one request head (at most [`MAX_HEAD`] bytes, within [`HEAD_TIMEOUT`]),
//! answers it and closes the connection (`connection: close`): a stream lasts minutes, so a
//! connection kept for a next request saves nothing. The 200's body is chunked, as on the main
//! port, so a client can tell a stream that ended from one that was cut. A client that closes
//! its side ends its stream at once (its slot and its token's lease go with it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use common::ApiError;
use common::auth::SessionStore;
use common::error::problem_for_status;
use common::metrics::Metrics;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::routes::AppState;
use crate::routes::queue::{STREAM_HEADERS, open_status_stream};

/// The one route served here, as the metrics name it.
const ROUTE: &str = "/api/queue/tokens/{token}/events";
/// The largest request head read: more than the gateway lets through (a request line of 8 KiB
/// and 32 KiB of headers), so nothing it passes is refused here. Larger: 431.
pub const MAX_HEAD: usize = 48 * 1024;
/// A client that has not sent its whole request head by then loses the connection (the
/// gateway's own header timeout is the same).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers parsed; more: 431.
const MAX_HEADERS: usize = 128;

/// What every connection needs.
pub struct StreamPort {
    pub state: Arc<AppState>,
    pub sessions: SessionStore,
    pub metrics: Arc<Metrics>,
}

/// Binds `host:port` (0: a free port) with the main port's backlog, on the current runtime.
fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let listener = common::http::bind_to(host, port)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

impl StreamPort {
    /// Binds `host:port` (0: a free port) and serves on a runtime of its own with `workers`
    /// threads, as actix-web's workers are its own: the streams' opening surge and their
    /// frames do not queue the process's other work — the Redis connection's driver, which
    /// every stream's checks wait on, the consumers, the tickers' reads. Returns the port
    /// bound and a future that ends once the listener and its streams are done (after
    /// `cancel`), taking the runtime down with it.
    pub fn start(
        self,
        host: &str,
        port: u16,
        workers: usize,
        cancel: CancellationToken,
    ) -> std::io::Result<(u16, impl Future<Output = ()> + Send + use<>)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("stream-port")
            // The streams' Redis commands go through connections driven on this runtime.
            .on_thread_start(common::redis::http_worker_thread)
            .enable_all()
            .build()?;
        let listener = {
            let _in = runtime.enter();
            bind(host, port)?
        };
        let port = listener.local_addr()?.port();
        let serving = runtime.spawn(self.serve(listener, cancel.clone()));
        Ok((port, async move {
            let _ = serving.await;
            // The open streams end on `cancel` too: give them a moment to write their last
            // bytes, then stop the runtime without blocking this one.
            tokio::time::sleep(Duration::from_millis(100)).await;
            runtime.shutdown_background();
        }))
    }

    /// Accepts until `cancel` fires; then every open stream ends (its client reconnects,
    /// through the gateway, to a replica still running).
    pub async fn serve(self, listener: TcpListener, cancel: CancellationToken) {
        let this = Arc::new(self);
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((socket, peer)) => {
                    let (this, cancel) = (this.clone(), cancel.clone());
                    tokio::spawn(async move { this.connection(socket, peer, cancel).await });
                }
                Err(error) => {
                    // Out of file descriptors, most likely: wait for streams to end rather than
                    // spin on the error.
                    tracing::warn!(%error, "stream port: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// One connection: its request answered, then, for a stream, the stream.
    async fn connection(&self, socket: TcpStream, peer: SocketAddr, cancel: CancellationToken) {
        // Boxed: a task is as large as the largest state of its future, and a stream's task
        // lives for minutes after the request is answered.
        if let Some((socket, frames)) = Box::pin(self.answer(socket, peer)).await {
            stream(socket, frames, cancel).await;
        }
    }

    /// Reads the request and answers it: a refusal (then the connection closes), or a 200's
    /// head, returning the socket and the stream to write on it.
    async fn answer(&self, mut socket: TcpStream, peer: SocketAddr) -> Option<(TcpStream, Frames)> {
        let _ = socket.set_nodelay(true);
        let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut socket)).await {
            Ok(Ok(head)) => head,
            Ok(Err(refusal)) => {
                let _ = socket.write_all(&problem_response(&refusal, None)).await;
                linger_close(socket).await;
                return None;
            }
            // Silent, as an unfinished request gets no answer on the main port either.
            Err(_) => return None,
        };
        let started = Instant::now();
        let request_id = common::http::request_id(head.request_id.as_deref());
        let (route, method) = head.labels();
        let span = tracing::info_span!("request", method, route, %peer, request_id);
        let opened = self.open(&head).instrument(span.clone()).await;
        let status = match &opened {
            Ok(_) => StatusCode::OK,
            Err(e) => e.status(),
        };
        self.metrics.observe_request(
            route,
            method,
            status.as_u16(),
            started.elapsed().as_secs_f64(),
        );
        match opened {
            Err(refusal) => {
                if refusal.status().is_server_error() {
                    tracing::error!(parent: &span, error = %refusal, "status stream refused");
                }
                let response = problem_response(&refusal, Some(&request_id));
                let _ = socket.write_all(&response).await;
                linger_close(socket).await;
                None
            }
            Ok(frames) => {
                let mut head = String::from("HTTP/1.1 200 OK\r\n");
                for (name, value) in STREAM_HEADERS {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str(&format!(
                    "x-request-id: {request_id}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                ));
                socket.write_all(head.as_bytes()).await.ok()?;
                Some((socket, Box::pin(frames)))
            }
        }
    }

    /// The session and the stream, or why not.
    async fn open(
        &self,
        head: &Head,
    ) -> Result<impl futures_util::Stream<Item = Bytes> + Send + use<>, ApiError> {
        let token = head.route()?;
        let bearer = head.bearer.as_deref().ok_or_else(|| {
            ApiError::unauthenticated("missing or malformed Authorization: Bearer header")
        })?;
        let session = self.sessions.touch(bearer).await?.ok_or_else(|| {
            ApiError::unauthenticated("session is unknown, expired or logged out")
        })?;
        open_status_stream(self.state.clone(), session.user_id, &token).await
    }
}

/// Closes after an answer without losing it: a client still sending (a body, an oversized
/// head) would otherwise get a reset that can overtake the answer. Our side is shut, then
/// what the client still sends is read and dropped, for a short while, before the close.
async fn linger_close(mut socket: TcpStream) {
    if socket.shutdown().await.is_err() {
        return;
    }
    let mut scratch = [0u8; 4096];
    let mut left: usize = 1024 * 1024;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n @ 1..) = socket.read(&mut scratch).await {
            left = left.saturating_sub(n);
            if left == 0 {
                return;
            }
        }
    })
    .await;
}

/// A stream's frames, on the heap: moved about by pointer, never copied into every future
/// that handles them (each such copy would weigh on the stream's task for its whole life).
type Frames = std::pin::Pin<Box<dyn futures_util::Stream<Item = Bytes> + Send>>;

/// Writes `frames` as chunks until they end (then the last chunk), the client closes its
/// side, a write fails, or shutdown.
async fn stream(mut socket: TcpStream, mut frames: Frames, cancel: CancellationToken) {
    let (mut read, mut write) = socket.split();
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            frame = frames.next() => {
                let Some(frame) = frame else {
                    let _ = write.write_all(b"0\r\n\r\n").await;
                    return;
                };
                let mut chunk = Vec::with_capacity(frame.len() + 12);
                chunk.extend_from_slice(format!("{:x}\r\n", frame.len()).as_bytes());
                chunk.extend_from_slice(&frame);
                chunk.extend_from_slice(b"\r\n");
                if write.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // Anything the client sends after its request is ignored; its end of the
            // connection closing ends the stream.
            read = read.read(&mut scratch) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
            () = cancel.cancelled() => return,
        }
    }
}

/// The parts of a request head this route reads.
#[derive(Debug)]
struct Head {
    method: String,
    path: String,
    bearer: Option<String>,
    request_id: Option<String>,
}

impl Head {
    /// The path without its query.
    fn path(&self) -> &str {
        self.path.split(['?', '#']).next().unwrap_or_default()
    }

    /// The token's path segment when the path is the stream route's (any method).
    fn token_segment(&self) -> Option<&str> {
        self.path()
            .strip_prefix("/api/queue/tokens/")
            .and_then(|rest| rest.strip_suffix("/events"))
            .filter(|t| !t.is_empty() && !t.contains('/'))
    }

    /// The request's route and method as the metrics name them (as the main port does:
    /// `unmatched` for any other path; a method HTTP does not define is `OTHER`).
    fn labels(&self) -> (&'static str, &'static str) {
        const METHODS: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ];
        let route = if self.token_segment().is_some() {
            ROUTE
        } else {
            "unmatched"
        };
        let method = METHODS
            .into_iter()
            .find(|m| *m == self.method)
            .unwrap_or("OTHER");
        (route, method)
    }

    /// The token of `GET /api/queue/tokens/{token}/events` (percent-decoded, as actix's path
    /// extractor does), or 404 for any other path and 405 for another method.
    fn route(&self) -> Result<String, ApiError> {
        let token = self.token_segment();
        let (method, shown) = (printable(&self.method), printable(self.path()));
        let Some(token) = token else {
            // Named as on the main port, which serves every other route.
            return Err(problem_for_status(StatusCode::NOT_FOUND, &method, &shown));
        };
        if self.method != "GET" {
            return Err(problem_for_status(
                StatusCode::METHOD_NOT_ALLOWED,
                &method,
                &shown,
            ));
        }
        percent_encoding::percent_decode_str(token)
            .decode_utf8()
            .map(|t| t.into_owned())
            .map_err(|_| {
                ApiError::not_found("QUEUE_TOKEN_NOT_FOUND", "no such queue token for this user")
            })
    }
}

/// At most 200 characters of what a client sent, for a message about it.
fn printable(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Reads up to the end of the request head; any bytes after it (a body, a next request) are
/// left unread. A 400 or 431 when the head is malformed or too large.
async fn read_head(socket: &mut TcpStream) -> Result<Head, ApiError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = socket
            .read(&mut chunk)
            .await
            .map_err(|_| ApiError::invalid("the request could not be read"))?;
        if n == 0 {
            return Err(ApiError::invalid(
                "the connection closed before the request head ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf)? {
            return Ok(head);
        }
        if buf.len() >= MAX_HEAD {
            return Err(head_too_large());
        }
    }
}

fn head_too_large() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "HEADERS_TOO_LARGE",
        format!("the request head is over {} KiB", MAX_HEAD / 1024),
    )
}

/// The head in `buf`, `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(_)) => {
            let header = |name: &str| {
                request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
            };
            Ok(Some(Head {
                method: request.method.unwrap_or_default().to_owned(),
                path: request.path.unwrap_or_default().to_owned(),
                bearer: header("authorization")
                    .and_then(common::auth::bearer_value)
                    .map(str::to_owned),
                request_id: header("x-request-id").map(str::to_owned),
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(head_too_large()),
        Err(e) => Err(ApiError::invalid(format!("malformed HTTP request: {e}"))),
    }
}

/// A whole problem+json answer, ending the connection; with the request's id when it was read.
fn problem_response(error: &ApiError, request_id: Option<&str>) -> Vec<u8> {
    let body = serde_json::to_vec(&error.problem_json()).unwrap_or_default();
    let status = error.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    );
    if let Some(secs) = error.retry_after_secs() {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        head.push_str("allow: GET\r\n");
    }
    if let Some(id) = request_id {
        head.push_str(&format!("x-request-id: {id}\r\n"));
    }
    let mut response = head.into_bytes();
    response.extend_from_slice(b"\r\n");
    response.extend_from_slice(&body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        parse_head(raw.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn a_head_is_read_only_once_complete() {
        assert!(
            parse_head(b"GET /api/queue/tokens/a/events HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none()
        );
        let h = head(
            "GET /api/queue/tokens/a%2Eb/events?x=1 HTTP/1.1\r\nAuthorization: Bearer  t0k \r\nX-Request-Id: abc-1\r\n\r\nrest",
        );
        assert_eq!(h.bearer.as_deref(), Some("t0k"));
        assert_eq!(h.request_id.as_deref(), Some("abc-1"));
        assert_eq!(h.route().unwrap(), "a.b");
    }

    #[test]
    fn other_paths_are_404_and_other_methods_405() {
        for path in [
            "/",
            "/health/live",
            "/api/queue/tokens//events",
            "/api/queue/tokens/a/b/events",
            "/api/queue/tokens/a",
            "/api/queue/tokens/a/events/",
        ] {
            let err = head(&format!("GET {path} HTTP/1.1\r\n\r\n"))
                .route()
                .unwrap_err();
            assert_eq!(err.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let err = head("POST /api/queue/tokens/a/events HTTP/1.1\r\n\r\n")
            .route()
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::METHOD_NOT_ALLOWED);
        let response = String::from_utf8(problem_response(&err, None)).unwrap();
        assert!(response.contains("\r\nallow: GET\r\n"), "{response}");
    }

    #[test]
    fn malformed_and_oversized_heads_are_refused() {
        let err = parse_head(b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("h{i}: v\r\n"))
            .collect();
        let err = parse_head(format!("GET /x HTTP/1.1\r\n{many}\r\n").as_bytes()).unwrap_err();
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn a_problem_carries_the_request_id() {
        let response = problem_response(&ApiError::unauthenticated("no"), Some("id-7"));
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
        assert!(head.ends_with("\r\nx-request-id: id-7"), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], "UNAUTHENTICATED");
    }
}
