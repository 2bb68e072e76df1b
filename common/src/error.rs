//! One error envelope for the whole product: `application/problem+json` (API.md).
//!
//! Every code a client can see is declared once, in a catalogue made by [`error_codes!`]
//! (meilisearch's shape: variant → HTTP status → code string): the platform's own ones in
//! [`Code`] here, each service's in its `error.rs`. Typed errors say their status and code
//! through [`ErrorCode`]; one blanket conversion turns them into [`ApiError`], which is
//! rendered in exactly one place. A server error never shows its cause: it is logged.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Declares an error catalogue: an enum whose variants each name their HTTP status and their
/// stable upper-snake code, with `status()`, `code()` and `err(detail)` (the [`ApiError`]).
///
/// ```ignore
/// common::error_codes! {
///     pub enum ConcertCode {
///         SeatUnavailable = CONFLICT "SEAT_UNAVAILABLE",
///     }
/// }
/// return Err(ConcertCode::SeatUnavailable.err("seats 3, 4 are taken"));
/// ```
#[macro_export]
macro_rules! error_codes {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $( $(#[$vmeta:meta])* $variant:ident = $status:ident $code:literal ),* $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),*
        }

        impl $name {
            /// Every code of the catalogue, for documentation and tests.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn status(self) -> ::actix_web::http::StatusCode {
                match self {
                    $( $name::$variant => ::actix_web::http::StatusCode::$status ),*
                }
            }

            pub fn code(self) -> &'static str {
                match self {
                    $( $name::$variant => $code ),*
                }
            }

            /// This error, with `detail` for the client.
            pub fn err(self, detail: impl Into<String>) -> $crate::ApiError {
                $crate::ApiError::new(self.status(), self.code(), detail)
            }
        }

        impl From<$name> for $crate::error::Catalogued {
            fn from(c: $name) -> Self {
                $crate::error::Catalogued::new(c.status(), c.code())
            }
        }

        /// Every catalogue keeps its codes unique and never repeats one of the platform's.
        #[cfg(test)]
        mod error_codes_tests {
            #[test]
            fn codes_are_unique_and_none_repeats_a_platform_code() {
                $crate::error::assert_catalogue::<super::$name>(
                    super::$name::ALL.iter().map(|c| c.code()),
                );
            }
        }
    };
}

/// What `error_codes!`'s generated test checks of a catalogue `T` with `codes`.
#[doc(hidden)]
pub fn assert_catalogue<T: 'static>(codes: impl Iterator<Item = &'static str>) {
    let codes: Vec<_> = codes.collect();
    let unique: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(
        unique.len(),
        codes.len(),
        "a code is declared twice: {codes:?}"
    );
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<Code>() {
        for code in &codes {
            assert!(
                Code::ALL.iter().all(|c| c.code() != *code),
                "{code} is already a platform code"
            );
        }
    }
}

/// One entry of a catalogue, whichever it is (the platform's [`Code`] or a service's): what
/// a typed error of a service maps each of its variants to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Catalogued {
    status: StatusCode,
    code: &'static str,
}

impl Catalogued {
    /// Only for `error_codes!`: entries come from a catalogue, never from a literal.
    #[doc(hidden)]
    pub const fn new(status: StatusCode, code: &'static str) -> Self {
        Self { status, code }
    }

    pub fn status(self) -> StatusCode {
        self.status
    }

    pub fn code(self) -> &'static str {
        self.code
    }
}

error_codes! {
    /// The codes the platform itself answers with, whatever the service.
    pub enum Code {
        /// Malformed JSON, a wrong type, an out-of-range value: the detail names the field.
        InvalidRequest = BAD_REQUEST "INVALID_REQUEST",
        Unauthenticated = UNAUTHORIZED "UNAUTHENTICATED",
        Forbidden = FORBIDDEN "FORBIDDEN",
        /// Missing, unknown, waiting, expired, or for another user or concert.
        QueueTokenInvalid = UNAUTHORIZED "QUEUE_TOKEN_INVALID",
        /// An unknown route, or another user's resource (never revealed).
        NotFound = NOT_FOUND "NOT_FOUND",
        MethodNotAllowed = METHOD_NOT_ALLOWED "METHOD_NOT_ALLOWED",
        PayloadTooLarge = PAYLOAD_TOO_LARGE "PAYLOAD_TOO_LARGE",
        UnsupportedMediaType = UNSUPPORTED_MEDIA_TYPE "UNSUPPORTED_MEDIA_TYPE",
        /// `/health/ready`: a required dependency is down.
        NotReady = SERVICE_UNAVAILABLE "NOT_READY",
        /// Redis or another service could not answer; retry after `Retry-After`.
        DependencyUnavailable = SERVICE_UNAVAILABLE "DEPENDENCY_UNAVAILABLE",
        /// Our bug or an infrastructure fault; the cause is logged, never shown.
        Internal = INTERNAL_SERVER_ERROR "INTERNAL",
    }
}

/// The detail every server error shows instead of its cause.
const INTERNAL_DETAIL: &str = "an unexpected error occurred; it has been logged";

/// The detail a 503 of a typed error (Redis, another service or the database cannot answer)
/// shows instead of its cause: nothing unexpected, only a wait.
const UNAVAILABLE_DETAIL: &str =
    "a service this one depends on cannot answer right now; retry after Retry-After seconds";

