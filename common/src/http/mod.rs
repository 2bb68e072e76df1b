//! HTTP plumbing every service mounts: a JSON extractor whose errors name the field, the
//! request middleware (request id, span, metrics, panic guard, problem+json for every error),
//! `/health/live`, `/health/ready`, `/metrics`, `/openapi.json`, and the server itself.
//!
//! Split by job: [`extract`] (the JSON body that names the failing field), [`middleware`]
//! (request ids, spans, metrics, the panic guard, problem+json for bare errors) and
//! [`health`] (`/health/*`, `/metrics`, `/openapi.json`, the 404/405 fallback).

mod allow;
mod extract;
mod health;
pub mod internal;
mod middleware;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::header::HeaderName;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::config::HttpConfig;
use crate::metrics::Metrics;

use allow::RouteMethods;
pub use allow::UnlistedRoutes;
pub use extract::{Json, parse_json};
use extract::{path_error, query_error};
pub use health::Readiness;
use health::{live, metrics_text, no_route, openapi, ready};
use middleware::platform_middleware;

/// The request's id: the caller's `X-Request-Id` when it is 1 to 128 visible ASCII
/// characters, else a new UUID.
pub fn request_id(header: Option<&str>) -> String {
    header
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// Largest accepted request body (API.md): 64 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub(super) struct OpenApiJson(String);

/// Everything `serve` needs besides the service's own routes.
pub struct Plumbing {
    pub http: HttpConfig,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub openapi: utoipa::openapi::OpenApi,
    /// The time the extractors judge sessions and queue passes by.
    pub clock: crate::clock::Clock,
    /// Each worker thread talks to Redis over a connection of its own
    /// ([`crate::redis::http_worker_thread`]) instead of the process's background one.
    pub redis_per_worker: bool,
}

/// Pending connections the kernel queues before actix accepts them. std's `bind` asks for
/// 128: a crowd (or a gateway opening upstream connections for it) overflows that, and each
/// dropped SYN is retried only a second later. Capped by `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds the configured address (port 0 picks a free port; tests use it).
pub fn bind(http: &HttpConfig) -> std::io::Result<TcpListener> {
    bind_to(&http.host, http.port)
}

/// Binds `host:port` (port 0 picks a free port) with [`LISTEN_BACKLOG`].
pub fn bind_to(host: &str, port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} resolves to nothing")))?;
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
    let clock = web::Data::new(plumbing.clock);
    if plumbing.http.internal_token.is_none() {
        tracing::warn!("INTERNAL_API_TOKEN is not set: every /internal/** request is refused");
    }
    let internal = web::Data::new(internal::InternalAuth::new(
        plumbing.http.internal_token.clone(),
    ));
    let doc = web::Data::new(OpenApiJson(
        plumbing.openapi.to_json().map_err(std::io::Error::other)?,
    ));
    let platform_routes = ["/health/live", "/health/ready", "/metrics", "/openapi.json"]
        .map(|path| (path.to_owned(), actix_web::http::Method::GET));
    let methods = web::Data::new(RouteMethods::new(
        crate::openapi::operations(&plumbing.openapi)
            .into_iter()
            .chain(platform_routes),
    ));
    let redis_per_worker = plumbing.redis_per_worker;
    let server = HttpServer::new(move || {
        // Runs on each worker thread.
        if redis_per_worker {
            crate::redis::http_worker_thread();
        }
        App::new()
            .app_data(metrics.clone())
            .app_data(readiness.clone())
            .app_data(clock.clone())
            .app_data(internal.clone())
            .app_data(doc.clone())
            .app_data(methods.clone())
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
    fn a_nul_in_text_is_refused_naming_the_field() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Login {
            username: String,
            password: String,
        }
        let err =
            parse_json::<Login>(br#"{"username": "admin\u0000", "password": "x"}"#).unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.detail().contains("username"), "{}", err.detail());
        let nested = parse_json::<serde_json::Value>(br#"{"a": [{"b": "x\u0000"}]}"#).unwrap_err();
        assert!(nested.detail().contains("a[0].b"), "{}", nested.detail());
        // An escaped backslash before "u0000" is ordinary text.
        let fine = parse_json::<Login>(br#"{"username": "a\\u0000", "password": "x"}"#).unwrap();
        assert_eq!(fine.username, "a\\u0000");
    }

    #[test]
    fn whole_floats_are_integers_and_unknown_fields_are_not_read() {
        let hold = parse_json::<Hold>(br#"{"schedule_id": 3.0, "seat_nos": [1, 2.0]}"#).unwrap();
        assert_eq!((hold.schedule_id, hold.seat_nos), (3, vec![1, 2]));
        let err = parse_json::<Hold>(br#"{"schedule_id": 3.5, "seat_nos": [1]}"#).unwrap_err();
        assert!(err.detail().contains("schedule_id"), "{}", err.detail());
        // A NUL in a field the type does not have is ignored, like the field itself.
        let hold =
            parse_json::<Hold>(br#"{"schedule_id": 1, "seat_nos": [1], "x\u0000": "y\u0000"}"#)
                .unwrap();
        assert_eq!(hold.schedule_id, 1);
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
