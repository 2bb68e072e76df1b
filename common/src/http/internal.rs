//! The service credential of `/internal/**`: a caller presents the shared secret
//! `INTERNAL_API_TOKEN` in `X-Internal-Token`; the serving side compares it in constant time
//! and answers 401 `INTERNAL_UNAUTHENTICATED` when it is missing or wrong. A service started
//! without the token refuses every internal request (fail closed).
//!
//! ```ignore
//! cfg.service(web::scope("/internal").wrap(from_fn(require_internal_token)).route(...));
//! ```

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The header a calling service sends its credential in.
pub const INTERNAL_TOKEN_HEADER: &str = "X-Internal-Token";

crate::error_codes! {
    /// What `/internal/**` answers a caller without the service credential.
    pub enum InternalCode {
        Unauthenticated = UNAUTHORIZED "INTERNAL_UNAUTHENTICATED",
    }
}

/// The credential this service accepts on `/internal/**` (app data, registered by
/// [`crate::http::serve`] from `HttpConfig::internal_token`).
#[derive(Clone)]
pub struct InternalAuth {
    token: Option<Arc<Secret<String>>>,
}

impl InternalAuth {
    pub fn new(token: Option<Secret<String>>) -> Self {
        Self {
            token: token.map(Arc::new),
        }
    }

    /// Whether `presented` is the configured token. Always `false` without one; the
    /// comparison takes the same time wherever the two differ.
    pub fn accepts(&self, presented: Option<&[u8]>) -> bool {
        match (&self.token, presented) {
            (Some(token), Some(presented)) => {
                // `ct_eq` on slices of different lengths returns at once, revealing only the
                // length; the token's length is not secret (32+ random characters).
                bool::from(token.expose().as_bytes().ct_eq(presented))
            }
            _ => false,
        }
    }

    pub fn configured(&self) -> bool {
        self.token.is_some()
    }
}

/// Middleware for an `/internal` scope: lets the request through only with the right
/// `X-Internal-Token`, otherwise 401 problem+json `INTERNAL_UNAUTHENTICATED`.
pub async fn require_internal_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let accepted = req
        .app_data::<web::Data<InternalAuth>>()
        .is_some_and(|auth| {
            auth.accepts(
                req.headers()
                    .get(INTERNAL_TOKEN_HEADER)
                    .map(|v| v.as_bytes()),
            )
        });
    if !accepted {
        let detail = if req.headers().contains_key(INTERNAL_TOKEN_HEADER) {
            "header X-Internal-Token does not hold this platform's service credential"
        } else {
            "header X-Internal-Token (the service credential) is required for /internal/**"
        };
        tracing::warn!(path = %req.path(), "internal request refused: no valid service credential");
        let response = InternalCode::Unauthenticated.err(detail).to_response();
        return Ok(req.into_response(response));
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_is_accepted() {
        let auth = InternalAuth::new(Some(Secret::new("a".repeat(32))));
        assert!(auth.accepts(Some("a".repeat(32).as_bytes())));
        assert!(!auth.accepts(Some("a".repeat(31).as_bytes())));
        assert!(!auth.accepts(Some(format!("{}b", "a".repeat(31)).as_bytes())));
        assert!(!auth.accepts(Some(b"")));
        assert!(!auth.accepts(None));
    }

    #[test]
    fn without_a_configured_token_nothing_is_accepted() {
        let auth = InternalAuth::new(None);
        assert!(!auth.configured());
        assert!(!auth.accepts(Some(b"anything")));
        assert!(!auth.accepts(Some(b"")));
        assert!(!auth.accepts(None));
    }
}
