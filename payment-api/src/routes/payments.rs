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

/// Only the reservation id is read; an `amount` a client sends is ignored.
#[derive(Deserialize, ToSchema)]
pub struct PayRequest {
    reservation_id: i64,
}

#[utoipa::path(post, path = "/api/payments", request_body = PayRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1..=64 visible ASCII; the same key and body replay the first answer"),
        ("X-Queue-Token" = String, Header, description = "an ACTIVE waiting-room token of the caller for the reservation's concert"),
    ),
    responses((status = 201, body = PaymentView), (status = 400),
        (status = 401, description = "UNAUTHENTICATED or QUEUE_TOKEN_INVALID"),
        (status = 402, description = "INSUFFICIENT_BALANCE: the wallet holds less than the reservation's amount"),
        (status = 404),
        (status = 409, description = "ALREADY_PAID (whatever the queue pass now is), HOLD_EXPIRED, RESERVATION_NOT_PAYABLE, \
            or IDEMPOTENCY_KEY_IN_USE (the first request with this key is still running; with Retry-After)",
            headers(("Retry-After" = u64, description = "seconds; sent with IDEMPOTENCY_KEY_IN_USE"))),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED: this key came with a different body"), (status = 503)))]
pub async fn pay(
    state: web::Data<AppState>,
    user: AuthUser,
    queue: web::Data<QueueKeys>,
    key: IdempotencyKey,
    req: HttpRequest,
    body: Json<PayRequest>,
) -> Result<HttpResponse, ApiError> {
    // No `ActiveQueuePass` extractor: a replay and ALREADY_PAID are answered before the pass
    // is looked at (API.md's order of checks), so the domain checks it.
    let token = queue_token(&req);
    let purchase = Purchase {
        user_id: user.id,
        reservation_id: body.into_inner().reservation_id,
        queue_token: token.as_deref(),
        key: key.0.as_deref(),
    };
    respond(payment::pay(&state.pay_context(&queue), purchase).await?)
}

#[derive(Serialize, ToSchema)]
pub struct PaymentList {
    items: Vec<PaymentView>,
}

#[utoipa::path(get, path = "/api/payments", responses((status = 200, body = PaymentList), (status = 401)))]
pub async fn list(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let items = payment::list(&state.db, user.id).await?;
    Ok(HttpResponse::Ok().json(PaymentList { items }))
}

#[utoipa::path(get, path = "/api/payments/{id}", responses((status = 200, body = PaymentView), (status = 404)))]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let payment = payment::of_user(&state.db, user.id, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(payment))
}
