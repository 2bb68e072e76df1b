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
    fn an_active_pass_shows_until_when() {
        let s = QueueStatus::from_reply("t", 1, QueueState::Active, "1700000000000", "", 2.0);
        assert_eq!(s.active_until.map(|t| t.timestamp()), Some(1_700_000_000));
        assert_eq!((s.position, s.eta_seconds), (None, None));
    }
}
