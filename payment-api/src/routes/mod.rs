//! HTTP routes of payment-api: extract, call the domain, map to the contract.

pub mod payments;
pub mod wallet;

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use common::ApiError;
use sea_orm::DatabaseConnection;

use crate::concerts::ConcertClient;
use crate::config::PaymentConfig;

/// What every handler shares.
pub struct AppState {
    pub db: DatabaseConnection,
    pub cfg: PaymentConfig,
    pub concerts: ConcertClient,
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

pub fn configure(cfg: &mut web::ServiceConfig) {
    wallet::configure(cfg);
    payments::configure(cfg);
}
