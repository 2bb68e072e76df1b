//! Payments: pay a held reservation (idempotent), list and read them.

use actix_web::{HttpRequest, HttpResponse, web};
use common::ApiError;
use common::auth::{AuthUser, QueueKeys, queue_token};
use common::http::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::payment::{self, PaymentView, Purchase};
use crate::routes::{AppState, IdempotencyKey, respond};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/payments", web::post().to(pay))
        .route("/api/payments", web::get().to(list))
        .route("/api/payments/{id}", web::get().to(get));
}

/// Only the reservation id is read; an `amount` a client sends is ignored (the amount is
/// the reservation's).
#[derive(Deserialize, ToSchema)]
pub struct PayRequest {
    #[schema(minimum = 1)]
    reservation_id: i64,
}

#[utoipa::path(post, path = "/api/payments", request_body = PayRequest,
    security(("bearer" = [], "queue_token" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 64, pattern = "^[\\x21-\\x7E]{1,64}$", description = "1 to 64 visible ASCII characters (else 400). The same key with the same body replays the first answer (status and body), whatever happened since; with another body, 422 `IDEMPOTENCY_KEY_REUSED`; while the first request with it still runs, this one waits for it, or after a few seconds gets 409 `IDEMPOTENCY_KEY_IN_USE`. Kept 24 hours.")),
    responses(
        (status = 201, description = "paid: the wallet is debited; the reservation becomes CONFIRMED asynchronously (poll `GET /api/reservations/{id}`)", body = PaymentView),
        (status = 400, description = "`INVALID_REQUEST`: a malformed body, `reservation_id` under 1, or a malformed `Idempotency-Key`; the detail names it"),
        (status = 401, description = "`UNAUTHENTICATED`: no valid session; or `QUEUE_TOKEN_INVALID`: the pass is missing, unknown, another user's, still waiting, expired, or for another concert than the reservation's (the detail says which)"),
        (status = 402, description = "`INSUFFICIENT_BALANCE`: the wallet holds less than the reservation's amount"),
        (status = 404, description = "`NOT_FOUND`: no such reservation, or another user's (which is not said)"),
        (status = 409, description = "`ALREADY_PAID` (whatever the queue pass now is), `HOLD_EXPIRED` (the hold has ended or ends within 10 s), `RESERVATION_NOT_PAYABLE` (cancelled or rejected), \
            or `IDEMPOTENCY_KEY_IN_USE` (the first request with this key is still running; with Retry-After)",
            headers(("Retry-After" = u64, description = "seconds; sent with IDEMPOTENCY_KEY_IN_USE"))),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: this key came with another `reservation_id`"),
        (status = 503, description = "`DEPENDENCY_UNAVAILABLE`: concert-api or Redis cannot answer right now; nothing was charged",
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn pay(
    state: web::Data<AppState>,
    user: AuthUser,
    queue: web::Data<QueueKeys>,
    key: IdempotencyKey,
    req: HttpRequest,
    body: Json<PayRequest>,
) -> Result<HttpResponse, ApiError> {
    let _timed = state.pressure.time();
    // No `ActiveQueuePass` extractor: a replay and ALREADY_PAID are answered before the pass
    // is looked at (API.md's order of checks), so the domain checks it.
    let token = queue_token(&req);
    let purchase = Purchase {
        user_id: user.id,
        reservation_id: body.into_inner().reservation_id,
        queue_token: token.as_deref(),
        key: key.0.as_deref(),
    };
    let outcome = payment::pay(&state.pay_context(&queue), purchase).await?;
    state.money.paid(&outcome);
    respond(outcome)
}

/// The caller's own payments, newest first, at most 200.
#[derive(Serialize, ToSchema)]
pub struct PaymentList {
    items: Vec<PaymentView>,
}

#[utoipa::path(get, path = "/api/payments", security(("bearer" = [])),
    responses((status = 200, description = "the caller's payments, newest first, at most 200", body = PaymentList)))]
pub async fn list(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let items = payment::list(&state.db, user.id).await?;
    Ok(HttpResponse::Ok().json(PaymentList { items }))
}

#[utoipa::path(get, path = "/api/payments/{id}", security(("bearer" = [])),
    params(("id" = i64, Path, description = "the payment's id")),
    responses(
        (status = 200, description = "the payment", body = PaymentView),
        (status = 404, description = "`NOT_FOUND`: no such payment, or another user's (which is not said)"),
    ))]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let payment = payment::of_user(&state.db, user.id, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(payment))
}
