//! The rules of payment-api: charging, paying, refunding, reconciling.
//!
//! Money is `i64` whole KRW. Every balance change is a conditional UPDATE and a ledger row
//! in one transaction; an event that must follow a change is an outbox row in that same
//! transaction. Responses to requests with an `Idempotency-Key` are stored in the same
//! transaction too, so a replay gets exactly what the first request got.

pub mod settle;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use common::ApiError;
use common::auth::{ActiveQueuePass, QueueKeys};
use common::events::{PAYMENT_COMPLETED, PAYMENT_REFUNDED, PaymentRefunded};
use common::kafka::Envelope;
use common::outbox;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use serde::Serialize;
use utoipa::ToSchema;

use crate::concerts::{ConcertClient, RemoteReservation};
use crate::config::PaymentConfig;
use crate::store::idempotency::{self, Claim};
use crate::store::payments::{self, PaymentRow};
use crate::store::reconciliation;
use crate::store::wallet;

pub const MAX_CHARGE: i64 = 1_000_000;

/// A response that can be stored and replayed byte-for-byte in meaning.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl Reply {
    fn created(body: impl Serialize) -> Self {
        Self {
            status: StatusCode::CREATED,
            body: serde_json::to_value(body).unwrap_or_default(),
        }
    }

    fn refused(err: ApiError) -> Self {
        Self {
            status: err.status(),
            body: err.problem_json(),
        }
    }

    pub fn into_response(self) -> HttpResponse {
        let content_type = if self.status.is_success() {
            "application/json"
        } else {
            common::error::PROBLEM_JSON
        };
        HttpResponse::build(self.status)
            .content_type(content_type)
            .json(self.body)
    }
}

fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
        "this Idempotency-Key was used with a different request",
    )
}

/// Replays a stored response, refuses a reused key or one still in use, or lets the work go on.
fn settle_claim(claim: Claim) -> Result<Option<Reply>, ApiError> {
    match claim {
        Claim::Fresh => Ok(None),
        Claim::Replay { status, body } => Ok(Some(Reply {
            status: StatusCode::from_u16(status).map_err(ApiError::internal)?,
            body,
        })),
        Claim::Reused => Err(key_reused()),
        // The first request is still running; its answer will be there for the retry.
        Claim::InUse => Err(ApiError::conflict(
            "IDEMPOTENCY_KEY_IN_USE",
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )
        .with_retry_after(1)),
    }
}

#[derive(Serialize, ToSchema)]
pub struct ChargeView {
    pub transaction_id: i64,
    pub amount: i64,
    pub balance: i64,
}

/// Charges `amount` into the user's wallet (up to the balance cap).
pub async fn charge(
    db: &DatabaseConnection,
    cfg: &PaymentConfig,
    user_id: i64,
    amount: i64,
    key: Option<&str>,
) -> Result<Reply, ApiError> {
    if !(1..=MAX_CHARGE).contains(&amount) {
        return Err(ApiError::invalid_field(
            "amount",
            format!("must be between 1 and {MAX_CHARGE}"),
        ));
    }
    let hash = format!("charge:{amount}");
    let txn = db.begin().await?;
    if let Some(k) = key
        && let Some(reply) = settle_claim(idempotency::claim(&txn, user_id, k, &hash).await?)?
    {
        return Ok(reply);
    }
    let reply = match wallet::credit(
        &txn,
        user_id,
        amount,
        cfg.wallet_max_balance,
        "CHARGE",
        "charge",
    )
    .await?
    {
        Some(entry) => Reply::created(ChargeView {
            transaction_id: entry.id,
            amount,
            balance: entry.balance_after,
        }),
        None => Reply::refused(ApiError::conflict(
            "BALANCE_LIMIT",
            format!("a wallet may hold at most {}", cfg.wallet_max_balance),
        )),
    };
    if let Some(k) = key {
        idempotency::record(&txn, user_id, k, reply.status.as_u16(), &reply.body).await?;
    }
    txn.commit().await?;
    Ok(reply)
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentView {
    pub id: i64,
    pub reservation_id: i64,
    pub user_id: i64,
    pub amount: i64,
    /// `COMPLETED` or `REFUNDED`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl From<PaymentRow> for PaymentView {
    fn from(p: PaymentRow) -> Self {
        Self {
            id: p.id,
            reservation_id: p.reservation_id,
            user_id: p.user_id,
            amount: p.amount,
            status: p.status,
            created_at: p.created_at,
        }
    }
}

/// Why a reservation cannot be paid now, if it cannot (checked before any money moves).
fn unpayable(
    r: &RemoteReservation,
    now: DateTime<Utc>,
    cutoff: chrono::Duration,
) -> Option<ApiError> {
    match r.status.as_str() {
        "HELD" if r.held_until - now < cutoff => Some(ApiError::conflict(
            "HOLD_EXPIRED",
            "the hold ends too soon to complete a payment; hold the seats again",
        )),
        "HELD" => None,
        "CONFIRMED" => Some(ApiError::conflict(
            "ALREADY_PAID",
            "this reservation is already paid",
        )),
        "EXPIRED" => Some(ApiError::conflict("HOLD_EXPIRED", "the hold has expired")),
        other => Some(ApiError::conflict(
            "RESERVATION_NOT_PAYABLE",
            format!(
                "a {} reservation cannot be paid",
                other.to_ascii_lowercase()
            ),
        )),
    }
}

/// Everything `pay` needs.
pub struct PayContext<'a> {
    pub db: &'a DatabaseConnection,
    pub cfg: &'a PaymentConfig,
    pub concerts: &'a ConcertClient,
}

