//! HTTP plumbing every service mounts: a JSON extractor whose errors name the field, the
//! request middleware (request id, span, metrics, panic guard, problem+json for every error),
//! `/health/live`, `/health/ready`, `/metrics`, `/openapi.json`, and the server itself.

use std::future::Future;
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, Server, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, FromRequest, HttpRequest, HttpResponse, HttpServer, web};
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::config::HttpConfig;
use crate::error::{ApiError, PROBLEM_JSON, problem_for_status};
use crate::metrics::Metrics;
use crate::redis::RedisStore;

/// Largest accepted request body (API.md): 64 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A JSON body. Any deserialization failure is 400 `INVALID_REQUEST` naming the field path
/// (`seat_nos[2]: invalid type: string "a", expected i32`); over 64 KiB is 413.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type_ok = match req.headers().get(header::CONTENT_TYPE) {
            None => true,
            Some(v) => v.to_str().is_ok_and(|s| {
                let mime = s.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            }),
        };
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !content_type_ok {
                return Err(problem_for_status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "",
                    "",
                ));
            }
            let bytes = body.await.map_err(|e| {
                if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                    problem_for_status(StatusCode::PAYLOAD_TOO_LARGE, "", "")
                } else {
                    ApiError::invalid(format!("could not read the request body: {e}"))
                }
            })?;
            parse_json(&bytes).map(Json)
        })
    }
}

/// Parses JSON, naming the failing field in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "request body is empty; a JSON object is required",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = strip_position(&inner.to_string());
        if inner.is_syntax() || inner.is_eof() {
            ApiError::invalid(format!("malformed JSON: {message}"))
        } else if path == "." {
            ApiError::invalid(message)
        } else {
            ApiError::invalid_field(&path, message)
        }
    })?;
    de.end().map_err(|e| {
        ApiError::invalid(format!(
            "malformed JSON: {}",
            strip_position(&e.to_string())
        ))
    })?;
    Ok(value)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::invalid(format!(
        "query string: {}",
        strip_position(&err.to_string())
    ))
    .into()
}

fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::invalid(format!("path parameter: {err}")).into()
}

/// Wraps every request: request id (echoed or generated), a tracing span, latency metrics by
/// route, a panic guard (500 problem+json instead of a dropped connection), and problem+json
/// for any error response some layer produced without one (404, 405, 413, …).
async fn platform_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let metrics = req.app_data::<web::Data<Arc<Metrics>>>().cloned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
        status = tracing::field::Empty,
    );
    let started = Instant::now();
    // The request cannot be cloned before routing (actix needs it unshared), so a failure
    // below is returned as an error that renders itself, request id included.
    let outcome = AssertUnwindSafe(next.call(req))
        .catch_unwind()
        .instrument(span.clone())
        .await;
    let mut res = match outcome {
        Ok(Ok(res)) => res.map_into_boxed_body(),
        Ok(Err(err)) => {
            let status = err.as_response_error().status_code();
            let problem = problem_for_status(status, method.as_str(), "");
            return Err(Failed::record(
                problem,
                request_id,
                &method,
                metrics.as_ref().map(|m| m.get_ref()),
                started,
                &span,
            )
            .into());
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let _g = span.enter();
            let problem = ApiError::internal(format!("handler panicked: {what}"));
            drop(_g);
            return Err(Failed::record(
                problem,
                request_id,
                &method,
                metrics.as_ref().map(|m| m.get_ref()),
                started,
                &span,
            )
            .into());
        }
    };

    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        let problem = problem_for_status(
            status,
            res.request().method().as_str(),
            res.request().path(),
        );
        let mut replacement = problem.to_response();
        if let Some(allow) = res.headers().get(header::ALLOW) {
            replacement
                .headers_mut()
                .insert(header::ALLOW, allow.clone());
        }
        res = res.into_response(replacement);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }

    let elapsed = started.elapsed().as_secs_f64();
    span.record("status", status.as_u16());
    if let Some(m) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        m.observe_request(
            &route,
            res.request().method().as_str(),
            status.as_u16(),
            elapsed,
        );
    }
    if status.is_server_error() {
        tracing::warn!(parent: &span, status = status.as_u16(), elapsed_ms = elapsed * 1e3, "request failed");
    } else {
        tracing::debug!(parent: &span, status = status.as_u16(), elapsed_ms = elapsed * 1e3, "request done");
    }
    Ok(res)
}

