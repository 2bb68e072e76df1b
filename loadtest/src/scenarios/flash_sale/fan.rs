//! One fan's way through the sale: arrive, wait in line until ACTIVE, hold a seat, buy it.
//! Each step gives up once the sale is over, and the fan is counted where it stopped.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::Method;
use serde_json::json;
use tokio::time::Instant;

use super::Sale;

/// The latency a fan sees from arriving to having a place in line, whatever the load tool's
/// connection pool made it wait before sending: the join row itself is timed from a free
/// connection (closed loop), so with the crowd arriving at once it measures the pool's size
/// over the platform's joins a second, not the fan's wait.
pub(super) const ARRIVAL_TO_LINE: &str = "fan: arrival → in line";

tokio::task_local! {
    /// When this fan was due to arrive; taken by its first place in line.
    static ARRIVED: Cell<Option<Instant>>;
}

/// What a fan's event stream ended with.
enum Streamed {
    Active(serde_json::Value),
    SoldOut,
    Expired,
    /// It ended, or was refused, without saying any of these.
    Closed,
}
use crate::fixture::User;

impl Sale {
    /// One fan, from arrival after `arrive_after` to a bought seat, counted where it stopped.
    /// `streams`: the fan waits on the status event stream, as the web app does, rather than
    /// polling. A fan whose session the platform lost (Redis came back empty) logs in again,
    /// and one whose pass it lost joins the line again; either way a hold it made is kept and
    /// paid once it is admitted again. Its due arrival is kept for [`ARRIVAL_TO_LINE`].
    pub(super) async fn fan(self: Arc<Self>, u: User, arrive_after: Duration, streams: bool) {
        let due = Instant::now() + arrive_after;
        tokio::time::sleep_until(due).await;
        ARRIVED
            .scope(Cell::new(Some(due)), self.arrive(u, streams))
            .await;
    }

