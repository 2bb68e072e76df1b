//! The wallet: balance, charges (idempotent), ledger.

use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::ApiError;
use common::auth::AuthUser;
use common::http::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain;
use crate::routes::{AppState, IdempotencyKey};
use crate::store::wallet::{self, LedgerEntry};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/wallet", web::get().to(balance))
        .route("/api/wallet/charges", web::post().to(charge))
        .route("/api/wallet/transactions", web::get().to(transactions));
}

#[derive(Serialize, ToSchema)]
pub struct WalletView {
    user_id: i64,
    balance: i64,
}

#[utoipa::path(get, path = "/api/wallet", responses((status = 200, body = WalletView), (status = 401)))]
pub async fn balance(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let balance = wallet::balance(&state.db, user.id).await?;
    Ok(HttpResponse::Ok().json(WalletView {
        user_id: user.id,
        balance,
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct ChargeRequest {
    amount: i64,
}

#[utoipa::path(post, path = "/api/wallet/charges", request_body = ChargeRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1..=64 visible ASCII; the same key and body replay the first answer")),
    responses((status = 201, body = domain::ChargeView), (status = 400), (status = 401),
        (status = 409, description = "BALANCE_LIMIT, or IDEMPOTENCY_KEY_IN_USE (the first request with this key is still running; with Retry-After)",
            headers(("Retry-After" = u64, description = "seconds; sent with IDEMPOTENCY_KEY_IN_USE"))),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED: this key came with a different body")))]
pub async fn charge(
    state: web::Data<AppState>,
    user: AuthUser,
    key: IdempotencyKey,
    body: Json<ChargeRequest>,
) -> Result<HttpResponse, ApiError> {
    let reply = domain::charge(
        &state.db,
        &state.cfg,
        user.id,
        body.into_inner().amount,
        key.0.as_deref(),
    )
    .await?;
    Ok(reply.into_response())
}

#[derive(Deserialize)]
pub struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LedgerPage {
    items: Vec<LedgerEntry>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/wallet/transactions", params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = LedgerPage), (status = 400), (status = 401)))]
pub async fn transactions(
    state: web::Data<AppState>,
    user: AuthUser,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = match q.limit {
        None => 20,
        Some(n) if (1..=100).contains(&n) => n as u64,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "limit",
                "must be between 1 and 100",
            ));
        }
    };
    let before = match &q.cursor {
        None => i64::MAX,
        Some(c) => URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("l:").and_then(|n| n.parse().ok()))
            .ok_or_else(|| {
                ApiError::invalid_field("cursor", "is not a cursor this list returned")
            })?,
    };
    let mut items = wallet::entries(&state.db, user.id, before, limit).await?;
    let next_cursor = (items.len() as u64 > limit).then(|| {
        items.truncate(limit as usize);
        URL_SAFE_NO_PAD.encode(format!("l:{}", items.last().map_or(0, |e| e.id)))
    });
    Ok(HttpResponse::Ok().json(LedgerPage { items, next_cursor }))
}