/// A request that failed outside any handler's control (a panic, a service error): rendered
/// as problem+json carrying the request id.
#[derive(Debug)]
struct Failed {
    problem: ApiError,
    request_id: String,
}

impl Failed {
    fn record(
        problem: ApiError,
        request_id: String,
        method: &actix_web::http::Method,
        metrics: Option<&Arc<Metrics>>,
        started: Instant,
        span: &tracing::Span,
    ) -> Self {
        span.record("status", problem.status().as_u16());
        if let Some(m) = metrics {
            m.observe_request(
                "unmatched",
                method.as_str(),
                problem.status().as_u16(),
                started.elapsed().as_secs_f64(),
            );
        }
        Self {
            problem,
            request_id,
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.problem.fmt(f)
    }
}

impl actix_web::ResponseError for Failed {
    fn status_code(&self) -> StatusCode {
        self.problem.status()
    }
    fn error_response(&self) -> HttpResponse {
        let mut res = self.problem.to_response();
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            res.headers_mut().insert(REQUEST_ID, v);
        }
        res
    }
}

/// What `/health/ready` checks. A dependency a service does not use is `None`.
///
/// Readiness answers whether this process can serve requests: its databases and Redis. The
/// broker is reported in the body (`"broker"` under `"not_required"`) but never makes the
/// answer 503: the outbox absorbs a broker outage, and one Kafka problem must not take every
/// replica of every API out of rotation (DESIGN §6). Its state is the `kafka_broker_up`
/// metric, with an alert.
#[derive(Clone, Default)]
pub struct Readiness {
    pub db: Option<sea_orm::DatabaseConnection>,
    /// Other services' databases a process works on (batch), by name.
    pub other_databases: Vec<(&'static str, sea_orm::DatabaseConnection)>,
    pub redis: Option<RedisStore>,
    /// Where the broker watcher ([`crate::startup::watch_broker`]) keeps the broker's state.
    pub broker: Option<Arc<Metrics>>,
}

impl Readiness {
    /// Each dependency's state: `"ok"` or `"down: <reason>"`.
    pub async fn check(&self) -> Vec<(&'static str, Result<(), String>)> {
        const LIMIT: Duration = Duration::from_secs(2);
        let timed =
            |name: &'static str, fut: Pin<Box<dyn Future<Output = Result<(), String>> + Send>>| async move {
                let r = tokio::time::timeout(LIMIT, fut)
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()));
                (name, r)
            };
        let mut checks = Vec::new();
        if let Some(db) = self.db.clone() {
            checks.push(timed(
                "database",
                Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) }),
            ));
        }
        for (name, db) in self.other_databases.clone() {
            checks.push(timed(
                name,
                Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) }),
            ));
        }
        if let Some(redis) = self.redis.clone() {
            checks.push(timed(
                "redis",
                Box::pin(async move { redis.ping().await.map_err(|e| e.to_string()) }),
            ));
        }
        futures_util::future::join_all(checks).await
    }

    /// The broker's state as last watched (no round trip: a probe must answer fast even
    /// while the broker hangs), reported beside the checks but not required.
    pub fn broker(&self) -> Option<Result<(), String>> {
        let metrics = self.broker.as_ref()?;
        Some(if metrics.broker_up() {
            Ok(())
        } else {
            Err("unreachable (see kafka_broker_up)".into())
        })
    }
}

fn state_of(r: &Result<(), String>) -> serde_json::Value {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("down: {e}").into(),
    }
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn ready(readiness: web::Data<Readiness>) -> Result<HttpResponse, ApiError> {
    let results = readiness.check().await;
    let broker = readiness.broker();
    let mut checks = serde_json::Map::new();
    let mut down = Vec::new();
    for (name, r) in &results {
        if r.is_err() {
            down.push(*name);
        }
        checks.insert((*name).to_owned(), state_of(r));
    }
    let mut not_required = serde_json::Map::new();
    if let Some(b) = &broker {
        not_required.insert("broker".into(), state_of(b));
    }
    if down.is_empty() {
        return Ok(HttpResponse::Ok().json(
            serde_json::json!({"status": "ok", "checks": checks, "not_required": not_required}),
        ));
    }
    Err(
        ApiError::unavailable("NOT_READY", format!("unavailable: {}", down.join(", ")), 1)
            .with_extension("checks", checks.into())
            .with_extension("not_required", not_required.into()),
    )
}

