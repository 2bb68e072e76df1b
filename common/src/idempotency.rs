//! Idempotency keys (API.md "Idempotency"), as payment-api (charges, payments) and
//! concert-api (holds) keep them: one table layout (`idempotency_keys`: `user_id, key,
//! request_hash, status_code, response_body, created_at`, in each service's own database),
//! one set of statements and one set of rules, written once here.
//!
//! The rules: the first request with a key claims it, does its work and stores its answer,
//! all in one transaction; a repeat with the same request gets that answer again, byte for
//! byte, whatever happened since; a repeat with another request is refused (422). Concurrent
//! requests with one key serialize on the key's row: a repeat waits for the first to commit,
//! up to [`IN_FLIGHT_WAIT`], then replays its answer — or claims the key if the first rolled
//! back — or is refused (409 with `Retry-After`).
//!
//! What stays with each service, because it genuinely differs:
//! - how the claim's wait is bounded. PostgreSQL bounds it with `lock_timeout`; payment-api's
//!   pool sets that for every statement at connect, so it claims with [`claim`] as is;
//!   concert-api's pool sets none (a hold waits on hot seat rows), so it bounds the key's
//!   insert itself around [`insert`] and [`decide`].
//! - the codes a refused key answers with: each service declares `IDEMPOTENCY_KEY_REUSED` and
//!   `IDEMPOTENCY_KEY_IN_USE` in its own catalogue, and names those entries to [`judge`].
//! - what "the same request" is ([`KeyedRequest::request`]) and how the work runs around the
//!   claim (payment-api's wrapper; a hold acts after its commit).

use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, Statement};
use serde::Serialize;

use crate::ApiError;
use crate::error::{Catalogued, ErrorCode, PROBLEM_JSON};

/// The request's optional `Idempotency-Key` header: 1 to 64 visible ASCII characters, else
/// 400 naming the header.
pub struct IdempotencyKey(pub Option<String>);

impl FromRequest for IdempotencyKey {
    type Error = crate::ApiError;
    type Future = std::future::Ready<Result<Self, crate::ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(raw) = req.headers().get("idempotency-key") else {
            return std::future::ready(Ok(Self(None)));
        };
        let valid = raw
            .to_str()
            .ok()
            .filter(|k| (1..=64).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
        std::future::ready(match valid {
            Some(k) => Ok(Self(Some(k.to_owned()))),
            None => Err(crate::ApiError::invalid(
                "header `Idempotency-Key`: must be 1 to 64 visible ASCII characters",
            )),
        })
    }
}

/// How long a repeat waits for a first request with the same key that is still running.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);

/// What a key comes to for a request: the stored row judged against the request's hash.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// First use: do the work, then [`record`] the answer before committing.
    Fresh,
    /// The first request's answer, to give again.
    Replay {
        status: u16,
        body: serde_json::Value,
    },
    /// Same key, different request: 422 `IDEMPOTENCY_KEY_REUSED`.
    Reused,
    /// A request with this key is still running after [`IN_FLIGHT_WAIT`]: 409, retry later.
    InUse,
}

#[derive(FromQueryResult)]
struct Stored {
    request_hash: String,
    status_code: Option<i32>,
    response_body: Option<serde_json::Value>,
}

impl Stored {
    fn judge(self, request_hash: &str) -> Claim {
        if self.request_hash != request_hash {
            return Claim::Reused;
        }
        match (self.status_code, self.response_body) {
            (Some(status), Some(body)) => Claim::Replay {
                status: status as u16,
                body,
            },
            // Never committed without an answer; treat a stray one as a conflicting reuse.
            _ => Claim::Reused,
        }
    }
}

/// What is stored for a key, without claiming it (a cheap early replay).
pub async fn lookup<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    key: &str,
    request_hash: &str,
) -> Result<Option<Claim>, DbErr> {
    Ok(Stored::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        [user_id.into(), key.into()],
    ))
    .one(db)
    .await?
    .map(|s| s.judge(request_hash)))
}

/// What inserting a key's row came to (the first half of a claim, see [`claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The row is this transaction's: the key is claimed.
    Claimed,
    /// A committed row was there: its stored answer decides.
    Present,
    /// Another transaction's uncommitted row outlasted the lock wait. This transaction is
    /// aborted now: it takes no more statements, and its caller answers 409 and drops it.
    TimedOut,
}

