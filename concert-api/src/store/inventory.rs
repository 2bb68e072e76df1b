//! Seat counts in Redis (DESIGN §5, §10 "Admission follows inventory"): per concert the hash
//! `inventory:{c<id>}` and per schedule `inventory:{c<id>}:s<schedule_id>`, each with the
//! integer fields `total`, `available`, `held`, `sold` (the seats' database statuses). The
//! `{c<id>}` hash tag keeps them in the slot of the concert's waiting-room keys, so users-api's
//! admission script reads them in O(1).
//!
//! Every change of a seat's status is applied here by the request that made it, after its
//! transaction committed ([`Inventory::apply`], HINCRBY). A hash that does not exist is never
//! created by a change (a concert with no hash is "unknown" to admission): the resync
//! ([`Inventory::resync`]) writes it from one exact `GROUP BY` over the concert's seats, at
//! start-up, on a timer and whenever asked, so a change lost in a crash between commit and
//! HINCRBY heals within one resync period.
//!
//! A resync must not overwrite changes applied while it counted: every change also bumps the
//! concert's `inventory:{c<id>}:seq`, and the counts are written only if that sequence is
//! still the one read before the count (else it tries again, a few times, then leaves it to
//! the next period).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use common::redis::RedisStore;
use redis::Script;
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::stmt;

/// KEYS: the concert's sequence, hash, then the schedule's hash. ARGV: field, delta pairs.
/// Only hashes that exist are changed; the sequence always moves.
const APPLY: &str = r#"
redis.call('INCR', KEYS[1])
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    for j = 1, #ARGV, 2 do
      local d = tonumber(ARGV[j + 1])
      if d ~= 0 then redis.call('HINCRBY', KEYS[i], ARGV[j], d) end
    end
  end
end
return 1
"#;

/// KEYS: the concert's sequence, hash, then each schedule's hash. ARGV[1]: the sequence read
/// before counting ('' if none); then four counts (total, available, held, sold) per hash in
/// KEYS order from KEYS[2]. Writes nothing and answers 0 if a change came in meanwhile; else
/// moves the sequence too (a rewrite is a change of the counts) and answers it.
const WRITE: &str = r#"
local seq = redis.call('GET', KEYS[1]) or ''
if seq ~= ARGV[1] then return 0 end
for i = 2, #KEYS do
  local a = 2 + (i - 2) * 4
  redis.call('HSET', KEYS[i], 'total', ARGV[a], 'available', ARGV[a + 1],
    'held', ARGV[a + 2], 'sold', ARGV[a + 3])
end
return redis.call('INCR', KEYS[1])
"#;

/// How many times a resync counts again when changes keep coming in while it counts.
const RESYNC_ATTEMPTS: usize = 3;

/// Seat counts: of a concert (over all its schedules) or of one schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct SeatCounts {
    pub total: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
}

impl SeatCounts {
    pub fn add(&mut self, other: &SeatCounts) {
        self.total += other.total;
        self.available += other.available;
        self.held += other.held;
        self.sold += other.sold;
    }
}

/// Seats of one schedule that changed status: a delta for each count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub concert_id: i64,
    pub schedule_id: i64,
    pub delta: SeatCounts,
}

impl Change {
    fn of(concert_id: i64, schedule_id: i64, delta: SeatCounts) -> Self {
        Self {
            concert_id,
            schedule_id,
            delta,
        }
    }
    /// `n` AVAILABLE seats became HELD.
    pub fn held(concert_id: i64, schedule_id: i64, n: i64) -> Self {
        Self::of(
            concert_id,
            schedule_id,
            SeatCounts {
                available: -n,
                held: n,
                ..Default::default()
            },
        )
    }
    /// `n` HELD seats became AVAILABLE (cancel, expiry, rejection).
    pub fn freed(concert_id: i64, schedule_id: i64, n: i64) -> Self {
        Self::of(
            concert_id,
            schedule_id,
            SeatCounts {
                available: n,
                held: -n,
                ..Default::default()
            },
        )
    }
    /// `n` HELD seats became SOLD.
    pub fn sold(concert_id: i64, schedule_id: i64, n: i64) -> Self {
        Self::of(
            concert_id,
            schedule_id,
            SeatCounts {
                held: -n,
                sold: n,
                ..Default::default()
            },
        )
    }
    /// A new schedule of `n` seats.
    pub fn created(concert_id: i64, schedule_id: i64, n: i64) -> Self {
        Self::of(
            concert_id,
            schedule_id,
            SeatCounts {
                total: n,
                available: n,
                ..Default::default()
            },
        )
    }
}