/// Pays a held reservation from the wallet (DESIGN §2 step 7).
///
/// Answers in API.md's order: a replay of this key's first answer, then 409 `ALREADY_PAID`
/// if this user's payment of the reservation stands, then the queue pass (`queue_token`, the
/// `X-Queue-Token` header), then the reservation itself — so a retry after the purchase
/// retired the pass still gets its 201 (DESIGN §9.7).
///
/// The pass and concert-api are asked first, outside any transaction: no lock is held across
/// the network, and if they cannot answer nothing has happened; their verdict counts only
/// once the key is claimed and the reservation found unpaid. Then one transaction: the
/// payment row (unique per reservation: concurrent payers wait on the index and then see it
/// taken), the conditional debit with its ledger row, and the `payment.completed` outbox row.
/// The amount is always the reservation's, never the client's.
pub async fn pay(
    ctx: &PayContext<'_>,
    user_id: i64,
    queue: &QueueKeys,
    queue_token: Option<&str>,
    reservation_id: i64,
    key: Option<&str>,
) -> Result<Reply, ApiError> {
    if reservation_id <= 0 {
        return Err(ApiError::invalid_field(
            "reservation_id",
            "must be a positive integer",
        ));
    }
    let hash = format!("payment:{reservation_id}");
    // A stored answer is replayed at once (a plain read; one still being written is waited
    // for by the claim below).
    if let Some(k) = key
        && let Some(claim) = idempotency::lookup(ctx.db, user_id, k, &hash).await?
        && let Some(reply) = settle_claim(claim)?
    {
        return Ok(reply);
    }
    let now = Utc::now();
    // Kept, not returned: a replay or ALREADY_PAID, decided under the claim, comes first.
    let checked = async {
        let pass = ActiveQueuePass::check_header(queue, user_id, queue_token, now).await?;
        let reservation = ctx
            .concerts
            .reservation(reservation_id)
            .await?
            .filter(|r| r.user_id == user_id)
            .ok_or_else(|| ApiError::not_found("NOT_FOUND", "no such reservation"))?;
        pass.require_concert(reservation.concert_id)?;
        Ok::<_, ApiError>(reservation)
    }
    .await;

    let cutoff = chrono::Duration::from_std(ctx.cfg.cutoff)
        .unwrap_or_else(|_| chrono::Duration::seconds(10));
    let txn = ctx.db.begin().await?;
    if let Some(k) = key
        && let Some(reply) = settle_claim(idempotency::claim(&txn, user_id, k, &hash).await?)?
    {
        return Ok(reply);
    }
    let reply = if payments::find_completed(&txn, user_id, reservation_id)
        .await?
        .is_some()
    {
        Reply::refused(ApiError::conflict(
            "ALREADY_PAID",
            "this reservation is already paid",
        ))
    } else {
        let reservation = checked?;
        match unpayable(&reservation, now, cutoff) {
            Some(err) => Reply::refused(err),
            None => take_payment(&txn, &reservation, now).await?,
        }
    };
    if let Some(k) = key {
        idempotency::record(&txn, user_id, k, reply.status.as_u16(), &reply.body).await?;
    }
    txn.commit().await?;
    Ok(reply)
}

async fn take_payment<C: ConnectionTrait>(
    txn: &C,
    r: &RemoteReservation,
    now: DateTime<Utc>,
) -> Result<Reply, DbErr> {
    let Some(payment) = payments::insert(txn, r.user_id, r.id, r.amount, now).await? else {
        return Ok(Reply::refused(ApiError::conflict(
            "ALREADY_PAID",
            "this reservation is already paid",
        )));
    };
    let reference = format!("payment:{}", payment.id);
    if wallet::debit(txn, r.user_id, r.amount, &reference)
        .await?
        .is_none()
    {
        payments::delete(txn, payment.id).await?;
        return Ok(Reply::refused(ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "INSUFFICIENT_BALANCE",
            format!("the wallet does not hold {}", r.amount),
        )));
    }
    publish_completed(txn, &payment).await?;
    Ok(Reply::created(PaymentView::from(payment)))
}

