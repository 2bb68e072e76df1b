//! HTTP routes of concert-api: extract, call the domain or store, map to the contract.

pub mod admin;
pub mod catalogue;
pub mod internal;
pub mod reservations;

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

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
}

const MAX_CACHED_SCHEDULES: usize = 100_000;

impl AppState {
    pub fn new(db: DatabaseConnection, cache: CatalogueCache, rules: ReservationConfig) -> Self {
        Self {
            db,
            cache,
            rules,
            schedules: RwLock::new(HashMap::new()),
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
