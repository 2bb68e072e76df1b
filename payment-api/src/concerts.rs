//! concert-api's internal reservation endpoint, as payment-api sees it. Timeouts on every
//! call, one retry only when the connection itself failed (so nothing reached concert-api),
//! and 503 with `Retry-After` when it cannot answer — with nothing debited.

use chrono::{DateTime, Utc};
use common::ApiError;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct RemoteReservation {
    pub id: i64,
    pub user_id: i64,
    pub concert_id: i64,
    pub amount: i64,
    pub status: String,
    pub held_until: DateTime<Utc>,
    pub payment_id: Option<i64>,
}

#[derive(Clone)]
pub struct ConcertClient {
    http: reqwest::Client,
    base: String,
}

impl ConcertClient {
    pub fn new(base: &str, timeout: std::time::Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(64)
            .build()
            .expect("static HTTP client configuration is valid");
        Self {
            http,
            base: base.to_owned(),
        }
    }

    /// The reservation, `None` if concert-api does not know it.
    pub async fn reservation(&self, id: i64) -> Result<Option<RemoteReservation>, ApiError> {
        let url = format!("{}/internal/reservations/{id}", self.base);
        let unavailable = |why: String| {
            tracing::warn!(%url, %why, "concert-api could not answer");
            ApiError::unavailable(
                "DEPENDENCY_UNAVAILABLE",
                "reservations cannot be checked right now; nothing was charged",
                2,
            )
        };
        let mut attempt = 0;
        let res = loop {
            attempt += 1;
            match self.http.get(&url).send().await {
                Ok(res) => break res,
                Err(e) if e.is_connect() && attempt < 2 => continue,
                Err(e) => return Err(unavailable(e.to_string())),
            }
        };
        match res.status() {
            reqwest::StatusCode::OK => res
                .json()
                .await
                .map(Some)
                .map_err(|e| unavailable(e.to_string())),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            other => Err(unavailable(format!("status {other}"))),
        }
    }
}