/// Writes `payment.completed` for a payment to the outbox. The event's id is the payment's
/// own (`settle::completed_event_id`), so to re-publish, first clear the earlier row
/// (`reconciliation::clear_published`).
async fn publish_completed<C: ConnectionTrait>(txn: &C, p: &PaymentRow) -> Result<(), DbErr> {
    let event = settle::completed_event(p);
    outbox::enqueue(
        txn,
        PAYMENT_COMPLETED,
        &p.reservation_id.to_string(),
        &event,
    )
    .await
}

/// Refunds a payment at most once: REFUNDED, money back with a REFUND ledger row, and
/// `payment.refunded`. Returns whether this call did it. Call inside the consumer's
/// transaction (after its inbox check).
pub async fn refund<C: ConnectionTrait>(txn: &C, payment_id: i64) -> Result<bool, DbErr> {
    let Some(p) = payments::mark_refunded(txn, payment_id).await? else {
        return Ok(false);
    };
    // Money owed back is returned whatever the cap says.
    wallet::credit(
        txn,
        p.user_id,
        p.amount,
        i64::MAX,
        "REFUND",
        &format!("refund:{}", p.id),
    )
    .await?
    .ok_or_else(|| {
        DbErr::Custom(format!(
            "refund of payment {} could not credit the wallet",
            p.id
        ))
    })?;
    let event = Envelope::new(
        PAYMENT_REFUNDED,
        PaymentRefunded {
            payment_id: p.id,
            reservation_id: p.reservation_id,
            user_id: p.user_id,
            amount: p.amount,
        },
        Utc::now(),
    );
    outbox::enqueue(txn, PAYMENT_REFUNDED, &p.reservation_id.to_string(), &event).await?;
    Ok(true)
}

/// What one reconciliation pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Payments looked at, each by one of the two paths.
    pub checked: u64,
    /// Found or made CONFIRMED: the bookkeeping caught up.
    pub confirmed: u64,
    /// `payment.completed` published again (or found still waiting for the relay).
    pub republished: u64,
    /// Settled over HTTP with concert-api (each also counted in `confirmed` or, when this
    /// pass gave the money back, `refunded`).
    pub settled_directly: u64,
    pub refunded: u64,
    /// concert-api could not answer; the next pass tries again.
    pub unreachable: u64,
    /// What is still unsettled after the pass, by age (batch's `payments_unsettled` gauge).
    pub unsettled: settle::UnsettledByAge,
}

/// Chases COMPLETED payments whose reservation has not been seen confirmed (DESIGN §6).
///
/// Older than `cfg.settle_direct_after`: settled directly through concert-api's internal
/// endpoint, whatever the broker is doing — confirmed (the bookkeeping catches up) or
/// rejected (refunded here and now). Older than `cfg.reconcile_after` only: if concert-api
/// shows it CONFIRMED by this payment, the bookkeeping catches up; otherwise
/// `payment.completed` is published again (same event id) for concert-api's consumer to
/// settle. A lost event, a crashed consumer or a stuck broker can delay a settlement but
/// never leave money taken and no seat.
pub async fn reconcile(
    db: &DatabaseConnection,
    concerts: &ConcertClient,
    cfg: &PaymentConfig,
    now: DateTime<Utc>,
) -> Result<Reconciliation, ApiError> {
    let ago = |d: std::time::Duration, fallback_secs: i64| {
        now - chrono::Duration::from_std(d)
            .unwrap_or_else(|_| chrono::Duration::seconds(fallback_secs))
    };
    let republish_before = ago(cfg.reconcile_after, 30);
    let direct_before = ago(cfg.settle_direct_after, 120);
    let mut report = Reconciliation::default();
    // Candidates are read without locks; each is then handled on its own, in short
    // transactions, so no lock is held while concert-api is asked.
    for p in reconciliation::overdue(db, direct_before, 500).await? {
        report.checked += 1;
        match settle::settle_directly(db, concerts, &p).await {
            Ok(settle::DirectOutcome::Confirmed) => {
                report.settled_directly += 1;
                report.confirmed += 1;
            }
            Ok(settle::DirectOutcome::Rejected { refunded }) => {
                report.settled_directly += 1;
                report.refunded += u64::from(refunded);
            }
            Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE => report.unreachable += 1,
            Err(e) => return Err(e),
        }
    }
    for p in reconciliation::due_for_republish(db, republish_before, direct_before, 500).await? {
        report.checked += 1;
        let remote = match concerts.reservation(p.reservation_id).await {
            Ok(r) => r,
            Err(_) => {
                report.unreachable += 1;
                continue;
            }
        };
        let txn = db.begin().await?;
        match remote {
            Some(r) if r.status == "CONFIRMED" && r.payment_id == Some(p.id) => {
                payments::mark_confirmed(&txn, p.id).await?;
                report.confirmed += 1;
            }
            _ => {
                if reconciliation::clear_published(&txn, settle::completed_event_id(p.id)).await? {
                    publish_completed(&txn, &p).await?;
                }
                payments::mark_republished(&txn, p.id).await?;
                report.republished += 1;
            }
        }
        txn.commit().await?;
    }
    report.unsettled = settle::UnsettledByAge::at(db, now).await?;
    Ok(report)
}
