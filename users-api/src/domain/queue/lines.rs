//! Following the lines from one process (DESIGN §11): however many status streams a process
//! holds open for a concert, one ticker reads that concert's line once per tick
//! ([`WaitingRoom::tick`]) and keeps the reading for all of them. It wakes at once the
//! streams whose place admission reached (they wait by sequence number) and, on an event
//! (a draw, a sell-out, the counters reset), all of them; otherwise each stream looks at the
//! reading on its own [`cadence`], every tick at the front of the line and less often further
//! back. A stream works out its fan's position from its own place and the reading, and asks
//! Redis again only when the reading says its fan's turn may have come or the line changed.
//!
//! Why the local position is right: admission takes tokens off the front of the line only,
//! in sequence order, and counts them (`passed`) and notes the last one's sequence number
//! (`head`). A fan at exact rank `r` when `passed` was `p` is at `r - (passed - p)` for as
//! long as `head` stays below its own sequence number. Tokens ahead that leave otherwise (a
//! fan whose heartbeat lapsed, found by its own late poll) make that an overestimate by as
//! many, never an underestimate, and admission's own notice is never late: once `head`
//! reaches the fan's sequence number, the stream asks Redis at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

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
    /// Whether `line` must have been read after this place was: only a later reading can
    /// have more draws, say sold out while the place was still waiting, or have admission
    /// past it. (Fewer passed tokens than the place says may be an older reading or a reset.)
    fn overtaken_by(&self, line: &LineState) -> bool {
        line.draws > self.draws || line.sold_out || (self.rank.is_some() && line.head >= self.seq)
    }

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

/// Behind this position, a stream looks at the line less often: a fan at position `p`
/// hears of their progress every `ceil(p / FRONT)` looks (`QUEUE_SSE_POLL_MS` each), at
/// least every keep-alive. The front of the line hears every look; 100,000 streams cost
/// ~10,000 looks a second, not 100,000. Admission and the line's other events are never
/// paced: the next tick wakes the stream.
pub const FRONT: i64 = 1_000;

/// How long a stream at `position` (`None`: pre-queued) waits before it looks at the line
/// again on its own, when the front looks every `period`, with a keep-alive of `keepalive`.
pub fn cadence(position: Option<i64>, period: Duration, keepalive: Duration) -> Duration {
    let Some(position) = position else {
        return keepalive;
    };
    let ticks = u32::try_from((position.max(1) + FRONT - 1) / FRONT).unwrap_or(u32::MAX);
    period.saturating_mul(ticks).min(keepalive)
}

/// The streams of one line in this process: the last reading, and who is waiting for what.
struct Shared {
    last: Option<LineState>,
    /// Readings so far: a stream compares its place only with readings taken after it.
    generation: u64,
    /// Waiting streams by (sequence number, id): admission reaching a sequence number wakes
    /// the streams at or below it. Pre-queued streams wait at `i64::MAX` (only an event
    /// wakes them).
    waiting: BTreeMap<(i64, u64), Arc<Notify>>,
    next_id: u64,
    /// Streams following the line; the ticker stops when none is left.
    followers: usize,
}

impl Shared {
    /// Wakes the streams this reading concerns: those admission reached, and on an event (the
    /// first reading, a draw, a sell-out, counters reset) all the others too.
    ///
    /// Those admission reached leave `waiting`: each asks Redis and waits again at its new
    /// place, if any. The others stay: a stream that finds on the event that its fan still
    /// waits where it was does not wait again, and taken out it would sleep through its own
    /// admission until its next look (a tick of 1 s hid that; the first reading of every line
    /// is such an event).
    fn wake(&mut self, line: &LineState) {
        let event = self.last.as_ref().is_none_or(|last| {
            line.sold_out
                || line.draws != last.draws
                || line.passed < last.passed
                || line.head < last.head
        });
        let beyond = self.waiting.split_off(&(line.head.saturating_add(1), 0));
        let reached = std::mem::replace(&mut self.waiting, beyond);
        for notify in reached.into_values() {
            notify.notify_one();
        }
        if event {
            for notify in self.waiting.values() {
                notify.notify_one();
            }
        }
        self.last = Some(line.clone());
        self.generation += 1;
    }
}

type Tickers = Arc<Mutex<HashMap<i64, Arc<Mutex<Shared>>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lines this process follows: one ticker per concert with at least one open stream.
#[derive(Clone)]
pub struct Lines {
    room: WaitingRoom,
    /// How often a ticker reads its line.
    tick: Duration,
    /// How often a stream at the front of its line looks at the latest reading on its own.
    look: Duration,
    tickers: Tickers,
}