/// Inserts the key's row inside the caller's transaction. If another transaction holds the
/// same key uncommitted, the insert waits for it — as long as the connection's
/// `lock_timeout` allows, which the caller sets ([`IN_FLIGHT_WAIT`]).
pub async fn insert<C: ConnectionTrait>(
    txn: &C,
    user_id: i64,
    key: &str,
    request_hash: &str,
) -> Result<Inserted, DbErr> {
    match txn
        .execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [user_id.into(), key.into(), request_hash.into()],
        ))
        .await
    {
        Ok(done) if done.rows_affected() == 1 => Ok(Inserted::Claimed),
        Ok(_) => Ok(Inserted::Present),
        Err(err) if crate::db::is_lock_timeout(&err) => Ok(Inserted::TimedOut),
        Err(err) => Err(err),
    }
}

/// The claim an [`insert`] came to: [`Claim::Fresh`] for a claimed key, [`Claim::InUse`] for
/// a wait that timed out (no statement is sent), else the stored answer judged against
/// `request_hash`.
pub async fn decide<C: ConnectionTrait>(
    txn: &C,
    inserted: Inserted,
    user_id: i64,
    key: &str,
    request_hash: &str,
) -> Result<Claim, DbErr> {
    match inserted {
        Inserted::Claimed => Ok(Claim::Fresh),
        Inserted::TimedOut => Ok(Claim::InUse),
        Inserted::Present => Ok(lookup(txn, user_id, key, request_hash)
            .await?
            .unwrap_or(Claim::Reused)),
    }
}

/// Claims `key` inside the caller's transaction, on a connection whose `lock_timeout`
/// already bounds the wait ([`insert`], then [`decide`]): if another transaction holds the
/// same key uncommitted, the insert waits for it (then [`Claim::InUse`]), then sees its
/// stored answer — or, if it rolled back, claims the key itself.
pub async fn claim<C: ConnectionTrait>(
    txn: &C,
    user_id: i64,
    key: &str,
    request_hash: &str,
) -> Result<Claim, DbErr> {
    let inserted = insert(txn, user_id, key, request_hash).await?;
    decide(txn, inserted, user_id, key, request_hash).await
}

