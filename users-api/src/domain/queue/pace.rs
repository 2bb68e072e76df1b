//! The admission pace (DESIGN §10): how many admitted fans may shop at once, sized from
//! what the checkout measures rather than set by hand.
//!
//! Each room keeps an admission window (`window` in its stats hash): admission lets fans in
//! while fewer than the window are active, and the window moves with the checkout's pressure
//! ([`common::pressure`]), the way TCP sizes its congestion window:
//!
//! - while holds and payments answer within the target (their p90 over the last second, on
//!   every instance) and no database pool is saturated, a window that is full grows by
//!   `QUEUE_PACE_STEP` a second (additive increase). The crowd's first seconds (every fan
//!   joining at once) slow the checkout, so the window comes out of them cut; at 50 a second
//!   it took 4–6 s to grow back to the 250–400 a busy sale keeps active, and the machine ran
//!   at 1.3–1.7 of its 2 cores meanwhile (/proc/stat every 250 ms). At 100, six alternated
//!   pairs of `bench/purchase-cost.sh` (10,000 fans, 5,000 seats) sold out in 11.2–12.1 s
//!   (mean 11.6) against 11.5–12.4 (mean 11.9), at the same CPU a purchase and worst p99;
//! - when they do not, it shrinks to 85 % (multiplicative decrease), at most once a second:
//!   the samples cover a second, so a second cut would answer the same slowness twice. The
//!   samples reach the window a second or two after the fans it admitted, so a deep cut
//!   overshoots: at 70 % the machine went from busy to half idle and back every few seconds
//!   of a sale (vmstat), and 10,000 fans for 5,000 seats sold out in 24–39 s (median 27 s)
//!   against 21–28 s (median 24 s) at 85 % (`bench/purchase-cost.sh`, runs of either);
//! - it never passes the organiser's `max_active`, which stays the ceiling, and never goes
//!   under [`MIN_WINDOW`].
//!
//! The arithmetic runs in the admission script, next to the counts it needs, so that two
//! batch leaders racing cannot both apply it to the same old window; this module judges the
//! samples and carries the numbers.

use std::time::Duration;

use common::pressure::Checkout;

/// The smallest window: enough to measure the checkout by.
pub const MIN_WINDOW: u32 = 10;

/// The multiplicative decrease, in percent of the window kept (see the module's notes).
pub const CUT_TO_PERCENT: u32 = 85;

/// A cut at most this often.
pub const CUT_GAP: Duration = Duration::from_secs(1);

/// A database pool whose connections were all busy at this share of its looks is saturated.
pub const POOL_BUSY_LIMIT: f64 = 0.5;

/// How admission is paced (`QUEUE_PACE*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceConfig {
    /// `QUEUE_PACE=auto` (the default): the window follows the checkout; `fixed`: it is
    /// `max_active`, as an organiser set it.
    pub auto: bool,
    /// `QUEUE_PACE_TARGET_MS` (100): the p90 of holds and payments the pace keeps under.
    pub target: Duration,
    /// `QUEUE_PACE_START` (100): a room's first window.
    pub start: u32,
    /// `QUEUE_PACE_STEP` (100): how much a full window grows per second while the checkout
    /// keeps up.
    pub step_per_second: u32,
}

/// What this tick does to the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No pace: the window is `max_active`.
    Fixed,
    /// The checkout keeps up: a full window grows.
    Widen,
    /// The checkout is slow: the window shrinks.
    Narrow,
}

impl Verdict {
    /// The admission script's argument.
    pub(super) fn flag(self) -> &'static str {
        match self {
            Verdict::Fixed => "",
            Verdict::Widen => "0",
            Verdict::Narrow => "1",
        }
    }
}

impl PaceConfig {
    /// Judges the checkout's last second. Without fresh samples (nobody is holding or
    /// paying, or the instances cannot publish) the checkout is not known to be slow.
    pub fn judge(&self, checkout: &Checkout) -> Verdict {
        if !self.auto {
            return Verdict::Fixed;
        }
        let slow = Duration::from_millis(checkout.worst_p90_ms) > self.target;
        if slow || checkout.worst_pool_busy >= POOL_BUSY_LIMIT {
            Verdict::Narrow
        } else {
            Verdict::Widen
        }
    }

    /// The additive step per admission tick of `interval` (at least one fan).
    pub fn step_per_tick(&self, interval: Duration) -> u64 {
        let step = f64::from(self.step_per_second) * interval.as_secs_f64();
        (step.round() as u64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace() -> PaceConfig {
        PaceConfig {
            auto: true,
            target: Duration::from_millis(100),
            start: 100,
            step_per_second: 50,
        }
    }

    fn checkout(worst_p90_ms: u64, worst_pool_busy: f64) -> Checkout {
        Checkout {
            instances: 2,
            requests: 100,
            worst_p90_ms,
            worst_pool_busy,
        }
    }

    #[test]
    fn a_checkout_within_its_target_widens_and_a_slow_or_saturated_one_narrows() {
        let p = pace();
        assert_eq!(p.judge(&checkout(75, 0.2)), Verdict::Widen);
        assert_eq!(
            p.judge(&checkout(100, 0.0)),
            Verdict::Widen,
            "at the target"
        );
        assert_eq!(p.judge(&checkout(150, 0.0)), Verdict::Narrow);
        assert_eq!(
            p.judge(&checkout(20, 0.5)),
            Verdict::Narrow,
            "pool saturated"
        );
        assert_eq!(
            p.judge(&Checkout::default()),
            Verdict::Widen,
            "no samples: nobody is waiting on the checkout"
        );
        let fixed = PaceConfig { auto: false, ..p };
        assert_eq!(fixed.judge(&checkout(5_000, 1.0)), Verdict::Fixed);
    }

    #[test]
    fn the_step_is_spread_over_the_ticks_of_a_second() {
        let p = pace();
        assert_eq!(p.step_per_tick(Duration::from_millis(250)), 13);
        assert_eq!(p.step_per_tick(Duration::from_secs(1)), 50);
        assert_eq!(
            p.step_per_tick(Duration::from_millis(10)),
            1,
            "at least one"
        );
    }
}
