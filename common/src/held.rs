//! Live holds on a board in Redis (DESIGN §2 step 7): concert-api pins each hold there right
//! after it commits and takes it down before a cancel commits; payment-api reads the board
//! instead of asking concert-api over HTTP, and asks concert-api only when the hold is not
//! there (Redis restarted, the hold older than the board, another build's concert-api).
//!
//! Why it is safe to pay from the board: a hold leaves HELD in three ways only.
//! - Its time runs out: the note carries `held_until` and expires with it, and payment-api's
//!   hold policy refuses a hold that ends within the cutoff anyway.
//! - Its owner cancels it: the note is taken down before the cancel commits, so after the
//!   commit nobody reads it (if Redis cannot be told, the cancel fails and nothing changed).
//! - It is paid: a reservation has one payment at most (payment-api's unique index), so a
//!   second payment from a note still saying HELD is `ALREADY_PAID`.
//!
//! And a payment taken on a note that was wrong all the same (a cancel racing the read, as
//! with concert-api's own answer) is rejected by the settlement and refunded: the board only
//! saves a round trip, it decides nothing.
//!
//! One `SET` per hold, one `DEL` per cancel, one `GET` per payment.

use chrono::{DateTime, Utc};
use redis::RedisResult;

use crate::redis::RedisStore;

/// A hold as the board shows it: what paying for it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldNote {
    pub reservation_id: i64,
    pub user_id: i64,
    pub concert_id: i64,
    pub amount: i64,
    pub held_until: DateTime<Utc>,
}

impl HeldNote {
    /// `user:concert:amount:held_until` (Unix µs): the reservation id is the key.
    fn body(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.user_id,
            self.concert_id,
            self.amount,
            self.held_until.timestamp_micros()
        )
    }

    fn parse(reservation_id: i64, body: &str) -> Option<Self> {
        let parts: Vec<i64> = body
            .split(':')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let &[user_id, concert_id, amount, held_until] = parts.as_slice() else {
            return None;
        };
        Some(Self {
            reservation_id,
            user_id,
            concert_id,
            amount,
            held_until: DateTime::from_timestamp_micros(held_until)?,
        })
    }
}

/// The board: one short-lived key per live hold.
#[derive(Clone)]
pub struct HoldBoard {
    redis: RedisStore,
}

impl HoldBoard {
    pub fn new(redis: RedisStore) -> Self {
        Self { redis }
    }

    fn key(&self, reservation_id: i64) -> String {
        self.redis.key(&format!("held:{reservation_id}"))
    }

    /// Pins `note` until its hold ends (by `now`, the holding service's clock). A hold already
    /// over is not pinned.
    pub async fn pin(&self, note: &HeldNote, now: DateTime<Utc>) -> RedisResult<()> {
        let Ok(ttl) = u64::try_from((note.held_until - now).num_milliseconds()) else {
            return Ok(());
        };
        if ttl == 0 {
            return Ok(());
        }
        redis::cmd("SET")
            .arg(self.key(note.reservation_id))
            .arg(note.body())
            .arg("PX")
            .arg(ttl)
            .query_async(&mut self.redis.conn())
            .await
    }

    /// Takes down reservation `id`'s note; call before the change that ends its hold commits.
    pub async fn take_down(&self, reservation_id: i64) -> RedisResult<()> {
        redis::cmd("DEL")
            .arg(self.key(reservation_id))
            .query_async::<i64>(&mut self.redis.conn())
            .await
            .map(|_| ())
    }

    /// Reservation `id`'s note, `None` if the board has none (or one it cannot read: then ask
    /// concert-api, as for a missing one).
    pub async fn read(&self, reservation_id: i64) -> RedisResult<Option<HeldNote>> {
        let body: Option<String> = redis::cmd("GET")
            .arg(self.key(reservation_id))
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(body.and_then(|b| {
            let note = HeldNote::parse(reservation_id, &b);
            if note.is_none() {
                tracing::warn!(reservation_id, body = b, "unreadable hold note ignored");
            }
            note
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_reads_back_as_written() {
        let note = HeldNote {
            reservation_id: 7,
            user_id: 3,
            concert_id: 2,
            amount: 1_500,
            held_until: "2026-12-03T12:00:00.250Z".parse().unwrap(),
        };
        assert_eq!(HeldNote::parse(7, &note.body()), Some(note));
        for bad in ["", "3:2:1500", "3:2:1500:x", "3:2:1500:1:9", "a:2:1:1"] {
            assert_eq!(HeldNote::parse(7, bad), None, "{bad}");
        }
    }
}