    /// [`Sale::fan`] once arrived: its journeys until one ends where the fan is counted.
    async fn arrive(self: Arc<Self>, mut u: User, streams: bool) {
        let mut reservation = None;
        let mut lost_before = false;
        while !self
            .journey(&mut u, streams, &mut reservation, lost_before)
            .await
        {
            lost_before = true;
            match self.take_lost(&u.session) {
                Some(super::Lost::Session) => {
                    let Some(session) = self.log_in(&u.username).await else {
                        self.left_waiting.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    self.relogins.fetch_add(1, Ordering::Relaxed);
                    u.session = session;
                }
                Some(super::Lost::Pass) | None => {}
            }
            self.rejoins.fetch_add(1, Ordering::Relaxed);
            u.pass = None;
        }
    }

    /// The fan's way from the line to a bought seat (from the payment, once `reservation` is
    /// held), counted where it stopped: true. False when it stopped because the platform lost
    /// the fan's session or pass, counted nowhere yet. `lost_before`: it had stopped so
    /// before, maybe between making a hold and hearing of it, so it looks at its own holds
    /// before making another (or that seat would stay held, unsold, until the hold expired).
    async fn journey(
        &self,
        u: &mut User,
        streams: bool,
        reservation: &mut Option<i64>,
        lost_before: bool,
    ) -> bool {
        let waited = if streams {
            self.wait_streaming(u).await
        } else {
            self.wait(u).await
        };
        if waited.is_none() {
            if self.is_lost(u) {
                return false;
            }
            self.left_waiting.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let id = match *reservation {
            Some(id) => id,
            None => match self.find_or_hold(u, lost_before).await {
                Some(id) => id,
                None if self.is_lost(u) => return false,
                None => {
                    self.left_active.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
            },
        };
        *reservation = Some(id);
        if self.buy(u, id).await {
            self.sold.fetch_add(1, Ordering::Relaxed);
        } else if self.is_lost(u) {
            return false;
        }
        true
    }

    /// The fan's newest hold of the concert if `look` (its others cancelled), else a new one.
    async fn find_or_hold(&self, u: &User, look: bool) -> Option<i64> {
        if look && let Some(&id) = self.own_holds(u).await?.first() {
            self.keep_only(u, id).await;
            return Some(id);
        }
        self.hold(u).await
    }

    /// A queue token for the concert, asked for up to ten times half a second apart; None when
    /// none came or the sale ended.
    async fn join(&self, u: &User) -> Option<String> {
        let body = json!({"concert_id": self.concert});
        for _ in 0..10 {
            let reply = self
                .call(
                    "POST /api/queue/tokens",
                    Method::POST,
                    "/api/queue/tokens",
                    u.auth(),
                    Some(&body),
                )
                .await?;
            let joined = reply.json();
            if let Some(t) = joined["token"].as_str() {
                if let Ok(Some(due)) = ARRIVED.try_with(Cell::take) {
                    self.rec.record_latency(ARRIVAL_TO_LINE, due.elapsed());
                }
                return Some(t.to_owned());
            }
            if joined["code"] == "SOLD_OUT" {
                self.note_sold_out(false);
                return None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    /// Waits in line on the token's event stream until ACTIVE (None as [`Sale::wait`]); where
    /// the stream is refused or breaks, polls instead, as the web app falls back.
    async fn wait_streaming(&self, u: &mut User) -> Option<()> {
        let mut pass = self.join(u).await?;
        loop {
            match self.stream_status(u, &pass).await {
                Streamed::Active(status) => {
                    self.note_admission(&status);
                    u.pass = Some(pass);
                    return Some(());
                }
                Streamed::SoldOut => {
                    self.note_sold_out(true);
                    return None;
                }
                Streamed::Expired => pass = self.join(u).await?,
                Streamed::Closed if self.line_closed() => return None,
                Streamed::Closed => {
                    self.stream_breaks.fetch_add(1, Ordering::Relaxed);
                    return self.poll_in_line(u, pass).await;
                }
            }
        }
    }

    /// The token's event stream until it says ACTIVE, SOLD_OUT or EXPIRED, or ends (or the
    /// line closes).
    async fn stream_status(&self, u: &User, pass: &str) -> Streamed {
        let path = format!("/api/queue/tokens/{pass}/events");
        let mut last = Streamed::Closed;
        let stream = self.http.stream(&path, u.auth(), |data| {
            // Only the state, for the ~11 frames a purchase: the whole status, as a `Value`,
            // only for the one that admits the fan.
            #[derive(serde::Deserialize)]
            struct Frame<'a> {
                #[serde(borrow)]
                status: Option<std::borrow::Cow<'a, str>>,
            }
            let Ok(frame) = serde_json::from_str::<Frame>(data) else {
                return true;
            };
            self.stream_events.fetch_add(1, Ordering::Relaxed);
            last = match frame.status.as_deref() {
                Some("ACTIVE") => match serde_json::from_str(data) {
                    Ok(status) => Streamed::Active(status),
                    Err(_) => return true,
                },
                Some("SOLD_OUT") => Streamed::SoldOut,
                Some("EXPIRED") => Streamed::Expired,
                _ => return true,
            };
            false
        });
        tokio::select! {
            _ = stream => last,
            _ = self.line_closes() => Streamed::Closed,
        }
    }

    /// Resolves once the line has closed.
    async fn line_closes(&self) {
        let mut closed = self.line_closed.subscribe();
        // An error means the sale is gone: nothing is left to wait for either way.
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Waits in line (polling at the pace the ETA suggests) until ACTIVE; None when told
    /// SOLD_OUT, or when the line closed first (the sale is over and the room had its chance
    /// to say so).
    async fn wait(&self, u: &mut User) -> Option<()> {
        let pass = self.join(u).await?;
        self.poll_in_line(u, pass).await
    }

    /// The polling part of [`Sale::wait`], for a fan already holding `pass`.
    async fn poll_in_line(&self, u: &mut User, mut pass: String) -> Option<()> {
        let mut pause = self.poll;
        loop {
            let jitter = rand::random_range(0.8..1.2);
            tokio::time::sleep(pause.mul_f64(jitter)).await;
            if self.line_closed() {
                return None;
            }
            let path = format!("/api/queue/tokens/{pass}");
            let status = self
                .call(
                    "GET /api/queue/tokens/{token}",
                    Method::GET,
                    &path,
                    u.auth(),
                    None,
                )
                .await?
                .json();
            match status["status"].as_str() {
                Some("ACTIVE") => {
                    self.note_admission(&status);
                    u.pass = Some(pass);
                    return Some(());
                }
                Some("EXPIRED") => pass = self.join(u).await?,
                // The show sold out while this fan waited: the room says so and the fan goes.
                Some("SOLD_OUT") => {
                    self.note_sold_out(false);
                    return None;
                }
                _ => {
                    let eta = status["eta_seconds"].as_f64().unwrap_or(0.0);
                    pause = Duration::from_secs_f64(
                        (eta / 2.0).clamp(self.poll.as_secs_f64(), 5.0 * self.poll.as_secs_f64()),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::{TimeZone, Utc};
    use serde_json::{Value, json};

    use crate::scenarios::flash_sale::count;
    use crate::scenarios::flash_sale::fake::{Fake, held, sale};

    fn waiting_fan() -> crate::fixture::User {
        crate::fixture::User {
            id: 1,
            username: "fan1".into(),
            session: "s".into(),
            pass: None,
        }
    }

    #[tokio::test]
    async fn a_fan_told_sold_out_while_waiting_goes_home_and_is_counted() {
        let fake = Fake::start(|seen, before| match (seen.method.as_str(), before) {
            ("POST", _) => Some((201, json!({"token": "3.t", "status": "WAITING"}))),
            ("GET", 0) => Some((200, json!({"status": "WAITING", "eta_seconds": 0}))),
            _ => Some((200, json!({"status": "SOLD_OUT"}))),
        })
        .await;
        let s = Arc::new(sale(&fake, Duration::from_secs(1)));
        let mut u = waiting_fan();
        assert!(
            s.wait(&mut u).await.is_none(),
            "no pass for a sold-out show"
        );
        assert_eq!(count(&s.told_sold_out), 1);
        assert_eq!(fake.seen("GET", "/api/queue/tokens/3.t").len(), 2);
    }

    #[tokio::test]
    async fn a_fans_wait_for_a_place_runs_from_its_arrival_and_is_counted_once() {
        let fake =
            Fake::start(|_, _| Some((201, json!({"token": "3.t", "status": "WAITING"})))).await;
        let s = Arc::new(sale(&fake, Duration::from_secs(1)));
        let arrived = super::Instant::now() - Duration::from_millis(300);
        super::ARRIVED
            .scope(std::cell::Cell::new(Some(arrived)), async {
                assert!(s.join(&waiting_fan()).await.is_some());
                assert!(s.join(&waiting_fan()).await.is_some(), "a join again");
            })
            .await;
        let rows = s.rec.summary(Duration::from_secs(1));
        let row = rows
            .iter()
            .find(|r| r.name == super::ARRIVAL_TO_LINE)
            .expect("the fan's wait is recorded");
        assert_eq!(row.requests, 1, "only its first place counts");
        assert!(row.p50_ms >= 300.0, "{} ms", row.p50_ms);
        assert!(s.join(&waiting_fan()).await.is_some(), "outside a fan");
    }

    #[tokio::test]
    async fn a_join_refused_as_sold_out_is_not_asked_again() {
        let fake = Fake::start(|_, _| Some((409, json!({"code": "SOLD_OUT"})))).await;
        let s = Arc::new(sale(&fake, Duration::from_secs(1)));
        assert!(s.join(&waiting_fan()).await.is_none());
        assert_eq!(count(&s.told_sold_out), 1);
        assert_eq!(fake.seen("POST", "/api/queue/tokens").len(), 1);
    }

    #[tokio::test]
    async fn an_admission_is_dated_by_its_pass_and_counted_after_a_moment() {
        let fake = Fake::start(|_, _| None).await;
        let s = sale(&fake, Duration::from_secs(1));
        // The fake sale's passes last 600 s: admitted at 10:00:00 and at 10:00:02.
        s.note_admission(&json!({"status": "ACTIVE", "active_until": "2026-12-02T10:10:00Z"}));
        s.note_admission(&json!({"status": "ACTIVE", "active_until": "2026-12-02T10:10:02Z"}));
        s.note_admission(&json!({"status": "ACTIVE", "active_until": null}));
        let at = |sec| Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, sec).unwrap();
        assert_eq!(s.admitted_after(at(1)), 1);
        assert_eq!(s.admitted_after(at(0)), 1, "strictly after");
        assert_eq!(s.admitted_after(at(2)), 0);
    }

    /// A platform that sells seat 1 of schedule 5 to whoever comes with session `s2` and pass
    /// `3.t`; `first_join`, `first_hold` and `first_list` answer the first join, the first hold
    /// and the first look at the fan's reservations (later looks list hold 7).
    async fn platform_that_forgets(
        first_join: (u16, Value),
        first_hold: (u16, Value),
        first_list: (u16, Value),
    ) -> Fake {
        Fake::start(move |seen, before| {
            let path = seen.path.split('?').next().unwrap_or("");
            match (seen.method.as_str(), path, before) {
                ("POST", "/api/queue/tokens", 0) => Some(first_join.clone()),
                ("POST", "/api/queue/tokens", _) => {
                    Some((201, json!({"token": "3.t", "status": "WAITING"})))
                }
                ("POST", "/api/sessions", _) => Some((201, json!({"token": "s2"}))),
                ("GET", "/api/queue/tokens/3.t", _) => Some((200, json!({"status": "ACTIVE"}))),
                ("GET", "/api/concerts/3/schedules", _) => {
                    Some((200, json!({"items": [{"id": 5}]})))
                }
                ("GET", "/api/schedules/5/seats", _) => Some((
                    200,
                    json!({"seats": [{"seat_no": 1, "status": "AVAILABLE"}]}),
                )),
                ("POST", "/api/reservations", 0) => Some(first_hold.clone()),
                ("POST", "/api/reservations", _) => Some((201, held(7))),
                ("GET", "/api/reservations", 0) => Some(first_list.clone()),
                ("GET", "/api/reservations", _) => Some((200, json!({"items": [held(7)]}))),
                ("POST", "/api/payments", _) => Some((201, json!({"id": 1}))),
                ("GET", "/api/reservations/7", _) => {
                    Some((200, json!({"id": 7, "status": "CONFIRMED"})))
                }
                _ => Some((404, json!({"code": "NOT_FOUND"}))),
            }
        })
        .await
    }

    #[tokio::test]
    async fn a_fan_whose_session_was_lost_logs_in_again_and_buys() {
        let fake = platform_that_forgets(
            (401, json!({"code": "UNAUTHENTICATED"})),
            (201, held(7)),
            (200, json!({"items": []})),
        )
        .await;
        let s = Arc::new(sale(&fake, Duration::from_secs(5)));
        s.clone().fan(waiting_fan(), Duration::ZERO, false).await;
        assert_eq!(count(&s.sold), 1);
        assert_eq!((count(&s.relogins), count(&s.rejoins)), (1, 1));
        let joins = fake.seen("POST", "/api/queue/tokens");
        assert_eq!(joins.len(), 2);
        assert_eq!(joins[0].headers["authorization"], "Bearer s");
        assert_eq!(joins[1].headers["authorization"], "Bearer s2");
        assert_eq!(count(&s.left_waiting) + count(&s.payment_refused), 0);
    }

    #[tokio::test]
    async fn a_fan_whose_pass_was_lost_joins_again_and_buys_with_the_new_pass() {
        let fake = platform_that_forgets(
            (201, json!({"token": "3.t", "status": "WAITING"})),
            (401, json!({"code": "QUEUE_TOKEN_INVALID"})),
            (200, json!({"items": []})),
        )
        .await;
        let s = Arc::new(sale(&fake, Duration::from_secs(5)));
        s.clone().fan(waiting_fan(), Duration::ZERO, false).await;
        assert_eq!(count(&s.sold), 1);
        assert_eq!((count(&s.relogins), count(&s.rejoins)), (0, 1));
        assert_eq!(fake.seen("POST", "/api/queue/tokens").len(), 2);
        assert!(fake.seen("POST", "/api/sessions").is_empty());
        assert_eq!(count(&s.left_active), 0);
    }

    #[tokio::test]
    async fn a_fan_logged_out_after_a_hold_it_did_not_hear_of_pays_that_hold() {
        // The hold is made but its answer lost (503), and the fan's look at its holds finds
        // its session gone: logged in again, it finds the hold and pays it, holding no other.
        let fake = platform_that_forgets(
            (201, json!({"token": "3.t", "status": "WAITING"})),
            (503, json!({"code": "DEPENDENCY_UNAVAILABLE"})),
            (401, json!({"code": "UNAUTHENTICATED"})),
        )
        .await;
        let s = Arc::new(sale(&fake, Duration::from_secs(5)));
        s.clone().fan(waiting_fan(), Duration::ZERO, false).await;
        assert_eq!(count(&s.sold), 1);
        assert_eq!(count(&s.relogins), 1);
        assert_eq!(
            fake.seen("POST", "/api/reservations").len(),
            1,
            "no second hold"
        );
        assert_eq!(
            fake.seen("POST", "/api/payments")[0].headers["authorization"],
            "Bearer s2"
        );
    }
}
