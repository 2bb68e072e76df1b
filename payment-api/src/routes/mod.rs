//! HTTP routes of payment-api: extract, call the domain, map to the contract.

pub mod payments;
pub mod wallet;

use actix_web::{HttpResponse, web};
use common::auth::QueueKeys;
use common::clock::Clock;
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
    pub board: common::held::HoldBoard,
    pub clock: Clock,
    pub money: std::sync::Arc<crate::metrics::MoneyMetrics>,
    /// Times the payments, for the waiting room's admission pace.
    pub pressure: common::pressure::Pressure,
}

impl AppState {
    /// What paying needs, with the waiting room's keys the extractors share.
    pub fn pay_context<'a>(&'a self, queue: &'a QueueKeys) -> PayContext<'a> {
        PayContext {
            db: &self.db,
            cfg: &self.cfg,
            concerts: &self.concerts,
            board: &self.board,
            queue,
            clock: &self.clock,
        }
    }
}

pub use common::idempotency::IdempotencyKey;

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
    Ok(answer.respond())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    wallet::configure(cfg);
    payments::configure(cfg);
}
