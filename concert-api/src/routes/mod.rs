//! HTTP routes of concert-api: extract, call the domain, map to the contract.

pub mod admin;
pub mod catalogue;
pub mod internal;
pub mod reservations;

use actix_web::web;
use chrono::{DateTime, Utc};
use common::clock::Clock;
use sea_orm::DatabaseConnection;

use crate::domain::box_office::BoxOffice;
use crate::domain::reservation::{Reservation, ReservationView};
use crate::store::cache::CatalogueCache;

/// What every handler shares.
pub struct AppState {
    pub db: DatabaseConnection,
    pub clock: Clock,
    pub office: BoxOffice,
    pub catalogue: CatalogueCache,
    pub sale: std::sync::Arc<crate::metrics::SaleMetrics>,
    /// The sale view's figures, read once per `SALE_VIEW_CACHE_MS` per concert.
    pub sale_view: crate::domain::sale::FiguresMemo,
    /// Times the holds, for the waiting room's admission pace.
    pub pressure: common::pressure::Pressure,
}

impl AppState {
    /// Holds that ended before this instant are dead at `now`.
    pub fn stale_before(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.office.policy.stale_before(now)
    }

    /// `r` as its owner sees it at `now` (a dead hold reads EXPIRED).
    pub fn view(&self, r: Reservation, now: DateTime<Utc>) -> ReservationView {
        ReservationView::at(r, self.stale_before(now))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    catalogue::configure(cfg);
    reservations::configure(cfg);
    admin::configure(cfg);
    internal::configure(cfg);
}
