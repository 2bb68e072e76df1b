//! The hold policy (DESIGN §2 step 5, "Expiry"): how long a hold lasts, how many seats it
//! may take, and when a hold is dead — past `held_until` plus the grace a payment in flight
//! is given — so its seats count as free.

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::ReservationConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldPolicy {
    hold: TimeDelta,
    grace: TimeDelta,
    pub max_seats: usize,
}

impl HoldPolicy {
    pub fn new(rules: &ReservationConfig) -> Self {
        Self {
            // The settings are bounded to a day (DESIGN §3); the fallbacks are the defaults.
            hold: TimeDelta::from_std(rules.hold).unwrap_or_else(|_| TimeDelta::seconds(300)),
            grace: grace(rules.grace),
            max_seats: rules.max_seats,
        }
    }

    /// When a hold made at `now` ends.
    pub fn held_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.hold
    }

    /// Holds that ended before this instant are dead at `now`.
    pub fn stale_before(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.grace
    }
}

/// Holds that ended before this instant are dead at `now`, for a `grace` from the settings
/// (the sweep batch runs knows only the grace).
pub fn stale_before(now: DateTime<Utc>, grace_period: std::time::Duration) -> DateTime<Utc> {
    now - grace(grace_period)
}

fn grace(grace: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(grace).unwrap_or_else(|_| TimeDelta::seconds(30))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Any instant will do: these rules only compare times.
    fn instant() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_hold_lasts_its_time_and_dies_a_grace_later() {
        let policy = HoldPolicy::new(&ReservationConfig {
            hold: Duration::from_secs(300),
            grace: Duration::from_secs(30),
            max_seats: 4,
            catalogue_cache: Duration::ZERO,
        });
        let now = instant();
        assert_eq!(policy.held_until(now) - now, TimeDelta::seconds(300));
        assert_eq!(now - policy.stale_before(now), TimeDelta::seconds(30));
        assert_eq!(
            stale_before(now, Duration::from_secs(30)),
            policy.stale_before(now)
        );
    }
}
