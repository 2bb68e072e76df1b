//! HTTP routes of concert-api: extract, call the domain or store, map to the contract.

pub mod admin;
pub mod catalogue;
pub mod internal;
pub mod reservations;

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::web;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use crate::config::ReservationConfig;
use crate::store::cache::CatalogueCache;
use crate::store::catalogue::ScheduleFacts;

/// What every handler shares.
pub struct AppState {
    pub db: DatabaseConnection,
    pub cache: CatalogueCache,
    pub rules: ReservationConfig,
    /// Schedules never change once created (no endpoint edits them), so every hold and seat
    /// map can skip the lookup after the first.
    pub schedules: RwLock<HashMap<i64, ScheduleFacts>>,
    /// Seats just seen taken, per (schedule, seat), until when to believe it.
    taken: Mutex<HashMap<(i64, i32), Instant>>,
}

const MAX_CACHED_SCHEDULES: usize = 100_000;

/// How long a seat seen taken is answered 409 from memory. When a flash sale's crowd wants
/// one seat, every loser after the first costs no PostgreSQL read; a seat released this
/// moment (a cancel, a sweep) may be refused for this long, as if the race were lost.
const TAKEN_FOR: Duration = Duration::from_millis(250);
const MAX_TAKEN: usize = 100_000;

impl AppState {
    pub fn new(db: DatabaseConnection, cache: CatalogueCache, rules: ReservationConfig) -> Self {
        Self {
            db,
            cache,
            rules,
            schedules: RwLock::new(HashMap::new()),
            taken: Mutex::new(HashMap::new()),
        }
    }

    /// The requested seats of `schedule` seen taken within [`TAKEN_FOR`] (empty: ask the
    /// database).
    pub fn recently_taken(&self, schedule: i64, seats: &[i32]) -> Vec<i32> {
        let now = Instant::now();
        let Ok(map) = self.taken.lock() else {
            return Vec::new();
        };
        seats
            .iter()
            .copied()
            .filter(|&n| map.get(&(schedule, n)).is_some_and(|until| *until > now))
            .collect()
    }

    /// Forgets `seats` of `schedule`: they were released here (a cancel). Releases elsewhere
    /// (batch's sweep, another replica) are seen within [`TAKEN_FOR`].
    pub fn forget_taken(&self, schedule: i64, seats: &[i32]) {
        if let Ok(mut map) = self.taken.lock() {
            for &n in seats {
                map.remove(&(schedule, n));
            }
        }
    }

    /// Remembers `seats` of `schedule` as taken for [`TAKEN_FOR`].
    pub fn remember_taken(&self, schedule: i64, seats: &[i32]) {
        let now = Instant::now();
        let Ok(mut map) = self.taken.lock() else {
            return;
        };
        if map.len() >= MAX_TAKEN {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_TAKEN {
                map.clear();
            }
        }
        for &n in seats {
            map.insert((schedule, n), now + TAKEN_FOR);
        }
    }

    /// The facts of a schedule (from memory after the first lookup).
    pub async fn schedule(&self, id: i64) -> Result<Option<ScheduleFacts>, sea_orm::DbErr> {
        if let Some(facts) = self.schedules.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(Some(facts));
        }
        let facts = crate::store::catalogue::schedule_facts(&self.db, id).await?;
        if let (Some(f), Ok(mut map)) = (&facts, self.schedules.write()) {
            if map.len() >= MAX_CACHED_SCHEDULES {
                map.clear();
            }
            map.insert(id, f.clone());
        }
        Ok(facts)
    }

    /// Holds that ended before this instant are dead (`now - grace`).
    pub fn stale_before(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - chrono::Duration::from_std(self.rules.grace)
            .unwrap_or_else(|_| chrono::Duration::seconds(30))
    }

    pub fn hold_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.rules.hold)
            .unwrap_or_else(|_| chrono::Duration::seconds(300))
    }

    pub fn cache_ttl(&self) -> Duration {
        self.rules.catalogue_cache
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    catalogue::configure(cfg);
    reservations::configure(cfg);
    admin::configure(cfg);
    internal::configure(cfg);
}
