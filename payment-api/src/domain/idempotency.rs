//! The idempotency wrapper of charging and paying (API.md "Idempotency"), written once: a
//! request with an `Idempotency-Key` claims the key, does its work and keeps its answer, all
//! in one transaction; a retry with the same request gets that answer again whatever has
//! happened since, byte for byte; a retry with another request is refused; a retry that comes
//! while the first still runs waits for it (`store::idempotency`), then replays or is refused.
//!
//! What is kept is the answer as the client got it — status and body — so a replay needs
//! nothing but the stored row. Only outcomes decided under the claim are kept: the work's
//! `Ok(Err(refusal))` and `Ok(Ok(created))`. An `Err` (400, 401, 404, 5xx) rolls the claim
//! back, and the key stays free for a retry to be processed afresh.

use actix_web::http::StatusCode;
use common::{ApiError, ErrorCode};
use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait};
use serde::Serialize;

use crate::error::PaymentCode;
use crate::store::idempotency::{self, Claim};

/// A request sent with an `Idempotency-Key`: whose key, and what "the same request" is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRequest<'a> {
    user_id: i64,
    key: &'a str,
    /// Stored with the key (`request_hash`); a retry must bring the same.
    request: String,
}

impl<'a> KeyedRequest<'a> {
    /// A charge: the same request is the same amount.
    pub fn charge(user_id: i64, key: &'a str, amount: i64) -> Self {
        Self {
            user_id,
            key,
            request: format!("charge:{amount}"),
        }
    }

    /// A payment: the same request is the same reservation.
    pub fn payment(user_id: i64, key: &'a str, reservation_id: i64) -> Self {
        Self {
            user_id,
            key,
            request: format!("payment:{reservation_id}"),
        }
    }
}

/// The answer a client was given, kept with its key: status and body, as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl Answer {
    /// The answer an outcome gets: a keyed request that takes effect creates something (a
    /// charge, a payment), 201 with it; a refusal, its problem document. The one rendering,
    /// kept for retries and sent to the first caller alike.
    pub fn to<T: Serialize, R: ErrorCode + Clone>(
        outcome: &Result<T, R>,
    ) -> Result<Self, ApiError> {
        Ok(match outcome {
            Ok(created) => Self {
                status: StatusCode::CREATED,
                body: serde_json::to_value(created).map_err(ApiError::internal)?,
            },
            Err(refusal) => {
                let err = ApiError::from(refusal.clone());
                Self {
                    status: err.status(),
                    body: err.problem_json(),
                }
            }
        })
    }
}

/// What a request that may carry a key comes to.
#[derive(Debug)]
pub enum Idempotent<T, R> {
    /// This request's own outcome: what it created, or why it was refused.
    Fresh(Result<T, R>),
    /// A retry's: the first request's answer, as it was given.
    Replay(Answer),
}

/// Why a key cannot be used for this request. Never kept: the key stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("this Idempotency-Key was used with a different request")]
    Reused,
    /// The first request is still running after `store::idempotency::IN_FLIGHT_WAIT`; its
    /// answer will be there for the retry.
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    InUse,
}

impl KeyRefusal {
    fn catalogued(&self) -> PaymentCode {
        match self {
            Self::Reused => PaymentCode::IdempotencyKeyReused,
            Self::InUse => PaymentCode::IdempotencyKeyInUse,
        }
    }
}

impl ErrorCode for KeyRefusal {
    fn status(&self) -> StatusCode {
        self.catalogued().status()
    }
    fn code(&self) -> &'static str {
        self.catalogued().code()
    }
    fn retry_after(&self) -> Option<u64> {
        matches!(self, Self::InUse).then_some(1)
    }
}

/// The stored answer to replay, a refusal of the key, or `None`: go on.
fn judge(claim: Claim) -> Result<Option<Answer>, ApiError> {
    match claim {
        Claim::Fresh => Ok(None),
        Claim::Replay { status, body } => Ok(Some(Answer {
            status: StatusCode::from_u16(status).map_err(ApiError::internal)?,
            body,
        })),
        Claim::Reused => Err(KeyRefusal::Reused.into()),
        Claim::InUse => Err(KeyRefusal::InUse.into()),
    }
}

/// A stored answer for `request`'s key, read without claiming it: a replay at the cost of one
/// plain read, before any slower check. An answer still being written is not seen here; the
/// claim in [`run`] waits for it.
pub async fn replay(
    db: &DatabaseConnection,
    request: Option<&KeyedRequest<'_>>,
) -> Result<Option<Answer>, ApiError> {
    let Some(r) = request else {
        return Ok(None);
    };
    match idempotency::lookup(db, r.user_id, r.key, &r.request).await? {
        Some(claim) => judge(claim),
        None => Ok(None),
    }
}

/// Runs `work` in one transaction under `request`'s key (if any): claims the key — a stored
/// answer is replayed instead, a reused or busy key refused — then does the work, keeps the
/// answer its outcome gets ([`Answer::to`]) and commits. `work` answers `Ok(outcome)` when
/// the outcome is decided (kept), `Err` when it is not (rolled back with the claim).
pub async fn run<T, R>(
    db: &DatabaseConnection,
    request: Option<&KeyedRequest<'_>>,
    work: impl AsyncFnOnce(&DatabaseTransaction) -> Result<Result<T, R>, ApiError>,
) -> Result<Idempotent<T, R>, ApiError>
where
    T: Serialize,
    R: ErrorCode + Clone,
{
    let txn = db.begin().await?;
    if let Some(r) = request
        && let Some(answer) = judge(idempotency::claim(&txn, r.user_id, r.key, &r.request).await?)?
    {
        return Ok(Idempotent::Replay(answer));
    }
    let outcome = work(&txn).await?;
    if let Some(r) = request {
        let answer = Answer::to(&outcome)?;
        idempotency::record(&txn, r.user_id, r.key, answer.status.as_u16(), &answer.body).await?;
    }
    txn.commit().await?;
    Ok(Idempotent::Fresh(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::payment::PayRefusal;

    #[test]
    fn a_refusal_is_kept_as_its_problem_document() {
        let answer = Answer::to::<(), _>(&Err(PayRefusal::InsufficientBalance(1000))).unwrap();
        assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(
            answer.body,
            serde_json::json!({"type": "about:blank", "title": "Payment Required", "status": 402,
                "detail": "the wallet does not hold 1000",
                "code": PaymentCode::InsufficientBalance.code()})
        );
    }

    #[test]
    fn a_key_in_use_says_when_to_retry_and_a_reused_one_does_not() {
        let in_use = ApiError::from(KeyRefusal::InUse);
        assert_eq!(in_use.status(), StatusCode::CONFLICT);
        assert_eq!(in_use.code(), PaymentCode::IdempotencyKeyInUse.code());
        assert_eq!(KeyRefusal::InUse.retry_after(), Some(1));
        assert_eq!(KeyRefusal::Reused.retry_after(), None);
        assert_eq!(
            ApiError::from(KeyRefusal::Reused).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn a_request_is_known_by_what_it_asks_for() {
        assert_eq!(KeyedRequest::charge(1, "k", 500).request, "charge:500");
        assert_eq!(KeyedRequest::payment(1, "k", 7).request, "payment:7");
    }
}
