//! Seat maps this process has just read, answered from memory for [`FRESH_FOR`] (DESIGN,
//! "A seat map is answered from memory"). Every admitted fan reads a date's map before
//! holding, and again after losing a race; on a big date that is one of the largest reads a
//! sale makes, the same rows for everyone. Here one read per date and [`FRESH_FOR`] serves
//! them all, and those who ask while it is being read wait for it rather than read too.
//!
//! What a fan sees is at most [`FRESH_FOR`] old, with this process's own news on top (the
//! box office lays [`super::taken_seats::TakenSeats`] over it): a seat held here shows HELD at
//! once, since the memory of seats taken lasts as long as a map is kept. A seat released
//! (a cancel, the sweep) or taken by another replica shows its new status within
//! [`FRESH_FOR`] — as a map a fan loaded a moment earlier would. The database still decides
//! every hold.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use common::clock::Clock;
use sea_orm::DbErr;

use super::catalogue::SeatRow;
use super::taken_seats::TAKEN_FOR;

/// How long a map read is answered from memory. No longer than the memory of seats taken:
/// a hold made here after a map was read is then still remembered while that map is served.
pub const FRESH_FOR: TimeDelta = TAKEN_FOR;
/// Dates kept at most (a map of 1,000 seats is some 24 KiB); past it the stale ones go.
const MAX_DATES: usize = 1_000;

/// A date's map: when its read began (service clock) and what it read.
type Read = (DateTime<Utc>, Arc<[SeatRow]>);

/// What the memory has for a date.
enum Look {
    Fresh(Arc<[SeatRow]>),
    /// Nothing fresh: take this lock, then look again or read.
    Stale(Arc<tokio::sync::Mutex<()>>),
    /// A thread panicked holding the memory: read every time.
    Unusable,
}

#[derive(Default)]
struct Slot {
    read: Option<Read>,
    /// Held by whoever reads the date's map, so that only one does at a time.
    reading: Arc<tokio::sync::Mutex<()>>,
}

pub struct SeatMaps {
    slots: Mutex<HashMap<i64, Slot>>,
    clock: Clock,
}

impl SeatMaps {
    pub fn new(clock: Clock) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// `schedule`'s map: from memory when read within [`FRESH_FOR`], otherwise through
    /// `read` (by one caller at a time; those waiting take what it read).
    pub async fn get_or_read<F, Fut>(&self, schedule: i64, read: F) -> Result<Arc<[SeatRow]>, DbErr>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<SeatRow>, DbErr>>,
    {
        let reading = match self.look(schedule) {
            Look::Fresh(rows) => return Ok(rows),
            Look::Stale(reading) => reading,
            Look::Unusable => return Ok(read().await?.into()),
        };
        let _turn = reading.lock().await;
        if let Look::Fresh(rows) = self.look(schedule) {
            return Ok(rows);
        }
        // Dated from before the read: whatever committed after this moment is either in it
        // or younger than the map, and so still in the memory of seats taken.
        let began = self.clock.now();
        let rows: Arc<[SeatRow]> = read().await?.into();
        if let Ok(mut slots) = self.slots.lock() {
            slots.entry(schedule).or_default().read = Some((began, rows.clone()));
        }
        Ok(rows)
    }

    fn look(&self, schedule: i64) -> Look {
        let now = self.clock.now();
        let is_fresh = |read: &Read| read.0 <= now && now - read.0 < FRESH_FOR;
        let Ok(mut slots) = self.slots.lock() else {
            return Look::Unusable;
        };
        if slots.len() >= MAX_DATES && !slots.contains_key(&schedule) {
            slots.retain(|_, slot| slot.read.as_ref().is_some_and(is_fresh));
            if slots.len() >= MAX_DATES {
                // Whoever is reading keeps its own handle on its lock.
                slots.clear();
            }
        }
        let slot = slots.entry(schedule).or_default();
        match &slot.read {
            Some(read) if is_fresh(read) => Look::Fresh(read.1.clone()),
            _ => Look::Stale(slot.reading.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::domain::status::SeatStatus;

    fn map(status: SeatStatus) -> Vec<SeatRow> {
        vec![SeatRow {
            seat_no: 1,
            price: 1000,
            status,
        }]
    }

    #[tokio::test]
    async fn a_map_is_read_once_while_fresh_and_again_after() {
        let clock = Clock::manual();
        let maps = SeatMaps::new(clock.clone());
        let reads = AtomicUsize::new(0);
        let read = |status| {
            let reads = &reads;
            move || async move {
                reads.fetch_add(1, Ordering::SeqCst);
                Ok(map(status))
            }
        };
        let first = maps
            .get_or_read(7, read(SeatStatus::Available))
            .await
            .unwrap();
        clock.advance(Duration::from_millis(200));
        let again = maps.get_or_read(7, read(SeatStatus::Held)).await.unwrap();
        assert_eq!(
            (reads.load(Ordering::SeqCst), again[0].status),
            (1, first[0].status)
        );
        maps.get_or_read(8, read(SeatStatus::Sold)).await.unwrap();
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "another date is read for itself"
        );
        clock.advance(Duration::from_millis(60));
        let later = maps.get_or_read(7, read(SeatStatus::Held)).await.unwrap();
        assert_eq!(
            (reads.load(Ordering::SeqCst), later[0].status),
            (3, SeatStatus::Held)
        );
    }

    #[tokio::test]
    async fn callers_waiting_on_a_read_take_its_map_and_a_failed_read_is_not_kept() {
        let clock = Clock::manual();
        let maps = Arc::new(SeatMaps::new(clock.clone()));
        let reads = Arc::new(AtomicUsize::new(0));
        let (release, wait) = tokio::sync::watch::channel(false);
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let (maps, reads, mut wait) = (maps.clone(), reads.clone(), wait.clone());
                tokio::spawn(async move {
                    maps.get_or_read(7, || async move {
                        reads.fetch_add(1, Ordering::SeqCst);
                        wait.wait_for(|go| *go).await.unwrap();
                        Ok(map(SeatStatus::Available))
                    })
                    .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        for caller in callers {
            caller.await.unwrap().unwrap();
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);

        clock.advance(Duration::from_secs(1));
        let failed = maps
            .get_or_read(7, || async { Err(DbErr::Custom("down".into())) })
            .await;
        assert!(failed.is_err());
        let next = maps
            .get_or_read(7, || async { Ok(map(SeatStatus::Sold)) })
            .await
            .unwrap();
        assert_eq!(
            next[0].status,
            SeatStatus::Sold,
            "read again after a failure"
        );
    }
}