/// One stream's hold on its line: the latest reading, and a wake-up for when admission
/// reaches its place or the line has an event.
pub struct Following {
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    /// Where it waits in `Shared::waiting`, if anywhere.
    key: Option<(i64, u64)>,
    /// The reading generation when its place was last set: only later readings speak to it.
    since: u64,
}

impl Lines {
    /// Tickers read each line as often as admission moves it (`QUEUE_ADMIT_INTERVAL_MS`), or
    /// every `QUEUE_SSE_POLL_MS` if that is shorter: reading less often than admission runs
    /// leaves the fans it let in idle, unaware, in the slots they were given (a tick of 1 s
    /// against admission's 250 ms kept the machine at 1.1 of its 2 cores through a sale). The
    /// streams still look at the reading on their own every `QUEUE_SSE_POLL_MS` at the front
    /// ([`cadence`]), so the frames sent for the fans' progress do not grow with the ticks.
    pub fn new(room: WaitingRoom) -> Self {
        let config = room.config();
        Self {
            tick: config.admit_interval.min(config.sse_poll),
            look: config.sse_poll,
            room,
            tickers: Arc::default(),
        }
    }

    /// How often a stream at the front looks at its line's reading on its own (the base of
    /// [`cadence`]).
    pub fn look_every(&self) -> Duration {
        self.look
    }

    /// Follows `concert_id`'s line from `place`; starts its ticker if this is the process's
    /// first stream of the concert. The ticker stops after the last follower is dropped.
    pub fn follow(&self, concert_id: i64, place: Option<Place>) -> Following {
        let shared = {
            let mut tickers = lock(&self.tickers);
            let shared = tickers.entry(concert_id).or_insert_with(|| {
                let shared = Arc::new(Mutex::new(Shared {
                    last: None,
                    generation: 0,
                    waiting: BTreeMap::new(),
                    next_id: 0,
                    followers: 0,
                }));
                tokio::spawn(self.clone().tick(concert_id, shared.clone()));
                shared
            });
            lock(shared).followers += 1;
            shared.clone()
        };
        let mut following = Following {
            shared,
            wake: Arc::new(Notify::new()),
            key: None,
            since: 0,
        };
        following.wait_at(place);
        following
    }

    /// Concerts with a ticker in this process.
    pub fn followed(&self) -> usize {
        lock(&self.tickers).len()
    }

    async fn tick(self, concert_id: i64, shared: Arc<Mutex<Shared>>) {
        let mut every = tokio::time::interval(self.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            every.tick().await;
            {
                // Under the lock `follow` joins with: no stream can join a ticker that is
                // deciding to stop.
                let mut tickers = lock(&self.tickers);
                if lock(&shared).followers == 0 {
                    tickers.remove(&concert_id);
                    return;
                }
            }
            match self.room.tick(concert_id).await {
                Ok(line) => {
                    if failing {
                        tracing::info!(concert_id, "the line can be read again");
                        failing = false;
                    }
                    lock(&shared).wake(&line);
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(concert_id, %error, "the line cannot be read; streams keep their last reading");
                        failing = true;
                    }
                }
            }
        }
    }
}

impl Following {
    /// The latest reading, if it was taken after the stream's place was (`None` before).
    ///
    /// A place read from Redis between two ticks is newer than the last reading: admission
    /// (every `QUEUE_ADMIT_INTERVAL_MS`) may have moved the counters since. Compared with it,
    /// that older reading would look like counters going back (a reset) and send the stream to
    /// Redis again at once, and again, until the next tick: ~1,000 needless status checks a
    /// second in a 10,000-fan sale. So a stream waits for the next reading instead.
    pub fn line(&self) -> Option<LineState> {
        let shared = lock(&self.shared);
        if shared.generation > self.since {
            shared.last.clone()
        } else {
            None
        }
    }

    /// Waits at `place` from now on (`None`: nowhere, the stream is done); the next reading
    /// that concerns it wakes it ([`woken`](Self::woken)), or the latest one at once if that
    /// one was plainly read after the place (a draw, a sell-out or admission raced the
    /// stream's own look at Redis).
    pub fn wait_at(&mut self, place: Option<Place>) {
        let mut shared = lock(&self.shared);
        if let Some(key) = self.key.take() {
            shared.waiting.remove(&key);
        }
        self.since = shared.generation;
        let Some(place) = place else {
            return;
        };
        if shared
            .last
            .as_ref()
            .is_some_and(|line| place.overtaken_by(line))
        {
            self.since = shared.generation.saturating_sub(1);
            self.wake.notify_one();
            return;
        }
        let id = shared.next_id;
        shared.next_id += 1;
        let key = (
            if place.rank.is_some() {
                place.seq
            } else {
                i64::MAX
            },
            id,
        );
        shared.waiting.insert(key, self.wake.clone());
        self.key = Some(key);
    }

