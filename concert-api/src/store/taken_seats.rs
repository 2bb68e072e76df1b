//! Seats this process has just seen taken, answered 409 from memory for 250 ms (DESIGN,
//! "A seat seen taken is answered from memory"). When a flash sale's crowd wants one seat,
//! every loser after the first costs no PostgreSQL round trip; a seat released this moment
//! (a cancel elsewhere, a sweep) may be refused for this long, as if the race were lost.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use common::clock::Clock;

/// How long a seat seen taken is believed taken.
pub const TAKEN_FOR: TimeDelta = TimeDelta::milliseconds(250);
const MAX_TAKEN: usize = 100_000;

/// Per (schedule, seat): until when to believe it taken. Times come from the service's clock,
/// so a test that moves the clock moves this memory with it — read when the memory is used,
/// not when the request began: a loser that waited its turn for the database a few hundred
/// milliseconds must remember the seat from the moment it learned, or the memory is already
/// stale when written and the whole crowd goes to the database.
pub struct TakenSeats {
    until: Mutex<HashMap<(i64, i32), DateTime<Utc>>>,
    clock: Clock,
}

impl TakenSeats {
    pub fn new(clock: Clock) -> Self {
        Self {
            until: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// The requested `seats` of `schedule` seen taken within the last [`TAKEN_FOR`] (empty:
    /// ask the database).
    pub fn recently_taken(&self, schedule: i64, seats: &[i32]) -> Vec<i32> {
        let now = self.clock.now();
        let Ok(map) = self.until.lock() else {
            return Vec::new();
        };
        seats
            .iter()
            .copied()
            .filter(|&n| map.get(&(schedule, n)).is_some_and(|until| *until > now))
            .collect()
    }

    /// Remembers `seats` of `schedule` as taken for [`TAKEN_FOR`] from now.
    pub fn remember(&self, schedule: i64, seats: &[i32]) {
        let now = self.clock.now();
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

    #[test]
    fn a_taken_seat_is_believed_for_its_time_or_until_forgotten() {
        let clock = Clock::manual();
        let seen = TakenSeats::new(clock.clone());
        seen.remember(1, &[3, 4]);
        assert_eq!(seen.recently_taken(1, &[2, 3, 4]), vec![3, 4]);
        assert!(seen.recently_taken(2, &[3]).is_empty(), "another schedule");
        seen.forget(1, &[3]);
        assert_eq!(seen.recently_taken(1, &[3, 4]), vec![4]);
        clock.advance(std::time::Duration::from_millis(260));
        assert!(
            seen.recently_taken(1, &[4]).is_empty(),
            "believed 250 ms only"
        );
    }
}
