//! The middleware every request passes through.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use futures_util::FutureExt;
use tracing::Instrument;

use super::REQUEST_ID;
use crate::error::{ApiError, PROBLEM_JSON, problem_for_status};
use crate::metrics::Metrics;

/// Wraps every request: request id (echoed or generated), a tracing span, latency metrics by
/// route, a panic guard (500 problem+json instead of a dropped connection), and problem+json
/// for any error response some layer produced without one (404, 405, 413, …).
pub(super) async fn platform_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let request_id =
        super::request_id(req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()));
    let metrics = req.app_data::<web::Data<Arc<Metrics>>>().cloned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
        status = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
    );
    if crate::telemetry::traces_on() {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        crate::telemetry::continue_trace(
            &span,
            header(crate::telemetry::TRACEPARENT),
            header(crate::telemetry::TRACESTATE),
        );
    }
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
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    crate::telemetry::rename(&span, || format!("{method} {route}"));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    if let Some(m) = metrics {
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
