//! HTTP routes of payment-api: extract, call the domain, map to the contract.

pub mod payments;
pub mod wallet;

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, HttpResponse, dev::Payload, web};
use common::auth::QueueKeys;
use common::clock::Clock;
use common::error::PROBLEM_JSON;
use common::{ApiError, ErrorCode};
use sea_orm::DatabaseConnection;
use serde::Serialize;

use crate::concerts::ConcertClient;
use crate::config::PaymentConfig;
use crate::domain::idempotency::{Answer, Idempotent};
use crate::domain::payment::PayContext;

/// What every handler shares.
pub struct AppState {
    pub db: DatabaseConnection,
    pub cfg: PaymentConfig,
    pub concerts: ConcertClient,
    pub clock: Clock,
}

impl AppState {
    /// What paying needs, with the waiting room's keys the extractors share.
    pub fn pay_context<'a>(&'a self, queue: &'a QueueKeys) -> PayContext<'a> {
        PayContext {
            db: &self.db,
            cfg: &self.cfg,
            concerts: &self.concerts,
            queue,
            clock: &self.clock,
        }
    }
}

/// The optional `Idempotency-Key` header: 1..=64 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(raw) = req.headers().get("idempotency-key") else {
            return ready(Ok(Self(None)));
        };
        let valid = raw
            .to_str()
            .ok()
            .filter(|k| (1..=64).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
        ready(match valid {
            Some(k) => Ok(Self(Some(k.to_owned()))),
            None => Err(ApiError::invalid(
                "header `Idempotency-Key`: must be 1 to 64 visible ASCII characters",
            )),
        })
    }
}

/// The HTTP answer to a request that may carry a key: a replay exactly as first given; a
/// fresh outcome rendered as it was kept ([`Answer::to`]), so a retry's bytes are the same.
pub fn respond<T, R>(outcome: Idempotent<T, R>) -> Result<HttpResponse, ApiError>
where
    T: Serialize,
    R: ErrorCode + Clone,
{
    let answer = match outcome {
        Idempotent::Fresh(outcome) => Answer::to(&outcome)?,
        Idempotent::Replay(answer) => answer,
    };
    let content_type = if answer.status.is_success() {
        "application/json"
    } else {
        PROBLEM_JSON
    };
    Ok(HttpResponse::build(answer.status)
        .content_type(content_type)
        .json(answer.body))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    wallet::configure(cfg);
    payments::configure(cfg);
}
