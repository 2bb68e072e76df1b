//! What a token's place in line looks like to its owner (`QueueStatus` of API.md): the
//! state read from a script's reply, the position, and the estimated wait.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// A token's state. Serialized as the scripts reply it, so the view and Redis agree.
/// `SOLD_OUT` is terminal: the concert has nothing left to buy (a stream ends with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueueState {
    Waiting,
    Active,
    Expired,
    SoldOut,
}

impl QueueState {
    /// The state a script replied with; `None` for anything else (the status script's
    /// answer for a token that is not the caller's).
    pub(super) fn from_reply(reply: &str) -> Option<Self> {
        match reply {
            "WAITING" => Some(Self::Waiting),
            "ACTIVE" => Some(Self::Active),
            "EXPIRED" => Some(Self::Expired),
            "SOLD_OUT" => Some(Self::SoldOut),
            _ => None,
        }
    }
}

/// `QueueStatus` of API.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct QueueStatus {
    pub token: String,
    pub concert_id: i64,
    pub status: QueueState,
    /// 1 = next to be admitted; only while waiting.
    pub position: Option<i64>,
    pub eta_seconds: Option<i64>,
    pub active_until: Option<DateTime<Utc>>,
    /// Joined before the sale opened: no position until the draw at `opens_at` puts the
    /// token in line (it must keep heartbeating to be in the draw).
    pub pre_queue: bool,
    /// The sale's opening (`sale_opens_at`) while pre-queued; null otherwise.
    pub opens_at: Option<DateTime<Utc>>,
}

impl QueueStatus {
    /// From a script's reply: `value` is the position while waiting and the end of the pass
    /// (ms since the epoch) while active; `rate` is the line's measured admission rate per
    /// second, empty until admission has measured one (then `nominal_rate` is used).
    /// A pre-queued token has no position; `opens_at` (ms) is the sale's opening.
    pub(super) fn pre_queued(token: &str, concert_id: i64, opens_at: &str) -> Self {
        Self {
            token: token.to_owned(),
            concert_id,
            status: QueueState::Waiting,
            position: None,
            eta_seconds: None,
            active_until: None,
            pre_queue: true,
            opens_at: opens_at
                .parse::<i64>()
                .ok()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        }
    }

    pub(super) fn from_reply(
        token: &str,
        concert_id: i64,
        state: QueueState,
        value: &str,
        rate: &str,
        nominal_rate: f64,
    ) -> Self {
        let (position, active_until) = match state {
            QueueState::Waiting => (value.parse().ok(), None),
            QueueState::Active => (
                None,
                value
                    .parse::<f64>()
                    .ok()
                    .and_then(|ms| Utc.timestamp_millis_opt(ms as i64).single()),
            ),
            QueueState::Expired | QueueState::SoldOut => (None, None),
        };
        let rate = rate.parse::<f64>().unwrap_or(nominal_rate);
        Self {
            token: token.to_owned(),
            concert_id,
            status: state,
            eta_seconds: position.and_then(|p| eta_seconds(p, rate)),
            position,
            active_until,
            pre_queue: false,
            opens_at: None,
        }
    }
}

impl QueueStatus {
    /// This waiting status at `position` (`None`: pre-queued, unchanged) with the wait
    /// estimated at `rate` admissions per second.
    pub fn waiting_at(&self, position: Option<i64>, rate: f64) -> Self {
        let Some(position) = position else {
            return self.clone();
        };
        Self {
            status: QueueState::Waiting,
            position: Some(position),
            eta_seconds: eta_seconds(position, rate),
            active_until: None,
            ..self.clone()
        }
    }
}

impl QueueStatus {
    /// When a polling client should ask again (`Retry-After` on a poll's answer): a tenth of
    /// the wait (of the estimate in line, of the time to the opening in the pre-queue), at
    /// least a second and at most a quarter of the idle timeout, so that every poll still
    /// comes in time to be the fan's heartbeat. `None` once the status is final or active.
    pub fn poll_after(&self, now: DateTime<Utc>, idle_timeout: std::time::Duration) -> Option<u64> {
        if self.status != QueueState::Waiting {
            return None;
        }
        let longest = (idle_timeout.as_secs() / 4).max(1);
        let wait = if self.pre_queue {
            self.opens_at.map(|at| (at - now).num_seconds().max(0))
        } else {
            self.eta_seconds
        };
        let wait = wait.map_or(longest, |w| u64::try_from(w / 10).unwrap_or(0));
        Some(wait.clamp(1, longest))
    }
}

