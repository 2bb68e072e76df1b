//! Paying a held reservation from the wallet (DESIGN §2 step 7) and refunding a payment
//! concert-api rejected (step 9), with the hold policy that says when a hold can be paid.

use chrono::{DateTime, SubsecRound, Utc};
use common::auth::{ActiveQueuePass, QueueKeys};
use common::clock::Clock;
use common::error::Code;
use common::held::{HeldNote, HoldBoard};
use common::{ApiError, ErrorCode};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use serde::Serialize;
use utoipa::ToSchema;

use crate::concerts::{ConcertClient, RemoteReservation, RemoteStatus};
use crate::config::PaymentConfig;
use crate::domain::idempotency::{self, Idempotent};
use crate::error::PaymentCode;
use crate::events;
use crate::store::payments::{self, PaymentRow, PaymentStatus};
use crate::store::wallet::{self, LedgerKind};

/// A payment as its owner sees it.
/// `Payment` of API.md.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Payment)]
pub struct PaymentView {
    pub id: i64,
    pub reservation_id: i64,
    pub user_id: i64,
    pub amount: i64,
    pub status: PaymentStatus,
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

/// Why a payment was refused once its key was claimed (kept for the key's retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayRefusal {
    /// This user's payment stands, or concert-api shows the reservation confirmed.
    #[error("this reservation is already paid")]
    AlreadyPaid,
    /// Held, but ending within the cutoff: too late to be sure the payment settles in time.
    #[error("the hold ends too soon to complete a payment; hold the seats again")]
    HoldEndsTooSoon,
    #[error("the hold has expired")]
    HoldExpired,
    /// Cancelled, rejected, or a status this build does not know.
    #[error("a {} reservation cannot be paid", .0.describe())]
    NotPayable(RemoteStatus),
    /// The wallet does not hold the reservation's amount.
    #[error("the wallet does not hold {0}")]
    InsufficientBalance(i64),
}

impl PayRefusal {
    fn catalogued(&self) -> PaymentCode {
        match self {
            Self::AlreadyPaid => PaymentCode::AlreadyPaid,
            Self::HoldEndsTooSoon | Self::HoldExpired => PaymentCode::HoldExpired,
            Self::NotPayable(_) => PaymentCode::ReservationNotPayable,
            Self::InsufficientBalance(_) => PaymentCode::InsufficientBalance,
        }
    }
}

impl ErrorCode for PayRefusal {
    fn status(&self) -> actix_web::http::StatusCode {
        self.catalogued().status()
    }
    fn code(&self) -> &'static str {
        self.catalogued().code()
    }
}

/// The hold policy: whether concert-api's reservation can be paid at `now`, a hold ending
/// within `cutoff` being too late. Checked before any money moves.
pub fn payable(
    r: &RemoteReservation,
    now: DateTime<Utc>,
    cutoff: chrono::Duration,
) -> Result<(), PayRefusal> {
    match &r.status {
        RemoteStatus::Held if r.held_until - now < cutoff => Err(PayRefusal::HoldEndsTooSoon),
        RemoteStatus::Held => Ok(()),
        RemoteStatus::Confirmed => Err(PayRefusal::AlreadyPaid),
        RemoteStatus::Expired => Err(PayRefusal::HoldExpired),
        other => Err(PayRefusal::NotPayable(other.clone())),
    }
}

/// Everything paying needs.
pub struct PayContext<'a> {
    pub db: &'a DatabaseConnection,
    pub cfg: &'a PaymentConfig,
    pub concerts: &'a ConcertClient,
    /// Live holds as concert-api pins them: read first, concert-api asked only without one.
    pub board: &'a HoldBoard,
    pub queue: &'a QueueKeys,
    pub clock: &'a Clock,
}

impl From<HeldNote> for RemoteReservation {
    /// A note is pinned only while its hold is live and HELD (`common::held`).
    fn from(n: HeldNote) -> Self {
        Self {
            id: n.reservation_id,
            user_id: n.user_id,
            concert_id: n.concert_id,
            amount: n.amount,
            status: RemoteStatus::Held,
            held_until: n.held_until,
            payment_id: None,
        }
    }
}

/// Reservation `id` as paying needs it: its note on the hold board, else concert-api's answer.
async fn reservation_to_pay(
    ctx: &PayContext<'_>,
    id: i64,
) -> Result<Option<RemoteReservation>, ApiError> {
    match ctx.board.read(id).await {
        Ok(Some(note)) => return Ok(Some(note.into())),
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "hold board unreadable; asking concert-api"),
    }
    Ok(ctx.concerts.reservation(id).await?)
}

