//! The flash sale: a crowd of fans against one concert's sell-out, from the sale's opening
//! until the database says every seat is SOLD (or `--max-duration` runs out).

mod buy;
#[cfg(test)]
mod fake;
mod fan;
mod hold;
mod report;
mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Knobs, Outcome};
use crate::fixture::Platform;
use crate::http::{Auth, Http};
use crate::stats::Recorder;

/// The crowd of a sell-out.
struct Sale {
    http: Arc<Http>,
    rec: Arc<Recorder>,
    concert: i64,
    seats: u64,
    poll: Duration,
    confirm_timeout: Duration,
    sold: AtomicU64,
    over: AtomicBool,
    left_waiting: AtomicU64,
    left_active: AtomicU64,
    retries: AtomicU64,
    fault_retries: AtomicU64,
    /// Requests repeated after a 429 (the gateway's limits), each after its Retry-After.
    rate_limited: AtomicU64,
    payment_refused: AtomicU64,
    gave_up_confirm: AtomicU64,
    rejected: AtomicU64,
    /// Fans whose status said SOLD_OUT (the waiting room told them the show sold out).
    told_sold_out: AtomicU64,
    /// When each of them was told (the answer's arrival), and whether on its event stream.
    told_sold_out_at: std::sync::Mutex<Vec<(DateTime<Utc>, bool)>>,
    /// Fans that wait on the event stream (`--streaming-fans`), and how many of their streams
    /// were refused or broke (those fans then polled).
    streaming: AtomicU64,
    stream_breaks: AtomicU64,
    /// Status events the fans' streams delivered (each one a write through users-api and nginx).
    stream_events: AtomicU64,
    /// Fans still in line stop waiting: set by the watcher a little after the room said
    /// SOLD_OUT (so that every one of them polls once more), or when it never did. Until then a
    /// waiting fan waits on after the sale is over, as a real one would, to be told.
    /// A watch rather than a flag: thousands of fans on their streams wait for it to change
    /// instead of each looking every 100 ms (which cost the load tool a core of wake-ups).
    line_closed: tokio::sync::watch::Sender<bool>,
    /// Every fan is done (bought, gave up or was told SOLD_OUT), or `--max-duration` ran out:
    /// the watcher's grace for fans still in line has no one left to wait for, and ends.
    fans_done: tokio::sync::watch::Sender<bool>,
    /// `QUEUE_ACTIVE_TTL_SECS`: a pass's `active_until` minus this is when it was admitted.
    active_ttl: Duration,
    /// When each fan's pass was admitted, from its `active_until`.
    admitted_at: std::sync::Mutex<Vec<DateTime<Utc>>>,
    /// Sessions the platform no longer knows (401 UNAUTHENTICATED) or whose pass it no longer
    /// knows (401 QUEUE_TOKEN_INVALID, 404 QUEUE_TOKEN_NOT_FOUND): e.g. Redis came back empty.
    /// The fan's step that met it stops; the fan logs in again or joins the line again.
    lost: std::sync::Mutex<std::collections::HashMap<String, Lost>>,
    /// Fans that logged in again after their session was lost, and that joined the line again
    /// after their pass was lost.
    relogins: AtomicU64,
    rejoins: AtomicU64,
}

/// What a fan lost to the platform: its session, or only its queue pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    Session,
    Pass,
}

/// When the last seat sold, and when the waiting room said SOLD_OUT (first seen).
struct SellOut {
    last_sale_at: DateTime<Utc>,
    /// `None`: the room never said SOLD_OUT within [`SOLD_OUT_WAIT`].
    room_sold_out_seen_at: Option<DateTime<Utc>>,
}

/// How long the watcher waits, after the last sale, for the room to say SOLD_OUT.
const SOLD_OUT_WAIT: Duration = Duration::from_secs(30);

/// How long fans still in line keep polling after the room said SOLD_OUT: longer than the
/// slowest poll pace of a waiting fan (5 × `--poll`) plus the stream of a tick, so each of
/// them asks at least once more and is told.
fn line_grace(poll: Duration) -> Duration {
    poll * 5 + Duration::from_secs(2)
}

