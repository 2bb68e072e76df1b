//! Following the lines from one process (DESIGN §11): however many status streams a process
//! holds open for a concert, one ticker reads that concert's line once per tick
//! ([`WaitingRoom::tick`]) and hands the reading to all of them; each stream works out its
//! fan's position from its own place and the reading, and asks Redis again only when the
//! reading says its fan's turn may have come or the line was reordered.
//!
//! Why the local position is right: admission takes tokens off the front of the line only,
//! in sequence order, and counts them (`passed`) and notes the last one's sequence number
//! (`head`). A fan at exact rank `r` when `passed` was `p` is at `r - (passed - p)` for as
//! long as `head` stays below its own sequence number. Tokens ahead that leave otherwise (a
//! fan whose heartbeat lapsed, found by its own late poll) make that an overestimate by as
//! many, never an underestimate, and admission's own notice is never late: once `head`
//! reaches the fan's sequence number, the stream asks Redis at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::WaitingRoom;

/// One tick's reading of a line (see [`WaitingRoom::tick`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LineState {
    /// Tokens admission has taken off the front of the line so far (admitted or abandoned).
    pub passed: i64,
    /// The sequence number of the last of them: every token at or below it has left the line.
    pub head: i64,
    /// Lottery draws so far: a draw puts the pre-queue into the line ahead of later arrivals.
    pub draws: i64,
    /// Admissions per second, measured (or nominal before a measure).
    pub rate: f64,
    pub sold_out: bool,
}

/// A waiting token's place as Redis last said it, with the line's counters at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Its sequence number (order in line).
    pub seq: i64,
    /// Its exact position then (1 = next); `None` while pre-queued (no position before the draw).
    pub rank: Option<i64>,
    pub passed: i64,
    pub head: i64,
    pub draws: i64,
}

/// What a reading says about a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Still waiting, at this position (`None`: pre-queued).
    Waiting(Option<i64>),
    /// Only Redis can say: the fan may have been admitted or dropped (admission reached its
    /// place), the line was reordered (a draw) or reset (Redis lost it), or the room sold out.
    AskRedis,
}

impl Place {
    pub fn read(&self, line: &LineState) -> Reading {
        if line.sold_out
            || line.draws != self.draws
            || line.passed < self.passed
            || line.head < self.head
            || (self.rank.is_some() && line.head >= self.seq)
        {
            return Reading::AskRedis;
        }
        Reading::Waiting(
            self.rank
                .map(|rank| (rank - (line.passed - self.passed)).max(1)),
        )
    }
}

/// One tick's reading as streams receive it: `None` until the first tick answered. `ticks`
/// counts the ticker's rounds, so every stream wakes once a tick (to probe its client when
/// asked to, see [`super::StreamSlot::should_probe`]) even when the line did not move.
#[derive(Debug, Clone, Default)]
pub struct Tick {
    pub ticks: u64,
    pub line: Option<LineState>,
}

type Tickers = Arc<Mutex<HashMap<i64, watch::Sender<Tick>>>>;

/// The lines this process follows: one ticker per concert with at least one open stream.
#[derive(Clone)]
pub struct Lines {
    room: WaitingRoom,
    period: Duration,
    tickers: Tickers,
}

impl Lines {
    /// Tickers read each line every `QUEUE_SSE_POLL_MS`.
    pub fn new(room: WaitingRoom) -> Self {
        Self {
            period: room.config().sse_poll,
            room,
            tickers: Arc::default(),
        }
    }

    /// The readings of `concert_id`'s line; starts its ticker if this is the process's first
    /// stream of the concert. The ticker stops after the last receiver is dropped.
    pub fn follow(&self, concert_id: i64) -> watch::Receiver<Tick> {
        let mut tickers = self.tickers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = tickers.get(&concert_id) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Tick::default());
        tickers.insert(concert_id, tx.clone());
        tokio::spawn(self.clone().tick(concert_id, tx));
        rx
    }

    /// Concerts with a ticker in this process.
    pub fn followed(&self) -> usize {
        self.tickers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    async fn tick(self, concert_id: i64, tx: watch::Sender<Tick>) {
        let mut every = tokio::time::interval(self.period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            every.tick().await;
            {
                // Under the lock `follow` subscribes with: no stream can join a ticker that
                // is deciding to stop.
                let mut tickers = self.tickers.lock().unwrap_or_else(PoisonError::into_inner);
                if tx.receiver_count() == 0 {
                    tickers.remove(&concert_id);
                    return;
                }
            }
            let line = match self.room.tick(concert_id).await {
                Ok(line) => {
                    if failing {
                        tracing::info!(concert_id, "the line can be read again");
                        failing = false;
                    }
                    Some(line)
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(concert_id, %error, "the line cannot be read; streams keep their last reading");
                        failing = true;
                    }
                    None
                }
            };
            tx.send_modify(|t| {
                t.ticks += 1;
                if line.is_some() {
                    t.line = line;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(passed: i64, head: i64) -> LineState {
        LineState {
            passed,
            head,
            draws: 0,
            rate: 10.0,
            sold_out: false,
        }
    }

    const PLACE: Place = Place {
        seq: 120,
        rank: Some(40),
        passed: 70,
        head: 80,
        draws: 0,
    };

    #[test]
    fn the_position_falls_by_what_admission_took_off_the_front() {
        assert_eq!(PLACE.read(&line(70, 80)), Reading::Waiting(Some(40)));
        assert_eq!(PLACE.read(&line(95, 105)), Reading::Waiting(Some(15)));
        assert_eq!(
            PLACE.read(&line(115, 119)),
            Reading::Waiting(Some(1)),
            "never shown below 1 while the fan is still behind the head"
        );
    }

    #[test]
    fn admission_reaching_the_place_is_asked_about_at_once() {
        assert_eq!(PLACE.read(&line(110, 120)), Reading::AskRedis);
        assert_eq!(PLACE.read(&line(200, 300)), Reading::AskRedis);
    }

    #[test]
    fn a_draw_a_reset_or_a_sell_out_is_asked_about() {
        let drawn = LineState {
            draws: 1,
            ..line(70, 80)
        };
        assert_eq!(PLACE.read(&drawn), Reading::AskRedis);
        assert_eq!(
            PLACE.read(&line(0, 0)),
            Reading::AskRedis,
            "Redis lost the line"
        );
        let sold_out = LineState {
            sold_out: true,
            ..line(70, 80)
        };
        assert_eq!(PLACE.read(&sold_out), Reading::AskRedis);
    }

    #[test]
    fn a_pre_queued_place_has_no_position_until_the_draw() {
        let pre = Place {
            rank: None,
            head: 0,
            passed: 0,
            ..PLACE
        };
        assert_eq!(pre.read(&line(0, 0)), Reading::Waiting(None));
        let drawn = LineState {
            draws: 1,
            ..line(0, 0)
        };
        assert_eq!(pre.read(&drawn), Reading::AskRedis);
    }
}