async fn metrics_text(metrics: web::Data<Arc<Metrics>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}

async fn openapi(doc: web::Data<OpenApiJson>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}

/// Nothing matched: 405 if the path exists for another method, else 404.
async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let status = if req.resource_map().has_resource(req.path()) {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::NOT_FOUND
    };
    Err(problem_for_status(
        status,
        req.method().as_str(),
        req.path(),
    ))
}

struct OpenApiJson(String);

/// Everything `serve` needs besides the service's own routes.
pub struct Plumbing {
    pub http: HttpConfig,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub openapi: utoipa::openapi::OpenApi,
}

/// Pending connections the kernel queues before actix accepts them. std's `bind` asks for
/// 128: a crowd (or a gateway opening upstream connections for it) overflows that, and each
/// dropped SYN is retried only a second later. Capped by `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds the configured address (port 0 picks a free port; tests use it).
pub fn bind(http: &HttpConfig) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(http.host.as_str(), http.port))?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{} resolves to nothing", http.host)))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Builds the HTTP server: common endpoints and middleware plus the service's `routes`.
/// The server does not install signal handlers: [`crate::lifecycle::Service`] owns shutdown.
pub fn serve<F>(listener: TcpListener, plumbing: Plumbing, routes: F) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let metrics = web::Data::new(plumbing.metrics);
    let readiness = web::Data::new(plumbing.readiness);
    let doc = web::Data::new(OpenApiJson(
        plumbing.openapi.to_json().map_err(std::io::Error::other)?,
    ));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(metrics.clone())
            .app_data(readiness.clone())
            .app_data(doc.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .wrap(from_fn(platform_middleware))
            .route("/health/live", web::get().to(live))
            .route("/health/ready", web::get().to(ready))
            .route("/metrics", web::get().to(metrics_text))
            .route("/openapi.json", web::get().to(openapi))
            .configure(routes.clone())
            .default_service(web::to(no_route))
    })
    .workers(plumbing.http.workers)
    // Longer than the gateway keeps an idle upstream connection (30 s), so the gateway, not
    // the service, closes it: never a request in flight on a connection being closed.
    .keep_alive(std::time::Duration::from_secs(75))
    .shutdown_timeout(plumbing.http.shutdown_timeout.as_secs())
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    struct Hold {
        schedule_id: i64,
        seat_nos: Vec<u16>,
    }

    #[test]
    fn wrong_type_names_the_field_path() {
        let err = parse_json::<Hold>(br#"{"schedule_id": 1, "seat_nos": [1, "a"]}"#).unwrap_err();
        assert_eq!(err.code(), "INVALID_REQUEST");
        assert!(err.detail().contains("seat_nos[1]"), "{}", err.detail());
    }

    #[test]
    fn missing_field_is_named() {
        let err = parse_json::<Hold>(br#"{"schedule_id": 1}"#).unwrap_err();
        assert!(err.detail().contains("seat_nos"), "{}", err.detail());
    }

    #[test]
    fn out_of_range_number_is_named() {
        let err = parse_json::<Hold>(br#"{"schedule_id": 1, "seat_nos": [70000]}"#).unwrap_err();
        assert!(err.detail().contains("seat_nos[0]"), "{}", err.detail());
    }

    #[test]
    fn malformed_and_empty_bodies_are_invalid() {
        assert!(
            parse_json::<Hold>(b"{")
                .unwrap_err()
                .detail()
                .starts_with("malformed JSON")
        );
        assert!(
            parse_json::<Hold>(b"")
                .unwrap_err()
                .detail()
                .contains("empty")
        );
        assert!(parse_json::<Hold>(br#"{"schedule_id":1,"seat_nos":[]} x"#).is_err());
    }
}