/// How the sale ended, for its report.
struct End {
    /// Every fan was done before `--max-duration`.
    finished: bool,
    /// From the opening until the fans were done (or stopped).
    measured: Duration,
    /// From the opening until the last seat was sold: on the database's clock (see
    /// [`sold_out_after`]), else until the watcher saw every seat SOLD.
    sold_out: Duration,
    /// The last sale and the room's SOLD_OUT, when the sale sold out.
    sell_out: Option<SellOut>,
}

impl Sale {
    /// A sale of `seats` seats of `concert`, nothing sold yet and no fan counted.
    fn new(
        http: Arc<Http>,
        rec: Arc<Recorder>,
        concert: i64,
        seats: u64,
        poll: Duration,
        confirm_timeout: Duration,
        active_ttl: Duration,
    ) -> Self {
        Self {
            http,
            rec,
            concert,
            seats,
            poll,
            confirm_timeout,
            sold: AtomicU64::new(0),
            over: AtomicBool::new(false),
            left_waiting: AtomicU64::new(0),
            left_active: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            fault_retries: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            payment_refused: AtomicU64::new(0),
            gave_up_confirm: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            told_sold_out: AtomicU64::new(0),
            told_sold_out_at: std::sync::Mutex::default(),
            streaming: AtomicU64::new(0),
            stream_breaks: AtomicU64::new(0),
            stream_events: AtomicU64::new(0),
            line_closed: tokio::sync::watch::Sender::new(false),
            fans_done: tokio::sync::watch::Sender::new(false),
            active_ttl,
            admitted_at: std::sync::Mutex::default(),
            lost: std::sync::Mutex::default(),
            relogins: AtomicU64::new(0),
            rejoins: AtomicU64::new(0),
        }
    }

    async fn all_sold(&self, db: &sqlx::PgPool, schedules: &[i64]) -> bool {
        let sold: Result<(i64,), _> = sqlx::query_as(
            "SELECT count(*) FROM seats WHERE schedule_id = ANY($1) AND status = 'SOLD'",
        )
        .bind(schedules)
        .fetch_one(db)
        .await;
        sold.is_ok_and(|(n,)| n as u64 >= self.seats)
    }

    /// Remembers when the pass in `status` (ACTIVE) was admitted: its `active_until` minus
    /// the pass lifetime.
    fn note_admission(&self, status: &serde_json::Value) {
        let Some(until) = status["active_until"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        else {
            return;
        };
        let Ok(ttl) = chrono::Duration::from_std(self.active_ttl) else {
            return;
        };
        let at = until.with_timezone(&Utc) - ttl;
        self.admitted_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(at);
    }

    /// Passes admitted after `moment`.
    fn admitted_after(&self, moment: DateTime<Utc>) -> u64 {
        self.admitted_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|at| **at > moment)
            .count() as u64
    }