/// Seconds until `position` is admitted at `rate` per second; `None` while nobody is being
/// admitted.
fn eta_seconds(position: i64, rate: f64) -> Option<i64> {
    (rate > 0.0).then(|| (position as f64 / rate).ceil() as i64)
}

/// Why a tick admitted nobody (or `Open`: it admitted what it could).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Gate {
    #[default]
    Open,
    /// The organiser paused the room.
    Paused,
    /// A pre-queue whose sale has not opened yet.
    NotOpenYet,
    /// No seat available but some held: admission waits for a seat to come back.
    NoSeatAvailable,
    /// Nothing available nor held: the room is SOLD_OUT.
    SoldOut,
    /// The pre-queue's sale has opened and its lottery is not drawn yet (the tick draws).
    DrawDue,
}

impl Gate {
    pub(super) fn from_reply(n: u64) -> Self {
        match n {
            1 => Self::Paused,
            2 => Self::NotOpenYet,
            3 => Self::NoSeatAvailable,
            4 => Self::SoldOut,
            5 => Self::DrawDue,
            _ => Self::Open,
        }
    }
}

/// What one admission tick did, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admission {
    pub admitted: u64,
    /// Active tokens whose time ran out, dropped to free their slots.
    pub expired: u64,
    /// Waiting tokens whose heartbeat lapsed, dropped instead of admitted.
    pub abandoned: u64,
    pub active: u64,
    /// In the FIFO line (pre-queued tokens not included).
    pub waiting: u64,
    /// In the pre-queue, before the draw.
    pub pre_queued: u64,
    /// Pre-queued tokens this tick's draw put in line (0 but at the draw).
    pub drawn: u64,
    pub gate: Gate,
    /// The room's admission window after this tick, when admission is paced.
    pub window: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_names_each_state_as_the_scripts_do() {
        for state in [
            QueueState::Waiting,
            QueueState::Active,
            QueueState::Expired,
            QueueState::SoldOut,
        ] {
            let name = serde_json::to_value(state).unwrap();
            assert_eq!(QueueState::from_reply(name.as_str().unwrap()), Some(state));
        }
        assert_eq!(QueueState::from_reply(""), None);
    }

    #[test]
    fn the_wait_is_the_position_over_the_admission_rate() {
        let waiting = |rate| QueueStatus::from_reply("t", 1, QueueState::Waiting, "7", rate, 2.0);
        assert_eq!(
            waiting("").eta_seconds,
            Some(4),
            "nominal 2/s before a measure"
        );
        assert_eq!(waiting("0.5").eta_seconds, Some(14));
        assert_eq!(
            waiting("0").eta_seconds,
            None,
            "nobody admitted: no estimate"
        );
        assert_eq!(waiting("0.5").position, Some(7));
    }

    #[test]
    fn polls_are_paced_by_the_wait_and_always_come_before_the_heartbeat_lapses() {
        let idle = std::time::Duration::from_secs(120);
        let now = Utc::now();
        let at = |position: &str, rate: &str| {
            QueueStatus::from_reply("t", 1, QueueState::Waiting, position, rate, 2.0)
                .poll_after(now, idle)
        };
        assert_eq!(at("3", "10"), Some(1), "the front asks every second");
        assert_eq!(at("2000", "10"), Some(20), "200 s away: every 20 s");
        assert_eq!(
            at("90000", "10"),
            Some(30),
            "never past a quarter of the idle timeout"
        );
        assert_eq!(
            at("5", "0"),
            Some(30),
            "nobody admitted: just the heartbeat"
        );
        let pre = QueueStatus::pre_queued("t", 1, &(now.timestamp_millis() + 300_000).to_string());
        assert_eq!(
            pre.poll_after(now, idle),
            Some(29),
            "a tenth of the time to the opening"
        );
        let active = QueueStatus::from_reply("t", 1, QueueState::Active, "1700000000000", "", 2.0);
        assert_eq!(active.poll_after(now, idle), None);
    }

    #[test]
    fn an_active_pass_shows_until_when() {
        let s = QueueStatus::from_reply("t", 1, QueueState::Active, "1700000000000", "", 2.0);
        assert_eq!(s.active_until.map(|t| t.timestamp()), Some(1_700_000_000));
        assert_eq!((s.position, s.eta_seconds), (None, None));
    }
}
