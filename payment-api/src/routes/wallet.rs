//! The wallet: balance, charges (idempotent), ledger.

use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use common::ApiError;
use common::auth::AuthUser;
use common::http::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::wallet::{self as rules, ChargeView};
use crate::routes::{AppState, IdempotencyKey, respond};
use crate::store::wallet::{self, LedgerKind, LedgerRow};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/wallet", web::get().to(balance))
        .route("/api/wallet/charges", web::post().to(charge))
        .route("/api/wallet/transactions", web::get().to(transactions));
}

#[derive(Serialize, ToSchema)]
#[schema(as = Wallet)]
pub struct WalletView {
    user_id: i64,
    balance: i64,
}

#[utoipa::path(get, path = "/api/wallet", security(("bearer" = [])),
    responses((status = 200, description = "the caller's balance (0 for a new user)", body = WalletView)))]
pub async fn balance(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, ApiError> {
    let balance = wallet::balance(&state.db, user.id).await?;
    Ok(HttpResponse::Ok().json(WalletView {
        user_id: user.id,
        balance,
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct ChargeRequest {
    /// KRW to put in.
    #[schema(minimum = 1, maximum = 1_000_000)]
    amount: i64,
}

#[utoipa::path(post, path = "/api/wallet/charges", request_body = ChargeRequest,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 64, pattern = "^[\\x21-\\x7E]{1,64}$", description = "1 to 64 visible ASCII characters (else 400). The same key with the same body replays the first answer (status and body), whatever happened since; with another body, 422 `IDEMPOTENCY_KEY_REUSED`; while the first request with it still runs, this one waits for it, or after a few seconds gets 409 `IDEMPOTENCY_KEY_IN_USE`. Kept 24 hours.")),
    responses(
        (status = 201, description = "the charge went in", body = ChargeView),
        (status = 400, description = "`INVALID_REQUEST`: a malformed body, `amount` out of 1 to 1,000,000, or a malformed `Idempotency-Key`; the detail names it"),
        (status = 409, description = "`BALANCE_LIMIT` (the wallet would hold more than 100,000,000), or `IDEMPOTENCY_KEY_IN_USE` (the first request with this key is still running; with Retry-After)",
            headers(("Retry-After" = u64, description = "seconds; sent with IDEMPOTENCY_KEY_IN_USE"))),
        (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`: this key came with another `amount`"),
    ))]
pub async fn charge(
    state: web::Data<AppState>,
    user: AuthUser,
    key: IdempotencyKey,
    body: Json<ChargeRequest>,
) -> Result<HttpResponse, ApiError> {
    let amount = body.into_inner().amount;
    let now = state.clock.now();
    let key = key.0.as_deref();
    respond(rules::charge(&state.db, &state.cfg, user.id, amount, key, now).await?)
}

#[derive(Deserialize)]
pub struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

impl PageQuery {
    /// The page size (default 20) and the entry id the page starts before, or 400 naming the
    /// parameter.
    fn validate(&self) -> Result<(u64, Option<i64>), ApiError> {
        let limit = match self.limit {
            None => 20,
            Some(n) if (1..=100).contains(&n) => n as u64,
            Some(_) => {
                return Err(ApiError::invalid_field(
                    "limit",
                    "must be between 1 and 100",
                ));
            }
        };
        // An empty `cursor=` asks for the first page.
        let before = match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(cursor::decode(c).ok_or_else(|| {
                ApiError::invalid_field("cursor", "is not a cursor this list returned")
            })?),
        };
        Ok((limit, before))
    }
}

/// The ledger's page cursor: opaque to clients, `l:<entry id>` underneath.
mod cursor {
    use super::*;

    pub fn encode(before: i64) -> String {
        URL_SAFE_NO_PAD.encode(format!("l:{before}"))
    }

    pub fn decode(cursor: &str) -> Option<i64> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
        raw.strip_prefix("l:")?.parse().ok()
    }
}

/// One ledger row as its owner sees it.
#[derive(Serialize, ToSchema)]
pub struct LedgerEntry {
    id: i64,
    kind: LedgerKind,
    amount: i64,
    balance_after: i64,
    created_at: DateTime<Utc>,
}

impl From<LedgerRow> for LedgerEntry {
    fn from(r: LedgerRow) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            amount: r.amount,
            balance_after: r.balance_after,
            created_at: r.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct LedgerPage {
    items: Vec<LedgerEntry>,
    /// Pass back as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/wallet/transactions", security(("bearer" = [])),
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "page size, 1 to 100 (default 20)"),
        ("cursor" = Option<String>, Query, description = "opaque: the `next_cursor` of the previous page, nothing else"),
    ),
    responses(
        (status = 200, description = "the caller's ledger, newest first", body = LedgerPage),
        (status = 400, description = "`INVALID_REQUEST`: `limit` out of 1 to 100, or a `cursor` this list did not return"),
    ))]
pub async fn transactions(
    state: web::Data<AppState>,
    user: AuthUser,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, before) = q.validate()?;
    let page = rules::ledger_page(&state.db, user.id, before, limit).await?;
    Ok(HttpResponse::Ok().json(LedgerPage {
        items: page.entries.into_iter().map(LedgerEntry::from).collect(),
        next_cursor: page.next_before.map(cursor::encode),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_anything_else_is_refused() {
        assert_eq!(cursor::decode(&cursor::encode(42)), Some(42));
        assert_eq!(cursor::decode("bm9wZQ"), None);
        assert_eq!(cursor::decode("not base64!"), None);
    }
}