/// Implemented by every error that can reach a client.
pub trait ErrorCode: fmt::Display {
    fn status(&self) -> StatusCode;
    /// Stable upper-snake code, e.g. `SEAT_UNAVAILABLE`.
    fn code(&self) -> &'static str;
    /// Seconds a client should wait before retrying (429, 503).
    fn retry_after(&self) -> Option<u64> {
        None
    }
    /// Members added to the problem document (e.g. the `seat_nos` of `SEAT_UNAVAILABLE`).
    fn extensions(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        None
    }
    /// Whether the client may read this error's text. A server error's text is ours (a
    /// database message, an address) and is replaced by a generic one, unless the error was
    /// written for the client (a 503 saying nothing was charged).
    fn detail_is_public(&self) -> bool {
        !self.status().is_server_error()
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
        Code::InvalidRequest.err(detail)
    }

    /// 400 `INVALID_REQUEST` for one named field.
    pub fn invalid_field(field: &str, reason: impl fmt::Display) -> Self {
        Self::invalid(format!("field `{field}`: {reason}"))
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Code::Unauthenticated.err(detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Code::Forbidden.err(detail)
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
        Code::Internal.err(INTERNAL_DETAIL)
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
    /// The `Retry-After` its response carries, in seconds.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
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
        // A server error's text goes to the log with the request's span, not to the client.
        let detail = if err.detail_is_public() {
            err.to_string()
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            UNAVAILABLE_DETAIL.to_owned()
        } else {
            INTERNAL_DETAIL.to_owned()
        };
        let mut api = ApiError::new(status, err.code(), detail);
        // Every 503 says when to come back: 1 s unless the error knows better.
        let retry_after = err
            .retry_after()
            .or((status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
        if let Some(secs) = retry_after {
            api = api.with_retry_after(secs);
        }
        api.extensions = err.extensions();
        api
    }
}

/// A database that cannot be reached right now (restarting, connections lost, none to be
/// had) is a 503 with Retry-After, as Redis down is; any other database failure is ours: 500,
/// cause logged.
impl ErrorCode for sea_orm::DbErr {
    fn status(&self) -> StatusCode {
        db_code(self).status()
    }
    fn code(&self) -> &'static str {
        db_code(self).code()
    }
    fn retry_after(&self) -> Option<u64> {
        crate::db::is_unavailable(self).then_some(1)
    }
}

/// The catalogue code of a database failure: `DEPENDENCY_UNAVAILABLE` (503) when the database
/// cannot be reached right now ([`crate::db::is_unavailable`]), else `INTERNAL` (500). For the
/// services' own errors that carry a `DbErr`.
pub fn db_code(e: &sea_orm::DbErr) -> Code {
    if crate::db::is_unavailable(e) {
        Code::DependencyUnavailable
    } else {
        Code::Internal
    }
}

impl ErrorCode for redis::RedisError {
    fn status(&self) -> StatusCode {
        Code::DependencyUnavailable.status()
    }
    fn code(&self) -> &'static str {
        Code::DependencyUnavailable.code()
    }
    fn retry_after(&self) -> Option<u64> {
        Some(1)
    }
}

/// The problem for a response some layer produced without a body of ours
/// (unknown route, wrong method, body too large, a framework error).
pub fn problem_for_status(status: StatusCode, method: &str, path: &str) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => Code::NotFound.err(format!("no such resource: {method} {path}")),
        StatusCode::METHOD_NOT_ALLOWED => {
            Code::MethodNotAllowed.err(format!("method {method} is not allowed on {path}"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge.err("request body is over 64 KiB"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            Code::UnsupportedMediaType.err("request body must be application/json")
        }
        s if s.is_server_error() => ApiError::new(s, Code::Internal.code(), INTERNAL_DETAIL),
        s => ApiError::new(
            s,
            Code::InvalidRequest.code(),
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
    async fn a_database_error_never_shows_its_text() {
        let err = sea_orm::DbErr::Custom("invalid byte sequence for encoding UTF8: 0x00".into());
        let (status, _, body) = body_of(err.into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["code"], "INTERNAL");
        assert!(!body.to_string().contains("0x00"), "{body}");
    }

    #[actix_web::test]
    async fn redis_down_is_a_503_that_says_so_without_its_cause() {
        let err = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connect 10.0.0.7:6379",
        ));
        let api = ApiError::from(err);
        let res = api.to_response();
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let (status, ct, body) = body_of(api).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ct.as_deref(), Some(PROBLEM_JSON));
        assert_eq!(body["code"], "DEPENDENCY_UNAVAILABLE");
        assert_eq!(body["detail"], UNAVAILABLE_DETAIL);
        assert!(!body.to_string().contains("10.0.0.7"), "{body}");
    }

    #[actix_web::test]
    async fn a_database_out_of_reach_is_a_503_and_any_other_database_failure_a_500() {
        let reset = sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        )));
        let api = ApiError::from(reset);
        assert_eq!(
            api.to_response()
                .headers()
                .get(header::RETRY_AFTER)
                .unwrap(),
            "1"
        );
        let (status, _, body) = body_of(api).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["code"], "DEPENDENCY_UNAVAILABLE");
        assert_eq!(body["detail"], UNAVAILABLE_DETAIL);
        let (status, _, body) = body_of(sea_orm::DbErr::Custom("bad".into()).into()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("INTERNAL"))
        );
    }

    #[test]
    fn the_platform_catalogue_maps_statuses() {
        assert_eq!(Code::QueueTokenInvalid.status(), StatusCode::UNAUTHORIZED);
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