/// Stores the answer of a claimed key (same transaction as the work).
pub async fn record<C: ConnectionTrait>(
    txn: &C,
    user_id: i64,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), DbErr> {
    txn.execute_raw(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "UPDATE idempotency_keys SET status_code = $3, response_body = $4 WHERE user_id = $1 AND key = $2",
        [
            user_id.into(),
            key.into(),
            i32::from(status).into(),
            body.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Forgets keys stored before `before` (they are kept 24 hours); answers how many. A retry
/// with a forgotten key is processed afresh.
pub async fn delete_before<C: ConnectionTrait>(
    db: &C,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    crate::db::delete_before(
        db,
        "DELETE FROM idempotency_keys WHERE created_at < $1",
        before,
    )
    .await
}

/// A request sent with an `Idempotency-Key`: whose key, and what "the same request" is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRequest<'a> {
    pub user_id: i64,
    pub key: &'a str,
    /// Stored with the key (`request_hash`); a retry must bring the same. Each service says
    /// what of a request counts (a hold's schedule and set of seats, a charge's amount, …).
    pub request: String,
}

impl<'a> KeyedRequest<'a> {
    pub fn new(user_id: i64, key: &'a str, request: String) -> Self {
        Self {
            user_id,
            key,
            request,
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
    /// 201 with what the request created.
    pub fn created(body: serde_json::Value) -> Self {
        Self {
            status: StatusCode::CREATED,
            body,
        }
    }

    /// A refusal decided under the claim: its status and problem document.
    pub fn refused(err: &ApiError) -> Self {
        Self {
            status: err.status(),
            body: err.problem_json(),
        }
    }

    /// The answer an outcome gets: what it created, 201 with it ([`Answer::created`]); a
    /// refusal, its problem document ([`Answer::refused`]). The one rendering, kept for
    /// retries and sent to the first caller alike.
    pub fn to<T: Serialize, R: ErrorCode + Clone>(
        outcome: &Result<T, R>,
    ) -> Result<Self, ApiError> {
        Ok(match outcome {
            Ok(created) => {
                Self::created(serde_json::to_value(created).map_err(ApiError::internal)?)
            }
            Err(refusal) => Self::refused(&ApiError::from(refusal.clone())),
        })
    }

    /// The HTTP response: the same status and body every time it is given.
    pub fn respond(&self) -> HttpResponse {
        let content_type = if self.status.is_success() {
            "application/json"
        } else {
            PROBLEM_JSON
        };
        HttpResponse::build(self.status)
            .content_type(content_type)
            .json(&self.body)
    }
}

/// Why a key cannot be used for this request. Never kept: the key stays as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("this Idempotency-Key was used with a different request")]
    Reused,
    /// The first request is still running after [`IN_FLIGHT_WAIT`]; its answer will be there
    /// for the retry.
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    InUse,
}

impl KeyRefusal {
    /// This refusal as the error a client gets, with `entry` of the refusing service's
    /// catalogue as its status and code; a key in use says to retry in a second.
    pub fn err(self, entry: impl Into<Catalogued>) -> ApiError {
        Refused {
            refusal: self,
            entry: entry.into(),
        }
        .into()
    }
}

/// A [`KeyRefusal`] as an entry of the refusing service's catalogue.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{refusal}")]
struct Refused {
    refusal: KeyRefusal,
    entry: Catalogued,
}

impl ErrorCode for Refused {
    fn status(&self) -> StatusCode {
        self.entry.status()
    }
    fn code(&self) -> &'static str {
        self.entry.code()
    }
    fn retry_after(&self) -> Option<u64> {
        matches!(self.refusal, KeyRefusal::InUse).then_some(1)
    }
}

/// The stored answer to replay, a refusal of the key, or `None`: go on. A refusal answers
/// with the service's own catalogue entries: `reused` (`IDEMPOTENCY_KEY_REUSED`, 422) and
/// `in_use` (`IDEMPOTENCY_KEY_IN_USE`, 409).
pub fn judge(
    claim: Claim,
    reused: impl Into<Catalogued>,
    in_use: impl Into<Catalogued>,
) -> Result<Option<Answer>, ApiError> {
    match claim {
        Claim::Fresh => Ok(None),
        Claim::Replay { status, body } => Ok(Some(Answer {
            status: StatusCode::from_u16(status).map_err(ApiError::internal)?,
            body,
        })),
        Claim::Reused => Err(KeyRefusal::Reused.err(reused)),
        Claim::InUse => Err(KeyRefusal::InUse.err(in_use)),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header;
    use serde_json::json;

    use super::*;
    use crate::error::Code;

    fn stored(hash: &str, status: Option<i32>, body: Option<serde_json::Value>) -> Stored {
        Stored {
            request_hash: hash.to_owned(),
            status_code: status,
            response_body: body,
        }
    }

    #[test]
    fn a_stored_row_replays_for_the_same_request_only() {
        assert_eq!(
            stored("charge:5", Some(201), Some(json!({"id": 1}))).judge("charge:5"),
            Claim::Replay {
                status: 201,
                body: json!({"id": 1})
            }
        );
        assert_eq!(
            stored("charge:5", Some(201), Some(json!({"id": 1}))).judge("charge:6"),
            Claim::Reused
        );
        assert_eq!(
            stored("charge:5", None, None).judge("charge:5"),
            Claim::Reused
        );
    }

    #[test]
    fn a_claim_is_judged_into_a_replay_a_refusal_or_nothing() {
        // Any two catalogue entries will do; the services name their own.
        let judged = |claim| judge(claim, Code::InvalidRequest, Code::NotFound);
        assert_eq!(judged(Claim::Fresh).unwrap(), None);
        assert_eq!(
            judged(Claim::Replay {
                status: 402,
                body: json!({"code": "X"})
            })
            .unwrap(),
            Some(Answer {
                status: StatusCode::PAYMENT_REQUIRED,
                body: json!({"code": "X"})
            })
        );
        let reused = judged(Claim::Reused).unwrap_err();
        assert_eq!(reused.code(), Code::InvalidRequest.code());
        assert_eq!(
            reused.detail(),
            "this Idempotency-Key was used with a different request"
        );
        assert!(
            !reused
                .to_response()
                .headers()
                .contains_key(header::RETRY_AFTER)
        );
        let in_use = judged(Claim::InUse).unwrap_err();
        assert_eq!(in_use.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            in_use
                .to_response()
                .headers()
                .get(header::RETRY_AFTER)
                .unwrap(),
            "1"
        );
    }

    #[test]
    fn an_outcome_is_kept_as_it_is_answered() {
        assert_eq!(
            Answer::to::<_, SomeRefusal>(&Ok(json!({"id": 7}))).unwrap(),
            Answer::created(json!({"id": 7}))
        );
        let refused = Answer::to::<(), _>(&Err(SomeRefusal)).unwrap();
        assert_eq!(refused.status, StatusCode::CONFLICT);
        assert_eq!(refused.body["code"], "SOME_CONFLICT");
    }

    #[derive(Debug, Clone, thiserror::Error)]
    #[error("refused")]
    struct SomeRefusal;

    impl ErrorCode for SomeRefusal {
        fn status(&self) -> StatusCode {
            StatusCode::CONFLICT
        }
        fn code(&self) -> &'static str {
            "SOME_CONFLICT"
        }
    }
}
