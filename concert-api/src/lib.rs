//! concert-api: concerts, schedules, seats and holds, and confirmation of paid holds.

pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod store;

pub use config::Config;
pub use domain::archive::{
    Archival, ScheduleArchival, ScheduleReservations, archive_schedules, due_schedules,
    schedule_reservations, vacuum_after_archival,
};
pub use domain::reservation::expire_holds;
pub use store::inventory::{Inventory, ResyncError};

/// Rewrites concert `concert_id`'s inventory hashes (`inventory:{c<id>}` and its schedules')
/// from one exact count of its seats in the database; `Ok(false)` if changes kept coming in
/// while it counted (the next resync tries again).
pub async fn resync_inventory(
    db: &sea_orm::DatabaseConnection,
    redis: &common::redis::RedisStore,
    concert_id: i64,
) -> Result<bool, ResyncError> {
    Inventory::new(redis.clone()).resync(db, concert_id).await
}

/// [`resync_inventory`] for every concert with a schedule still to come (or created in the
/// last day); answers how many were written.
pub async fn resync_all_inventory(
    db: &sea_orm::DatabaseConnection,
    redis: &common::redis::RedisStore,
) -> Result<u64, ResyncError> {
    Inventory::new(redis.clone())
        .resync_all(db, store::inventory::Reach::Live)
        .await
}
pub use startup::{Application, openapi};