/// One schedule's exact counts, from the database.
#[derive(Debug, Clone, FromQueryResult)]
pub struct ScheduleCount {
    pub schedule_id: i64,
    pub starts_at: DateTime<Utc>,
    pub total: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
}

impl ScheduleCount {
    pub fn counts(&self) -> SeatCounts {
        SeatCounts {
            total: self.total,
            available: self.available,
            held: self.held,
            sold: self.sold,
        }
    }
}

/// The exact seat counts of every schedule of `concert_id`, from the seats table — or, for a
/// schedule archived, from `archive.seats` (index-only, final counts): archiving a show
/// changes no count.
pub async fn count_seats<C: ConnectionTrait>(
    db: &C,
    concert_id: i64,
) -> Result<Vec<ScheduleCount>, DbErr> {
    ScheduleCount::find_by_statement(stmt(
        db,
        "SELECT sc.id AS schedule_id, sc.starts_at, count(se.status) AS total, \
            count(*) FILTER (WHERE se.status = 'AVAILABLE') AS available, \
            count(*) FILTER (WHERE se.status = 'HELD') AS held, \
            count(*) FILTER (WHERE se.status = 'SOLD') AS sold \
         FROM schedules sc LEFT JOIN LATERAL ( \
            SELECT h.status FROM seats h WHERE h.schedule_id = sc.id AND sc.archived_at IS NULL \
            UNION ALL \
            SELECT a.status FROM archive.seats a \
            WHERE a.schedule_id = sc.id AND sc.archived_at IS NOT NULL) se ON true \
         WHERE sc.concert_id = $1 GROUP BY sc.id ORDER BY sc.starts_at, sc.id",
        vec![concert_id.into()],
    ))
    .all(db)
    .await
}

/// Which concerts a resync pass counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every concert with a schedule still to come (the `schedules_starts_at` index), plus the
    /// ones created in the last day without any.
    Live,
    /// Only those whose counts can have moved within this long (by the database's clock): a
    /// reservation of theirs changed (the `reservations_updated` index: every hold, cancel,
    /// expiry, sale and rejection sets `updated_at`), or the concert is that new. A count is
    /// lost only between a change's commit and its Redis update, so a concert nobody touched
    /// has nothing to heal — and counting every live concert each pass grows with the whole
    /// catalogue.
    ChangedWithin(std::time::Duration),
}