    /// Returns when admission reached this stream's place or the line had an event.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        if let Some(key) = self.key.take() {
            shared.waiting.remove(&key);
        }
        shared.followers -= 1;
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

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
    fn the_back_of_the_line_looks_less_often_and_never_past_the_keepalive() {
        let (tick, keepalive) = (Duration::from_secs(1), Duration::from_secs(15));
        assert_eq!(cadence(Some(1), tick, keepalive), tick);
        assert_eq!(cadence(Some(1_000), tick, keepalive), tick);
        assert_eq!(cadence(Some(1_001), tick, keepalive), 2 * tick);
        assert_eq!(cadence(Some(9_500), tick, keepalive), 10 * tick);
        assert_eq!(cadence(Some(90_000), tick, keepalive), keepalive);
        assert_eq!(
            cadence(None, tick, keepalive),
            keepalive,
            "pre-queued: events only"
        );
    }

    #[test]
    fn a_reading_wakes_the_streams_admission_reached_and_an_event_wakes_all() {
        let mut shared = Shared {
            last: Some(line(0, 10)),
            generation: 1,
            waiting: BTreeMap::new(),
            next_id: 0,
            followers: 3,
        };
        let wakes: Vec<Arc<Notify>> = (0..3).map(|_| Arc::new(Notify::new())).collect();
        for (seq, wake) in [20, 30, i64::MAX].into_iter().zip(&wakes) {
            shared.waiting.insert((seq, seq as u64), wake.clone());
        }
        shared.wake(&line(15, 25));
        assert_eq!(shared.waiting.len(), 2, "the stream at 20 was reached");
        shared.wake(&line(15, 25));
        assert_eq!(shared.waiting.len(), 2, "nothing moved: nobody woken");
        let drawn = LineState {
            draws: 1,
            ..line(15, 25)
        };
        shared.wake(&drawn);
        assert!(
            wakes.iter().all(|w| w.notified().now_or_never().is_some()),
            "a draw wakes every stream"
        );
        assert_eq!(
            shared.waiting.len(),
            2,
            "and they wait on: one that finds its place unchanged must still hear admission"
        );
        shared.wake(&line(25, 35));
        assert_eq!(
            shared.waiting.len(),
            1,
            "admission reached the stream at 30"
        );
        assert!(wakes[1].notified().now_or_never().is_some());
    }

    /// A line whose last reading (the fourth) is `last`, and a stream following it that has
    /// seen none of its readings yet.
    fn following_after(last: LineState) -> (Arc<Mutex<Shared>>, Following) {
        let shared = Arc::new(Mutex::new(Shared {
            last: Some(last),
            generation: 4,
            waiting: BTreeMap::new(),
            next_id: 0,
            followers: 1,
        }));
        let following = Following {
            shared: shared.clone(),
            wake: Arc::new(Notify::new()),
            key: None,
            since: 0,
        };
        (shared, following)
    }

    #[test]
    fn a_place_newer_than_the_reading_waits_for_the_next_reading() {
        let (shared, mut following) = following_after(line(60, 70));
        assert_eq!(following.line(), Some(line(60, 70)));
        // Redis said PLACE (passed 70) after that reading (passed 60), as happens between
        // ticks: the older reading is not shown to it, which would look like a reset.
        assert_eq!(PLACE.read(&line(60, 70)), Reading::AskRedis);
        following.wait_at(Some(PLACE));
        assert_eq!(following.line(), None, "no reading since the place");
        lock(&shared).wake(&line(75, 85));
        assert_eq!(following.line(), Some(line(75, 85)));
        assert_eq!(
            PLACE.read(&following.line().unwrap()),
            Reading::Waiting(Some(35))
        );
    }

    #[test]
    fn a_reading_plainly_after_the_place_is_acted_on_at_once() {
        let (shared, mut following) = following_after(LineState {
            draws: 1,
            ..line(70, 80)
        });
        // The draw's reading came in while the stream was asking Redis about PLACE (draws 0).
        following.wait_at(Some(PLACE));
        let line = following
            .line()
            .expect("the draw's reading concerns the place");
        assert_eq!(PLACE.read(&line), Reading::AskRedis);
        assert!(lock(&shared).waiting.is_empty(), "woken, not waiting");
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