    /// After the last seat sold: when it sold (the newest confirmation in the database), and
    /// when the waiting room's public view first said SOLD_OUT, looked at every 100 ms.
    async fn sell_out(&self, db: &sqlx::PgPool) -> Option<SellOut> {
        let (last_sale_at,): (Option<DateTime<Utc>>,) = sqlx::query_as(
            "SELECT max(updated_at) FROM reservations WHERE concert_id = $1 AND status = 'CONFIRMED'",
        )
        .bind(self.concert)
        .fetch_one(db)
        .await
        .ok()?;
        let last_sale_at = last_sale_at?;
        let path = format!("/api/queue/concerts/{}", self.concert);
        let deadline = Instant::now() + SOLD_OUT_WAIT;
        let mut room_sold_out_seen_at = None;
        while Instant::now() < deadline {
            let reply = self.http.get(&path, Auth::default()).await;
            if reply.json()["state"] == "SOLD_OUT" {
                room_sold_out_seen_at = Some(Utc::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(SellOut {
            last_sale_at,
            room_sold_out_seen_at,
        })
    }

    fn over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    fn line_closed(&self) -> bool {
        *self.line_closed.borrow()
    }

    /// A waiting fan was told SOLD_OUT (by its status, its stream, or a refused join), now.
    fn note_sold_out(&self, streamed: bool) {
        self.told_sold_out.fetch_add(1, Ordering::Relaxed);
        self.told_sold_out_at
            .lock()
            .expect("sold-out times")
            .push((Utc::now(), streamed));
    }

    /// How many waiting fans were told SOLD_OUT on their stream (`streamed`) or otherwise, and
    /// when the last of them was.
    fn told_sold_out_by(&self, streamed: bool) -> (usize, Option<DateTime<Utc>>) {
        let told = self.told_sold_out_at.lock().expect("sold-out times");
        let at = told.iter().filter(|t| t.1 == streamed).map(|t| t.0);
        (at.clone().count(), at.max())
    }

    /// The sale is over when the database says every seat is SOLD: the platform's truth, not
    /// what the fans have seen.
    /// One indexed count every 250 ms (by schedule ids: the seats table holds every earlier
    /// run's seats too), so the watcher itself costs the database next to nothing. Once sold
    /// out it finds when the last seat sold and when the waiting room said SOLD_OUT.
    async fn watch(
        self: Arc<Self>,
        db: sqlx::PgPool,
        schedules: Vec<i64>,
    ) -> (Instant, Option<SellOut>) {
        let mut sold_out = false;
        while !self.over() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if self.all_sold(&db, &schedules).await {
                sold_out = true;
                self.over.store(true, Ordering::Relaxed);
            }
        }
        let at = Instant::now();
        // The fans may all be done before a look saw the last seat go.
        sold_out = sold_out || self.all_sold(&db, &schedules).await;
        let sell_out = if sold_out {
            self.sell_out(&db).await
        } else {
            None
        };
        if sell_out
            .as_ref()
            .is_some_and(|s| s.room_sold_out_seen_at.is_some())
        {
            self.grace_for_the_line().await;
        }
        self.line_closed.send_replace(true);
        (at, sell_out)
    }
}

impl Sale {
    /// Lets the fans still in line be told SOLD_OUT: until each of them is done, or for
    /// [`line_grace`] at most. Waiting the grace out with nobody left in line only idled the
    /// stack into the sale's window (bench/purchase_cost.py ends it at "the sale is over"):
    /// 7 s at `--poll` 1 s.
    async fn grace_for_the_line(&self) {
        let mut done = self.fans_done.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(line_grace(self.poll)) => {}
            _ = done.wait_for(|d| *d) => {}
        }
    }

    /// The organiser's screen while the sale runs: the sale view and the waiting room's figures
    /// once a second, as the console polls them, each answer recorded under its own name (so
    /// the report has their latencies under the crowd's load).
    /// A session the platform lost (Redis came back empty) is replaced by logging in again.
    async fn organiser(self: Arc<Self>, mut admin: String, username: String) {
        let sale = format!("/api/admin/concerts/{}/sale", self.concert);
        let room = format!("/api/admin/queue/concerts/{}", self.concert);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while !self.over() {
            tick.tick().await;
            let auth = Auth {
                session: Some(&admin),
                ..Auth::default()
            };
            let r = self.http.get(&sale, auth.clone()).await;
            self.rec.record("organiser: sale view", &r);
            let lost = self.note_lost(&auth, &r);
            let r = self.http.get(&room, auth.clone()).await;
            self.rec.record("organiser: waiting room", &r);
            if lost || self.note_lost(&auth, &r) {
                self.take_lost(&admin);
                match self.log_in(&username).await {
                    Some(token) => admin = token,
                    None => return,
                }
            }
        }
    }
}

/// A counter's value (the fans are done with it by the time it is read).
fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Sets up the concert and the funded crowd, opens the sale, lets every fan arrive (spread
/// over `k.arrival`) and try to buy, then audits the sale once it is over.
pub(super) async fn flash_sale(
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
    let users = p.users(k.users, "f").await?;
    let (concert, schedules, seats, price) = match k.concert {
        Some(concert) => {
            let (schedules, seats, price) = p.existing_concert(concert).await?;
            (concert, schedules, seats, price)
        }
        None => {
            let price = 50_000;
            let (concert, schedules) = p
                .concert("Flash sale", k.schedules, k.seats_per_schedule, price)
                .await?;
            let seats = k.schedules as u64 * k.seats_per_schedule as u64;
            (concert, schedules, seats, price)
        }
    };
    p.fund(&users, price).await?;
    let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    let sale = Arc::new(Sale::new(
        p.http.clone(),
        rec,
        concert,
        seats,
        k.poll,
        k.confirm_timeout,
        k.active_ttl,
    ));
    let admin = p.admin().await?;
    let watcher = tokio::spawn(sale.clone().watch(p.concert_db.clone(), schedules));
    let organiser = tokio::spawn(sale.clone().organiser(admin, p.admin_username()));
    let opened_at = database_now(&p.concert_db).await;
    // A drill (bench/crash-drill.sh) times its faults from this line.
    eprintln!("[loadtest] flash-sale: the sale opens");
    let started = Instant::now();
    let crowd = users.len().max(1);
    // The last to arrive (the back of the line) wait on the event stream, as the web app does.
    let streaming_from = crowd.saturating_sub(k.streaming_fans);
    let fans: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            let arrive = k.arrival.mul_f64(i as f64 / crowd as f64);
            let streams = i >= streaming_from;
            if streams {
                sale.streaming.fetch_add(1, Ordering::Relaxed);
            }
            tokio::spawn(sale.clone().fan(u, arrive, streams))
        })
        .collect();
    let all = futures_util::future::join_all(fans);
    let finished = tokio::time::timeout(k.max_duration, all).await.is_ok();
    sale.over.store(true, Ordering::Relaxed);
    sale.fans_done.send_replace(true);
    let measured = started.elapsed();
    let (sold_out, sell_out) = match watcher.await {
        Ok((at, sell_out)) => (
            sold_out_after(opened_at, sell_out.as_ref()).unwrap_or(at - started),
            sell_out,
        ),
        Err(_) => (measured, None),
    };
    organiser.abort();
    eprintln!("[loadtest] flash-sale: the sale is over; auditing");
    report::outcome(
        k,
        p,
        &sale,
        &ids,
        End {
            finished,
            measured,
            sold_out,
            sell_out,
        },
    )
    .await
}

