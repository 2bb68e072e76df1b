//! HTTP routes of concert-api: extract, call the domain or store, map to the contract.

pub mod admin;
pub mod catalogue;
pub mod internal;
pub mod reservations;

use std::time::Duration;

use actix_web::web;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use crate::config::ReservationConfig;
use crate::store::cache::CatalogueCache;

/// What every handler shares.
pub struct AppState {
    pub db: DatabaseConnection,
    pub cache: CatalogueCache,
    pub rules: ReservationConfig,
}

impl AppState {
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
