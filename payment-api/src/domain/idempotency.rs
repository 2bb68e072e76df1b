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
//!
//! The answer and request types and the rules of judging a key are
//! [`common::idempotency`]'s, shared with concert-api's hold keys. What is payment-api's own
//! is here: what the same charge or payment is, the catalogue entries a refused key answers
//! with, and the wrapper ([`run`]), which fits work that is finished at its commit (a hold is
//! not: it acts after its commit, so concert-api runs its own transaction around the claim).

use common::{ApiError, ErrorCode};
use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait};
use serde::Serialize;

use crate::error::PaymentCode;
use crate::store::idempotency::{self, Claim};

pub use common::idempotency::{Answer, KeyedRequest};

/// A charge: the same request is the same amount.
pub fn charge_request(user_id: i64, key: &str, amount: i64) -> KeyedRequest<'_> {
    KeyedRequest::new(user_id, key, format!("charge:{amount}"))
}

/// A payment: the same request is the same reservation.
pub fn payment_request(user_id: i64, key: &str, reservation_id: i64) -> KeyedRequest<'_> {
    KeyedRequest::new(user_id, key, format!("payment:{reservation_id}"))
}

/// What a request that may carry a key comes to.
#[derive(Debug)]
pub enum Idempotent<T, R> {
    /// This request's own outcome: what it created, or why it was refused.
    Fresh(Result<T, R>),
    /// A retry's: the first request's answer, as it was given.
    Replay(Answer),
}

/// The stored answer to replay, a refusal of the key, or `None`: go on. The rules are
/// [`common::idempotency::judge`]'s; a refused key answers with payment-api's own catalogue
/// entries (`PaymentCode`), where its codes are declared and documented.
fn judge(claim: Claim) -> Result<Option<Answer>, ApiError> {
    common::idempotency::judge(
        claim,
        PaymentCode::IdempotencyKeyReused,
        PaymentCode::IdempotencyKeyInUse,
    )
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
    use actix_web::http::StatusCode;
    use actix_web::http::header::RETRY_AFTER;

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
    fn a_refused_key_answers_with_payment_api_s_codes() {
        let in_use = judge(Claim::InUse).unwrap_err();
        assert_eq!(in_use.status(), StatusCode::CONFLICT);
        assert_eq!(in_use.code(), PaymentCode::IdempotencyKeyInUse.code());
        assert_eq!(
            in_use.to_response().headers().get(RETRY_AFTER).unwrap(),
            "1"
        );
        let reused = judge(Claim::Reused).unwrap_err();
        assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reused.code(), PaymentCode::IdempotencyKeyReused.code());
    }

    #[test]
    fn a_request_is_known_by_what_it_asks_for() {
        assert_eq!(charge_request(1, "k", 500).request, "charge:500");
        assert_eq!(payment_request(1, "k", 7).request, "payment:7");
    }
}
