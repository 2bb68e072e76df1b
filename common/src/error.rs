//! One error envelope for the whole product: `application/problem+json` (API.md).
//!
//! Every error type says its HTTP status and stable `code` through [`ErrorCode`]; one blanket
//! conversion turns it into [`ApiError`], which is rendered in exactly one place.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Implemented by every error that can reach a client.
pub trait ErrorCode: fmt::Display {
    fn status(&self) -> StatusCode;
    /// Stable upper-snake code, e.g. `SEAT_UNAVAILABLE`.
    fn code(&self) -> &'static str;
    /// Seconds a client should wait before retrying (429, 503).
    fn retry_after(&self) -> Option<u64> {
        None
    }
}

/// The error every handler returns.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    detail: String,
    retry_after: Option<u64>,
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extensions: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
            retry_after: None,
            extensions: None,
        }
    }

    /// 400 `INVALID_REQUEST`; the detail names the field.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", detail)
    }

    /// 400 `INVALID_REQUEST` for one named field.
    pub fn invalid_field(field: &str, reason: impl fmt::Display) -> Self {
        Self::invalid(format!("field `{field}`: {reason}"))
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// 503 with `Retry-After`: a dependency cannot answer right now.
    pub fn unavailable(
        code: &'static str,
        detail: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail).with_retry_after(retry_after_secs)
    }

    /// 500: our bug or an infrastructure fault. The cause is logged, never shown.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "an unexpected error occurred; it has been logged",
        )
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Adds a member to the problem document (RFC 9457 extension member).
    pub fn with_extension(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extensions
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
    pub fn code(&self) -> &str {
        &self.code
    }
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The problem document as JSON (to store and replay a response, e.g. idempotency).
    pub fn problem_json(&self) -> serde_json::Value {
        let body = Problem {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: &self.code,
            extensions: self.extensions.as_ref(),
        };
        serde_json::to_value(body).unwrap_or_default()
    }

    /// The problem+json response for this error.
    pub fn to_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.body(serde_json::to_vec(&self.problem_json()).unwrap_or_default())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        self.to_response()
    }
}

impl<E: ErrorCode> From<E> for ApiError {
    fn from(err: E) -> Self {
        let status = err.status();
        if status.is_server_error() {
            tracing::error!(error = %err, code = err.code(), "server error");
        }
        let mut api = ApiError::new(status, err.code(), err.to_string());
        if let Some(secs) = err.retry_after() {
            api = api.with_retry_after(secs);
        }
        api
    }
}

/// Infrastructure failures are ours: 500, cause logged.
impl ErrorCode for sea_orm::DbErr {
    fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
    fn code(&self) -> &'static str {
        "INTERNAL"
    }
}

impl ErrorCode for redis::RedisError {
    fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }
    fn code(&self) -> &'static str {
        "DEPENDENCY_UNAVAILABLE"
    }
    fn retry_after(&self) -> Option<u64> {
        Some(1)
    }
}

/// The problem for a response some layer produced without a body of ours
/// (unknown route, wrong method, body too large, a framework error).
pub fn problem_for_status(status: StatusCode, method: &str, path: &str) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => {
            ApiError::not_found("NOT_FOUND", format!("no such resource: {method} {path}"))
        }
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "METHOD_NOT_ALLOWED",
            format!("method {method} is not allowed on {path}"),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(status, "PAYLOAD_TOO_LARGE", "request body is over 64 KiB")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "UNSUPPORTED_MEDIA_TYPE",
            "request body must be application/json",
        ),
        s if s.is_server_error() => ApiError::new(
            s,
            "INTERNAL",
            "an unexpected error occurred; it has been logged",
        ),
        s => ApiError::new(
            s,
            "INVALID_REQUEST",
            s.canonical_reason().unwrap_or("bad request").to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    struct SeatTaken;
    impl fmt::Display for SeatTaken {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("seats 3, 4 are not available")
        }
    }
    impl ErrorCode for SeatTaken {
        fn status(&self) -> StatusCode {
            StatusCode::CONFLICT
        }
        fn code(&self) -> &'static str {
            "SEAT_UNAVAILABLE"
        }
    }

    async fn body_of(err: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let res = err.to_response();
        let status = res.status();
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = to_bytes(res.into_body()).await.unwrap();
        (status, ct, serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn domain_errors_render_as_problem_json() {
        let (status, ct, body) = body_of(SeatTaken.into()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(ct.as_deref(), Some(PROBLEM_JSON));
        assert_eq!(
            body,
            serde_json::json!({
                "type": "about:blank", "title": "Conflict", "status": 409,
                "detail": "seats 3, 4 are not available", "code": "SEAT_UNAVAILABLE"
            })
        );
    }

    #[actix_web::test]
    async fn internal_errors_hide_their_cause() {
        let (status, _, body) =
            body_of(ApiError::internal("password=hunter2 in connection string")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.to_string().contains("hunter2"));
        assert_eq!(body["code"], "INTERNAL");
    }

    #[actix_web::test]
    async fn retry_after_and_extensions_are_rendered() {
        let err = ApiError::unavailable("NOT_READY", "redis down", 2)
            .with_extension("checks", serde_json::json!({"redis": "down"}));
        let res = err.to_response();
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "2");
        let (_, _, body) = body_of(err).await;
        assert_eq!(body["checks"]["redis"], "down");
    }
}
