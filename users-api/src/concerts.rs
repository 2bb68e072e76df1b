//! Whether a concert exists, asked of concert-api (`GET /api/concerts/{id}`) and remembered
//! briefly. If concert-api cannot answer, the caller gets 503 with `Retry-After`: a line is
//! never opened on a guess.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use common::ApiError;

use crate::config::ConcertApiConfig;

/// Negative answers are kept for at most this long, so a concert created a moment after
/// someone asked for it opens its line quickly.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);
const MAX_ENTRIES: usize = 100_000;

pub struct ConcertDirectory {
    http: reqwest::Client,
    cfg: ConcertApiConfig,
    known: RwLock<HashMap<i64, (bool, Instant)>>,
}

impl ConcertDirectory {
    pub fn new(cfg: ConcertApiConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .pool_max_idle_per_host(32)
            .build()
            .expect("static HTTP client configuration is valid");
        Self {
            http,
            cfg,
            known: RwLock::new(HashMap::new()),
        }
    }

    fn cached(&self, id: i64) -> Option<bool> {
        let known = self.known.read().ok()?;
        let (exists, at) = known.get(&id)?;
        let ttl = if *exists {
            self.cfg.cache_ttl
        } else {
            NEGATIVE_TTL.min(self.cfg.cache_ttl)
        };
        (at.elapsed() < ttl).then_some(*exists)
    }

    fn remember(&self, id: i64, exists: bool) {
        if let Ok(mut known) = self.known.write() {
            if known.len() >= MAX_ENTRIES {
                known.clear();
            }
            known.insert(id, (exists, Instant::now()));
        }
    }

    /// Ok if the concert exists; 404 `CONCERT_NOT_FOUND` if not; 503 if concert-api cannot say.
    pub async fn require(&self, id: i64) -> Result<(), ApiError> {
        let exists = match self.cached(id) {
            Some(e) => e,
            None => {
                let e = self.ask(id).await?;
                self.remember(id, e);
                e
            }
        };
        if exists {
            Ok(())
        } else {
            Err(ApiError::not_found(
                "CONCERT_NOT_FOUND",
                format!("concert {id} does not exist"),
            ))
        }
    }

    async fn ask(&self, id: i64) -> Result<bool, ApiError> {
        let url = format!("{}/api/concerts/{id}", self.cfg.url);
        let unavailable = |why: String| {
            tracing::warn!(%url, %why, "concert-api could not answer");
            ApiError::unavailable(
                "DEPENDENCY_UNAVAILABLE",
                "the concert catalogue is unavailable; try again shortly",
                2,
            )
        };
        // One retry, only when the connection itself failed (nothing reached concert-api).
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
            reqwest::StatusCode::OK => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            other => Err(unavailable(format!("status {other}"))),
        }
    }
}
