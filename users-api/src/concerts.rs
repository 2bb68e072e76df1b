//! Whether a concert exists, asked of concert-api (`GET /api/concerts/{id}`) and remembered
//! briefly. If concert-api cannot answer, the caller gets 503 with `Retry-After`: a line is
//! never opened on a guess.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use common::ApiError;
use common::client::ServiceClient;

use crate::config::ConcertApiConfig;
use crate::error::UsersCode;

/// Negative answers are kept for at most this long, so a concert created a moment after
/// someone asked for it opens its line quickly.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);
const MAX_ENTRIES: usize = 100_000;

type Lookup = Shared<BoxFuture<'static, Result<bool, ApiError>>>;

pub struct ConcertDirectory {
    client: ServiceClient,
    cfg: ConcertApiConfig,
    known: RwLock<HashMap<i64, (bool, Instant)>>,
    /// Lookups under way: when a popular concert's entry expires, thousands of requests
    /// miss at once; they share one question to concert-api instead of stampeding it.
    in_flight: Mutex<HashMap<i64, Lookup>>,
}

impl ConcertDirectory {
    pub fn new(cfg: ConcertApiConfig) -> Self {
        Self {
            client: ServiceClient::new(
                &cfg.url,
                cfg.timeout,
                "the concert catalogue is unavailable; try again shortly",
            ),
            cfg,
            known: RwLock::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
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
            None => self.look_up(id).await?,
        };
        if exists {
            Ok(())
        } else {
            Err(UsersCode::ConcertNotFound.err(format!("concert {id} does not exist")))
        }
    }

    /// One request to concert-api per concert at a time, shared by every caller that missed.
    async fn look_up(&self, id: i64) -> Result<bool, ApiError> {
        let lookup = {
            let mut in_flight = self
                .in_flight
                .lock()
                .map_err(|_| ApiError::internal("concert lookup lock poisoned"))?;
            in_flight
                .entry(id)
                .or_insert_with(|| ask(self.client.clone(), id).boxed().shared())
                .clone()
        };
        let answer = lookup.await;
        if let Ok(exists) = answer {
            self.remember(id, exists);
        }
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight.remove(&id);
        }
        answer
    }
}

/// Asks concert-api; any answer but 200 or 404 means it cannot say.
async fn ask(client: ServiceClient, id: i64) -> Result<bool, ApiError> {
    let concert: Option<serde_json::Value> =
        client.get_json(&format!("/api/concerts/{id}")).await?;
    Ok(concert.is_some())
}