/// Concerts the periodic resync keeps exact (see [`Reach`]).
pub async fn live_concerts<C: ConnectionTrait>(db: &C, reach: Reach) -> Result<Vec<i64>, DbErr> {
    #[derive(FromQueryResult)]
    struct Id {
        id: i64,
    }
    let statement = match reach {
        Reach::Live => stmt(
            db,
            "SELECT DISTINCT concert_id AS id FROM schedules WHERE starts_at > now() \
             UNION SELECT id FROM concerts WHERE created_at > now() - interval '1 day' \
             ORDER BY id",
            vec![],
        ),
        Reach::ChangedWithin(within) => stmt(
            db,
            "SELECT DISTINCT concert_id AS id FROM reservations \
                WHERE updated_at > now() - $1 * interval '1 millisecond' \
             UNION SELECT id FROM concerts \
                WHERE created_at > now() - $1 * interval '1 millisecond' \
             ORDER BY id",
            vec![i64::try_from(within.as_millis()).unwrap_or(i64::MAX).into()],
        ),
    };
    Ok(Id::find_by_statement(statement)
        .all(db)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

/// The inventory hashes of every concert.
#[derive(Clone)]
pub struct Inventory {
    redis: RedisStore,
    apply: Script,
    write: Script,
    /// Each concert's sequence as this process last saw it (see [`Inventory::went_back`]).
    seen: Arc<Mutex<HashMap<i64, i64>>>,
}

impl Inventory {
    pub fn new(redis: RedisStore) -> Self {
        Self {
            redis,
            apply: Script::new(APPLY),
            write: Script::new(WRITE),
            seen: Arc::default(),
        }
    }

    fn saw(&self, concert_id: i64, seq: i64) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(concert_id, seq);
    }

    /// Whether `concert_id`'s hash must be counted although none of its reservations changed:
    /// it is missing (Redis lost it, or it was never written), or Redis went back in time under
    /// it (restored from an older copy, or a replica promoted that had not had every write) —
    /// which its sequence shows: it only ever grows (every change and every rewrite moves it),
    /// so a sequence below the one this process saw last, or gone, is an older copy, whose
    /// counts may be older too. Any change Redis lost that way was made since this process's
    /// previous look, one resync period ago, so it is also counted as changed lately.
    async fn went_back(&self, concert_id: i64) -> redis::RedisResult<bool> {
        let mut conn = self.redis.conn();
        let (present, seq): (bool, Option<i64>) = redis::pipe()
            .exists(self.concert_key(concert_id))
            .get(self.seq_key(concert_id))
            .query_async(&mut conn)
            .await?;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let back = match (seq, seen.get(&concert_id)) {
            (Some(now), Some(&last)) => now < last,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if let Some(now) = seq {
            seen.insert(concert_id, now);
        }
        Ok(!present || back)
    }

    /// `inventory:{c<id>}` (with the store's prefix).
    pub fn concert_key(&self, concert_id: i64) -> String {
        self.redis.key(&format!("inventory:{{c{concert_id}}}"))
    }

    /// `inventory:{c<id>}:s<schedule_id>` (with the store's prefix).
    pub fn schedule_key(&self, concert_id: i64, schedule_id: i64) -> String {
        self.redis
            .key(&format!("inventory:{{c{concert_id}}}:s{schedule_id}"))
    }

    fn seq_key(&self, concert_id: i64) -> String {
        self.redis.key(&format!("inventory:{{c{concert_id}}}:seq"))
    }

    /// Applies a committed change. A Redis failure is logged, not returned: the change has
    /// happened, and the next resync brings the counts back.
    pub async fn apply(&self, change: Change) {
        if change.delta == SeatCounts::default() {
            return;
        }
        let d = change.delta;
        let mut conn = self.redis.conn();
        let res: redis::RedisResult<i64> = self
            .apply
            .key(self.seq_key(change.concert_id))
            .key(self.concert_key(change.concert_id))
            .key(self.schedule_key(change.concert_id, change.schedule_id))
            .arg("total")
            .arg(d.total)
            .arg("available")
            .arg(d.available)
            .arg("held")
            .arg(d.held)
            .arg("sold")
            .arg(d.sold)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, concert_id = change.concert_id, "inventory update failed; the resync will repair it");
        }
    }

    /// Applies several committed changes: one update per schedule, their deltas summed (a
    /// sweep that ends many holds of one schedule costs one update), all sent at once.
    pub async fn apply_all(&self, changes: impl IntoIterator<Item = Change>) {
        let mut by_schedule: std::collections::BTreeMap<(i64, i64), SeatCounts> =
            std::collections::BTreeMap::new();
        for c in changes {
            by_schedule
                .entry((c.concert_id, c.schedule_id))
                .or_default()
                .add(&c.delta);
        }
        // All sent at once: the connection pipelines them, one wait in all.
        futures_util::future::join_all(by_schedule.into_iter().map(
            |((concert_id, schedule_id), delta)| {
                self.apply(Change::of(concert_id, schedule_id, delta))
            },
        ))
        .await;
    }

    /// Rewrites `concert_id`'s hashes from the database. `Ok(true)` when written, `Ok(false)`
    /// when changes kept coming in while it counted (the next resync tries again).
    pub async fn resync<C: ConnectionTrait>(
        &self,
        db: &C,
        concert_id: i64,
    ) -> Result<bool, ResyncError> {
        Ok(self.resync_counted(db, concert_id).await?.0)
    }

    /// [`Inventory::resync`], also answering the counts it made last (for a caller that needs
    /// them now, instead of counting the seats a second time).
    pub async fn resync_counted<C: ConnectionTrait>(
        &self,
        db: &C,
        concert_id: i64,
    ) -> Result<(bool, Vec<ScheduleCount>), ResyncError> {
        let mut conn = self.redis.conn();
        let mut schedules = Vec::new();
        for _ in 0..RESYNC_ATTEMPTS {
            let seq: Option<String> = redis::cmd("GET")
                .arg(self.seq_key(concert_id))
                .query_async(&mut conn)
                .await?;
            schedules = count_seats(db, concert_id).await?;
            let mut concert = SeatCounts::default();
            for s in &schedules {
                concert.add(&s.counts());
            }
            let mut call = self.write.prepare_invoke();
            call.key(self.seq_key(concert_id))
                .key(self.concert_key(concert_id))
                .arg(seq.unwrap_or_default());
            push_counts(&mut call, &concert);
            for s in &schedules {
                call.key(self.schedule_key(concert_id, s.schedule_id));
                push_counts(&mut call, &s.counts());
            }
            let written: i64 = call.invoke_async(&mut conn).await?;
            if written > 0 {
                self.saw(concert_id, written);
                return Ok((true, schedules));
            }
        }
        tracing::info!(
            concert_id,
            "inventory resync skipped: changes kept coming in"
        );
        Ok((false, schedules))
    }

    /// Resyncs the concerts `reach` takes in ([`live_concerts`]) — and, between full passes,
    /// every live concert whose hash is missing or older than this process last saw it
    /// ([`Inventory::went_back`]): answers how many were written.
    pub async fn resync_all<C: ConnectionTrait>(
        &self,
        db: &C,
        reach: Reach,
    ) -> Result<u64, ResyncError> {
        let mut concerts = live_concerts(db, reach).await?;
        if reach != Reach::Live {
            for id in live_concerts(db, Reach::Live).await? {
                if !concerts.contains(&id) && self.went_back(id).await? {
                    concerts.push(id);
                }
            }
        }
        let mut written = 0;
        for concert_id in concerts {
            if self.resync(db, concert_id).await? {
                written += 1;
            }
        }
        Ok(written)
    }

    /// `concert_id`'s sequence: it moves with every change of the concert's counts and every
    /// rewrite of them, so while it stands still no seat of the concert changed status
    /// (through the services). `None` if the concert has none yet.
    pub async fn sequence(&self, concert_id: i64) -> redis::RedisResult<Option<i64>> {
        redis::cmd("GET")
            .arg(self.seq_key(concert_id))
            .query_async(&mut self.redis.conn())
            .await
    }

    /// The counts of `concert_id` and of the given schedules, or `None` if the concert's hash
    /// or one of the schedules' does not exist (not synced yet).
    pub async fn read(
        &self,
        concert_id: i64,
        schedule_ids: &[i64],
    ) -> redis::RedisResult<Option<(SeatCounts, Vec<SeatCounts>)>> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(self.concert_key(concert_id)).arg(&[
            "total",
            "available",
            "held",
            "sold",
        ]);
        for id in schedule_ids {
            pipe.cmd("HMGET")
                .arg(self.schedule_key(concert_id, *id))
                .arg(&["total", "available", "held", "sold"]);
        }
        let mut conn = self.redis.conn();
        let rows: Vec<[Option<i64>; 4]> = pipe.query_async(&mut conn).await?;
        let counts = |r: &[Option<i64>; 4]| SeatCounts {
            total: r[0].unwrap_or(0),
            available: r[1].unwrap_or(0),
            held: r[2].unwrap_or(0),
            sold: r[3].unwrap_or(0),
        };
        if rows.len() != schedule_ids.len() + 1
            || rows.iter().any(|r| r.iter().all(Option::is_none))
        {
            return Ok(None);
        }
        Ok(Some((
            counts(&rows[0]),
            rows[1..].iter().map(counts).collect(),
        )))
    }
}

fn push_counts(call: &mut redis::ScriptInvocation<'_>, c: &SeatCounts) {
    call.arg(c.total).arg(c.available).arg(c.held).arg(c.sold);
}

/// Why a resync could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error(transparent)]
    Store(#[from] DbErr),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_move_seats_between_counts_and_keep_the_total() {
        let held = Change::held(1, 2, 3).delta;
        assert_eq!((held.available, held.held, held.total), (-3, 3, 0));
        let freed = Change::freed(1, 2, 3).delta;
        assert_eq!((freed.available, freed.held), (3, -3));
        let sold = Change::sold(1, 2, 3).delta;
        assert_eq!((sold.held, sold.sold, sold.available), (-3, 3, 0));
        let created = Change::created(1, 2, 50).delta;
        assert_eq!((created.total, created.available), (50, 50));
    }
}