/// A user's request to pay for a reservation.
#[derive(Debug, Clone, Copy)]
pub struct Purchase<'a> {
    pub user_id: i64,
    pub reservation_id: i64,
    /// The `X-Queue-Token` header, if any.
    pub queue_token: Option<&'a str>,
    /// The `Idempotency-Key` header, if any.
    pub key: Option<&'a str>,
}

/// Pays a held reservation from the wallet (DESIGN §2 step 7).
///
/// Answers in API.md's order: a replay of this key's first answer, then `AlreadyPaid` if this
/// user's payment of the reservation stands, then the queue pass, then the reservation itself
/// — so a retry after the purchase retired the pass still gets its 201 (DESIGN §9.7).
///
/// The pass and the reservation are looked up first, outside any transaction — the hold from
/// the hold board in Redis when concert-api pinned it there (`common::held`), else from
/// concert-api: no lock is held across the network, and if they cannot answer nothing has
/// happened. Their verdict counts only once the key is claimed (a stored answer is replayed
/// instead, whatever they said) and the reservation found unpaid. Then, in the same
/// transaction: the payment row (unique per reservation: concurrent payers wait on the index
/// and then see it taken), the conditional debit with its ledger row, and the
/// `payment.completed` outbox row. The amount is always the reservation's, never the client's.
///
/// A replay is not looked for before the checks: they are two Redis reads, and a read of the
/// key ahead of the claim cost every fresh payment a database round trip (measured: one
/// transaction per purchase of 3.9).
pub async fn pay(
    ctx: &PayContext<'_>,
    req: Purchase<'_>,
) -> Result<Idempotent<PaymentView, PayRefusal>, ApiError> {
    let Purchase {
        user_id,
        reservation_id,
        ..
    } = req;
    if reservation_id <= 0 {
        return Err(ApiError::invalid_field(
            "reservation_id",
            "must be a positive integer",
        ));
    }
    let keyed = req
        .key
        .map(|k| idempotency::payment_request(user_id, k, reservation_id));
    let now = ctx.clock.now();
    // Kept, not returned: a replay or ALREADY_PAID, decided under the claim, comes first.
    let checked = async {
        // Both Redis reads go out together.
        let (pass, reservation) = tokio::join!(
            ActiveQueuePass::check_header(ctx.queue, user_id, req.queue_token, now),
            reservation_to_pay(ctx, reservation_id)
        );
        let pass = pass?;
        let reservation = reservation?
            .filter(|r| r.user_id == user_id)
            .ok_or_else(|| Code::NotFound.err("no such reservation"))?;
        pass.require_concert(reservation.concert_id)?;
        Ok::<_, ApiError>(reservation)
    }
    .await;

    let cutoff = chrono::Duration::from_std(ctx.cfg.cutoff)
        .unwrap_or_else(|_| chrono::Duration::seconds(10));
    if let Ok(r) = &checked
        && payable(r, now, cutoff).is_ok()
        && let Some(paid) = pay_at_once(ctx.db, r, keyed.as_ref(), now).await?
    {
        return Ok(Idempotent::Fresh(Ok(paid)));
    }
    idempotency::run(ctx.db, keyed.as_ref(), async |txn| {
        let refusal = match &checked {
            Ok(r) => match payable(r, now, cutoff) {
                // The payment row's uniqueness per reservation says ALREADY_PAID by itself.
                Ok(()) => return Ok(take_payment(txn, r, now).await?),
                Err(refusal) => refusal,
            },
            Err(_) => PayRefusal::AlreadyPaid,
        };
        // Any other answer comes after ALREADY_PAID, whatever the pass now is.
        if payments::find_completed(txn, user_id, reservation_id)
            .await?
            .is_some()
        {
            return Ok(Err(PayRefusal::AlreadyPaid));
        }
        checked?;
        Ok(Err(refusal))
    })
    .await
}

/// The common payment in one round trip ([`payments::pay_at_once`]): a fresh key (or none),
/// an unpaid reservation and a wallet that holds its amount. `None` if it is not that case:
/// nothing happened, and [`pay`]'s general path finds out which case it is and answers it.
/// The payment is dated to the microsecond, as the database keeps it, so the answer made
/// here before the payment is numbered is the one its key replays.
async fn pay_at_once(
    db: &DatabaseConnection,
    r: &RemoteReservation,
    keyed: Option<&idempotency::KeyedRequest<'_>>,
    now: DateTime<Utc>,
) -> Result<Option<PaymentView>, ApiError> {
    let mut draft = PaymentRow {
        id: 0,
        user_id: r.user_id,
        reservation_id: r.id,
        amount: r.amount,
        status: PaymentStatus::Completed,
        created_at: now.trunc_subsecs(6),
    };
    // The key's 201, rendered as every kept answer is (its id filled in by the database).
    let answer = idempotency::Answer::to(&Ok::<_, PayRefusal>(PaymentView::from(draft.clone())))?;
    let key = keyed.map(|k| (k.key, k.request.as_str()));
    let Some(id) = payments::pay_at_once(db, &draft, key, &answer.body).await? else {
        return Ok(None);
    };
    draft.id = id;
    Ok(Some(PaymentView::from(draft)))
}

