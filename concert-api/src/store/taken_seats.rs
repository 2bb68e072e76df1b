//! Seats this process has just seen taken, answered 409 from memory for 250 ms (DESIGN,
//! "A seat seen taken is answered from memory"). When a flash sale's crowd wants one seat,
//! every loser after the first costs no PostgreSQL round trip; a seat released this moment
//! (a cancel elsewhere, a sweep) may be refused for this long, as if the race were lost.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};

/// How long a seat seen taken is believed taken.
pub const TAKEN_FOR: TimeDelta = TimeDelta::milliseconds(250);
const MAX_TAKEN: usize = 100_000;

/// Per (schedule, seat): until when to believe it taken. Times come from the service's clock,
/// so a test that moves the clock moves this memory with it.
#[derive(Default)]
pub struct TakenSeats {
    until: Mutex<HashMap<(i64, i32), DateTime<Utc>>>,
}

impl TakenSeats {
    pub fn new() -> Self {
        Self::default()
    }

    /// The requested `seats` of `schedule` seen taken within [`TAKEN_FOR`] before `now`
    /// (empty: ask the database).
    pub fn recently_taken(&self, schedule: i64, seats: &[i32], now: DateTime<Utc>) -> Vec<i32> {
        let Ok(map) = self.until.lock() else {
            return Vec::new();
        };
        seats
            .iter()
            .copied()
            .filter(|&n| map.get(&(schedule, n)).is_some_and(|until| *until > now))
            .collect()
    }

    /// Remembers `seats` of `schedule` as taken for [`TAKEN_FOR`] from `now`.
    pub fn remember(&self, schedule: i64, seats: &[i32], now: DateTime<Utc>) {
        let Ok(mut map) = self.until.lock() else {
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

    /// Forgets `seats` of `schedule`: they were released here (a cancel). Releases elsewhere
    /// (batch's sweep, another replica) are seen within [`TAKEN_FOR`].
    pub fn forget(&self, schedule: i64, seats: &[i32]) {
        if let Ok(mut map) = self.until.lock() {
            for &n in seats {
                map.remove(&(schedule, n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any instant will do: these rules only compare times.
    fn instant() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_taken_seat_is_believed_for_its_time_or_until_forgotten() {
        let seen = TakenSeats::new();
        let now = instant();
        seen.remember(1, &[3, 4], now);
        assert_eq!(seen.recently_taken(1, &[2, 3, 4], now), vec![3, 4]);
        assert!(
            seen.recently_taken(2, &[3], now).is_empty(),
            "another schedule"
        );
        assert!(seen.recently_taken(1, &[3], now + TAKEN_FOR).is_empty());
        seen.forget(1, &[3]);
        assert_eq!(seen.recently_taken(1, &[3, 4], now), vec![4]);
    }
}
