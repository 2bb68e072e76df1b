//! Payments: pay a held reservation (idempotent), list and read them.

use actix_web::{HttpResponse, web};
use common::ApiError;
use common::auth::{ActiveQueuePass, AuthUser};
use common::http::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{self, PayContext, PaymentView};
use crate::routes::{AppState, IdempotencyKey};
use crate::store::payments;

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
    responses((status = 201, body = PaymentView), (status = 400), (status = 401), (status = 402, description = "INSUFFICIENT_BALANCE"),
        (status = 404), (status = 409, description = "ALREADY_PAID, HOLD_EXPIRED or RESERVATION_NOT_PAYABLE"),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED"), (status = 503)))]
pub async fn pay(
    state: web::Data<AppState>,
    pass: ActiveQueuePass,
    key: IdempotencyKey,
    body: Json<PayRequest>,
) -> Result<HttpResponse, ApiError> {
    let ctx = PayContext {
        db: &state.db,
        cfg: &state.cfg,
        concerts: &state.concerts,
    };
    let reply = domain::pay(
        &ctx,
        pass.user_id,
        &pass,
        body.into_inner().reservation_id,
        key.0.as_deref(),
    )
    .await?;
    Ok(reply.into_response())
}

#[derive(Serialize, ToSchema)]
pub struct PaymentList {
    items: Vec<PaymentView>,
}

#[utoipa::path(get, path = "/api/payments", responses((status = 200, body = PaymentList), (status = 401)))]
pub async fn list(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let rows = payments::list_for_user(&state.db, user.id, 200).await?;
    Ok(HttpResponse::Ok().json(PaymentList {
        items: rows.into_iter().map(PaymentView::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/payments/{id}", responses((status = 200, body = PaymentView), (status = 404)))]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let payment = payments::find(&state.db, id.into_inner())
        .await?
        .filter(|p| p.user_id == user.id)
        .ok_or_else(|| ApiError::not_found("NOT_FOUND", "no such payment"))?;
    Ok(HttpResponse::Ok().json(PaymentView::from(payment)))
}