/// The payment row, the debit and `payment.completed`, in the caller's transaction; a refusal
/// leaves nothing behind.
async fn take_payment<C: ConnectionTrait>(
    txn: &C,
    r: &RemoteReservation,
    now: DateTime<Utc>,
) -> Result<Result<PaymentView, PayRefusal>, DbErr> {
    let Some((payment, debited)) =
        payments::insert_paid(txn, r.user_id, r.id, r.amount, now).await?
    else {
        return Ok(Err(PayRefusal::AlreadyPaid));
    };
    if !debited {
        payments::delete(txn, payment.id).await?;
        return Ok(Err(PayRefusal::InsufficientBalance(r.amount)));
    }
    events::publish_completed(txn, &payment).await?;
    Ok(Ok(PaymentView::from(payment)))
}

/// Refunds a payment at `now`, at most once: REFUNDED, money back with a REFUND ledger row,
/// and `payment.refunded`. Returns whether this call did it. Call inside the consumer's
/// transaction (after its inbox check).
pub async fn refund<C: ConnectionTrait>(
    txn: &C,
    payment_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let Some(p) = payments::mark_refunded(txn, payment_id, now).await? else {
        return Ok(false);
    };
    // Money owed back is returned whatever the cap says.
    let reference = format!("refund:{}", p.id);
    wallet::credit(
        txn,
        p.user_id,
        p.amount,
        i64::MAX,
        LedgerKind::Refund,
        &reference,
        now,
    )
    .await?
    .ok_or_else(|| {
        DbErr::Custom(format!(
            "refund of payment {} could not credit the wallet",
            p.id
        ))
    })?;
    events::publish_refunded(txn, &p, now).await?;
    Ok(true)
}

/// The user's payments, newest first (at most 200).
pub async fn list(db: &DatabaseConnection, user_id: i64) -> Result<Vec<PaymentView>, DbErr> {
    let rows = payments::list_for_user(db, user_id, 200).await?;
    Ok(rows.into_iter().map(PaymentView::from).collect())
}

/// One of the user's payments; another user's is as unknown as a missing one.
pub async fn of_user(
    db: &DatabaseConnection,
    user_id: i64,
    payment_id: i64,
) -> Result<PaymentView, ApiError> {
    payments::find(db, payment_id)
        .await?
        .filter(|p| p.user_id == user_id)
        .map(PaymentView::from)
        .ok_or_else(|| Code::NotFound.err("no such payment"))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn reservation(
        status: RemoteStatus,
        held_for_secs: i64,
        now: DateTime<Utc>,
    ) -> RemoteReservation {
        RemoteReservation {
            id: 1,
            user_id: 2,
            concert_id: 3,
            amount: 1000,
            status,
            held_until: now + chrono::Duration::seconds(held_for_secs),
            payment_id: None,
        }
    }

    #[test]
    fn a_hold_is_payable_until_the_cutoff_before_it_ends() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap();
        let cutoff = chrono::Duration::seconds(10);
        let held = |secs| payable(&reservation(RemoteStatus::Held, secs, now), now, cutoff);
        assert_eq!(held(11), Ok(()));
        assert_eq!(held(10), Ok(()));
        assert_eq!(held(9), Err(PayRefusal::HoldEndsTooSoon));
        assert_eq!(held(-5), Err(PayRefusal::HoldEndsTooSoon));
    }

    #[test]
    fn only_a_held_reservation_is_payable_and_each_refusal_has_its_code() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap();
        let cutoff = chrono::Duration::seconds(10);
        let verdict = |status| payable(&reservation(status, 600, now), now, cutoff).unwrap_err();
        let confirmed = verdict(RemoteStatus::Confirmed);
        assert_eq!(confirmed.code(), PaymentCode::AlreadyPaid.code());
        assert_eq!(
            verdict(RemoteStatus::Expired).code(),
            PaymentCode::HoldExpired.code()
        );
        let cancelled = verdict(RemoteStatus::Cancelled);
        assert_eq!(cancelled.code(), PaymentCode::ReservationNotPayable.code());
        assert_eq!(
            cancelled.to_string(),
            "a cancelled reservation cannot be paid"
        );
        assert_eq!(
            PayRefusal::HoldEndsTooSoon.code(),
            PaymentCode::HoldExpired.code()
        );
        assert_eq!(
            PayRefusal::InsufficientBalance(5).status(),
            actix_web::http::StatusCode::PAYMENT_REQUIRED
        );
    }
}