/// The database's clock now, or `None` if it cannot be read.
async fn database_now(db: &sqlx::PgPool) -> Option<DateTime<Utc>> {
    sqlx::query_as::<_, (DateTime<Utc>,)>("SELECT clock_timestamp()")
        .fetch_one(db)
        .await
        .ok()
        .map(|(at,)| at)
}

/// From the opening to the last sale, both on the database's clock. The watcher looks every
/// 250 ms, so the moment it sees the last seat SOLD is up to a look (and its query) late: in
/// one sale it said 13.40 s where the last confirmation came 13.09 s after the opening.
/// `None` (the watcher's moment is kept) without both times, or if the last sale seems to
/// precede the opening.
fn sold_out_after(
    opened_at: Option<DateTime<Utc>>,
    sell_out: Option<&SellOut>,
) -> Option<Duration> {
    (sell_out?.last_sale_at - opened_at?).to_std().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{SellOut, line_grace, sold_out_after};
    use crate::scenarios::flash_sale::fake::{Fake, sale};

    #[tokio::test]
    async fn the_line_is_given_its_grace_only_while_fans_are_still_in_it() {
        let fake = Fake::start(|_, _| None).await;
        let sale = sale(&fake, Duration::from_secs(1));
        tokio::time::pause();
        let start = tokio::time::Instant::now();
        sale.grace_for_the_line().await;
        assert!(
            start.elapsed() >= line_grace(sale.poll),
            "fans may still be in line: the whole grace"
        );
        sale.fans_done.send_replace(true);
        let start = tokio::time::Instant::now();
        sale.grace_for_the_line().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "nobody is left to tell");
    }

    #[test]
    fn the_sell_out_runs_from_the_opening_to_the_last_sale_on_the_databases_clock() {
        let opened = chrono::Utc::now();
        let sold = |ms| SellOut {
            last_sale_at: opened + chrono::Duration::milliseconds(ms),
            room_sold_out_seen_at: None,
        };
        assert_eq!(
            sold_out_after(Some(opened), Some(&sold(9_876))),
            Some(Duration::from_millis(9_876))
        );
        assert_eq!(sold_out_after(None, Some(&sold(9_876))), None, "no opening");
        assert_eq!(sold_out_after(Some(opened), None), None, "not sold out");
        assert_eq!(
            sold_out_after(Some(opened), Some(&sold(-5))),
            None,
            "a last sale before the opening is not believed"
        );
    }
}
