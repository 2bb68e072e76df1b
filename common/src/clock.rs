//! The one place that reads the wall clock. Services, the waiting room, the extractors and
//! the jobs take a [`Clock`]; tests give them a manual one and move it forward instead of
//! sleeping until a hold or a pass expires.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// The time source of a process: the system clock, or a manual one a test sets.
#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    System,
    /// The offset from the system clock: a manual clock still moves (so timeouts and
    /// intervals that use tokio's time keep their meaning) but can be moved ahead.
    Manual(Mutex<Duration>),
}

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A clock that runs with the system's but can be moved ahead with [`Clock::advance`].
    pub fn manual() -> Self {
        Self(Arc::new(Source::Manual(Mutex::new(Duration::zero()))))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &*self.0 {
            Source::System => Utc::now(),
            Source::Manual(offset) => {
                Utc::now() + *offset.lock().unwrap_or_else(|e| e.into_inner())
            }
        }
    }

    /// Moves a manual clock ahead by `by` (every holder of a clone sees it). A no-op on the
    /// system clock, which nobody may move.
    pub fn advance(&self, by: std::time::Duration) {
        if let Source::Manual(offset) = &*self.0 {
            let by = Duration::from_std(by).unwrap_or_else(|_| Duration::days(365));
            *offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::System => f.write_str("Clock::system"),
            Source::Manual(_) => f.write_str("Clock::manual"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_ahead_for_every_clone() {
        let clock = Clock::manual();
        let seen_by_other = clock.clone();
        let before = seen_by_other.now();
        clock.advance(std::time::Duration::from_secs(600));
        let after = seen_by_other.now();
        assert!(after - before >= Duration::seconds(600));
        assert!(after - before < Duration::seconds(660));
    }

    #[test]
    fn the_system_clock_cannot_be_moved() {
        let clock = Clock::system();
        clock.advance(std::time::Duration::from_secs(3600));
        assert!((clock.now() - Utc::now()).num_seconds().abs() < 5);
    }
}
