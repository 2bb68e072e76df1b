//! The live sale view (`SaleStats`, DESIGN §10): what an organiser polls every second during
//! an on-sale. Seat counts come from the inventory hashes in Redis (O(1) per schedule), the
//! rest from index-only counts; nothing reads the seats table, except a resync when a hash
//! does not exist yet.
//!
//! The counts grow with the concert's reservations (heap visits too, while a sale's rows are
//! new: ~20 ms for 10,000 during a sale), and every open console polls them. So each process
//! reads them at most once per `SALE_VIEW_CACHE_MS` per concert ([`FiguresMemo`]), however
//! many organisers watch; the seat counts stay exact at every poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::ApiError;
use prometheus::IntCounter;
use sea_orm::{DatabaseConnection, DbErr};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::catalogue::CatalogueError;
use crate::store::inventory::{self, Inventory, ScheduleCount, SeatCounts};
use crate::store::sale::{self, SaleFigures};

/// The last figures read for each concert, shared by every poll within `fresh` of the read.
/// Polls that find them older wait for one read (the first to come makes it) instead of each
/// making its own.
pub struct FiguresMemo {
    fresh: Duration,
    reads: IntCounter,
    slots: Mutex<HashMap<i64, Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    last: tokio::sync::Mutex<Option<(Instant, Arc<SaleFigures>)>>,
}

/// Past this many concerts, slots nobody is using and whose figures are stale are dropped.
const SLOTS_KEPT: usize = 256;

impl FiguresMemo {
    /// `fresh` zero: every poll reads. `reads` counts the reads (a metric).
    pub fn new(fresh: Duration, reads: IntCounter) -> Self {
        Self {
            fresh,
            reads,
            slots: Mutex::default(),
        }
    }

    /// The figures of `concert_id` (`None`: no such concert; not remembered).
    async fn figures(
        &self,
        db: &DatabaseConnection,
        concert_id: i64,
    ) -> Result<Option<Arc<SaleFigures>>, DbErr> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            if slots.len() >= SLOTS_KEPT {
                slots.retain(|_, slot| {
                    Arc::strong_count(slot) > 1
                        || slot.last.try_lock().map_or(true, |last| {
                            last.as_ref()
                                .is_some_and(|(at, _)| at.elapsed() < self.fresh)
                        })
                });
            }
            slots.entry(concert_id).or_default().clone()
        };
        let mut last = slot.last.lock().await;
        if let Some((at, figures)) = last.as_ref()
            && at.elapsed() < self.fresh
        {
            return Ok(Some(figures.clone()));
        }
        self.reads.inc();
        let read = sale::figures(db, concert_id).await?.map(Arc::new);
        *last = read.clone().map(|figures| (Instant::now(), figures));
        Ok(read)
    }
}

/// A concert's sale as it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SaleStats {
    pub concert_id: i64,
    /// Seats over all the concert's schedules.
    pub seats_total: i64,
    pub available: i64,
    /// Seats in holds, including dead holds the sweep has not freed yet.
    pub held: i64,
    pub sold: i64,
    /// The amounts of CONFIRMED reservations (KRW).
    pub revenue: i64,
    pub reservations: ReservationCounts,
    /// Holds (reservations) made in the last 60 seconds.
    pub holds_per_minute: i64,
    /// Seats sold (confirmed) in the last 60 seconds.
    pub sold_per_minute: i64,
    /// By `starts_at`.
    pub schedules: Vec<ScheduleSale>,
}

/// The concert's reservations by status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReservationCounts {
    pub held: i64,
    pub confirmed: i64,
    pub expired: i64,
    pub cancelled: i64,
    pub rejected: i64,
}

/// One schedule's seats.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleSale {
    pub id: i64,
    pub starts_at: DateTime<Utc>,
    pub seats_total: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
}

/// The sale of concert `id` (404 `CONCERT_NOT_FOUND` if there is none).
pub async fn sale_stats(
    db: &DatabaseConnection,
    inventory: &Inventory,
    memo: &FiguresMemo,
    concert_id: i64,
) -> Result<SaleStats, ApiError> {
    let f = memo
        .figures(db, concert_id)
        .await?
        .ok_or(CatalogueError::ConcertNotFound(concert_id))?;
    let ids = &f.schedule_ids;
    let counts = match inventory.read(concert_id, ids).await? {
        Some(counts) => counts,
        None => {
            // Never synced (or lost): count once from the database, and write the hashes
            // for the next poll with that same count.
            let rows = match inventory.resync_counted(db, concert_id).await {
                Ok((_, rows)) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, concert_id, "inventory resync failed");
                    inventory::count_seats(db, concert_id).await?
                }
            };
            let mut total = SeatCounts::default();
            let mut per_schedule = Vec::with_capacity(ids.len());
            for id in ids {
                let c = rows
                    .iter()
                    .find(|r| r.schedule_id == *id)
                    .map(ScheduleCount::counts)
                    .unwrap_or_default();
                total.add(&c);
                per_schedule.push(c);
            }
            (total, per_schedule)
        }
    };
    let (concert, per_schedule) = counts;
    Ok(SaleStats {
        concert_id,
        seats_total: concert.total,
        available: concert.available,
        held: concert.held,
        sold: concert.sold,
        revenue: f.revenue,
        reservations: ReservationCounts {
            held: f.held,
            confirmed: f.confirmed,
            expired: f.expired,
            cancelled: f.cancelled,
            rejected: f.rejected,
        },
        holds_per_minute: f.holds_last_minute,
        sold_per_minute: f.sold_last_minute,
        schedules: f
            .schedule_ids
            .iter()
            .zip(&f.schedule_starts)
            .zip(per_schedule)
            .map(|((id, starts_at), c)| ScheduleSale {
                id: *id,
                starts_at: *starts_at,
                seats_total: c.total,
                available: c.available,
                held: c.held,
                sold: c.sold,
            })
            .collect(),
    })
}
