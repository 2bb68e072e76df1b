//! The scenarios. Each sets up what it needs (not measured), then drives its endpoint through
//! the gateway and says what it saw; some add checks read from the databases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use hyper::Method;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use crate::audit;
use crate::drive::{Load, drive};
use crate::fixture::{Platform, User};
use crate::http::{Auth, Http, Reply};
use crate::stats::{Check, Recorder, SaleNumbers};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Baseline,
    QueueJoin,
    QueuePoll,
    SeatMap,
    HoldDistinct,
    HoldContended,
    Charge,
    Pay,
    FlashSale,
}

/// The knobs every scenario reads (each uses the ones that apply to it).
#[derive(Debug, Clone)]
pub struct Knobs {
    pub load: Load,
    /// Accounts the scenario makes (flash-sale: the crowd).
    pub users: usize,
    /// flash-sale: schedules of the concert (each `seats_per_schedule` seats).
    pub schedules: usize,
    pub seats_per_schedule: u32,
    /// baseline: the bare path.
    pub baseline_path: String,
    /// flash-sale: a waiting fan polls its status at most this often.
    pub poll: Duration,
    /// flash-sale: the crowd arrives spread over this long.
    pub arrival: Duration,
    /// flash-sale: how long before it gives up waiting for a sell-out.
    pub max_duration: Duration,
    /// flash-sale: how long a fan waits for CONFIRMED after paying.
    pub confirm_timeout: Duration,
    /// `PAYMENT_SETTLE_DIRECT_AFTER_SECS`: the platform settles every payment within this.
    pub settle_direct_after: Duration,
    /// How long the settlement check waits for stragglers before judging.
    pub settle_limit: Duration,
}

/// What one scenario produced besides the recorder's samples.
#[derive(Default)]
pub struct Outcome {
    pub measured: Duration,
    pub facts: BTreeMap<String, String>,
    pub audit: Vec<Check>,
    pub sale: Option<SaleNumbers>,
}

fn record(rec: &Recorder, name: &str, reply: Reply) -> Reply {
    rec.record(name, &reply);
    reply
}

pub async fn run(
    scenario: Scenario,
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
    match scenario {
        Scenario::Baseline => baseline(k, p, rec).await,
        Scenario::QueueJoin => queue_join(k, p, rec).await,
        Scenario::QueuePoll => queue_poll(k, p, rec).await,
        Scenario::SeatMap => seat_map(k, p, rec).await,
        Scenario::HoldDistinct => hold_distinct(k, p, rec).await,
        Scenario::HoldContended => hold_contended(k, p, rec).await,
        Scenario::Charge => charge(k, p, rec).await,
        Scenario::Pay => pay(k, p, rec).await,
        Scenario::FlashSale => flash_sale(k, p, rec).await,
    }
}

async fn baseline(k: &Knobs, p: &mut Platform, rec: Arc<Recorder>) -> anyhow::Result<Outcome> {
    let probe = p.http.get(&k.baseline_path, Auth::default()).await;
    if probe.status != 200 {
        bail!(
            "GET {} through the gateway answered {}; the benchmark gateway routes it when rendered with GATEWAY_BENCH_ROUTE=1",
            k.baseline_path,
            probe.status
        );
    }
    let (http, path) = (p.http.clone(), Arc::<str>::from(k.baseline_path.as_str()));
    let name = format!("GET {path}");
    let measured = drive(k.load, move |_| {
        let (http, path, rec, name) = (http.clone(), path.clone(), rec.clone(), name.clone());
        async move {
            record(&rec, &name, http.get(&path, Auth::default()).await);
            true
        }
    })
    .await;
    Ok(Outcome {
        measured,
        ..Outcome::default()
    })
}

/// Every request a new token: user i % U joins concert (i / U) % K.
async fn queue_join(k: &Knobs, p: &mut Platform, rec: Arc<Recorder>) -> anyhow::Result<Outcome> {
    const CONCERTS: usize = 40;
    let users = Arc::new(p.users(k.users, "j").await?);
    let mut concerts = Vec::with_capacity(CONCERTS);
    for i in 0..CONCERTS {
        concerts.push(p.concert(&format!("Queue join {i}"), 1, 1, 1000).await?.0);
    }
    let concerts = Arc::new(concerts);
    let pairs = (users.len() * concerts.len()) as u64;
    let http = p.http.clone();
    let measured = drive(k.load, move |i| {
        let (http, rec, users, concerts) =
            (http.clone(), rec.clone(), users.clone(), concerts.clone());
        async move {
            if i >= pairs {
                return false;
            }
            let u = &users[(i % users.len() as u64) as usize];
            let c = concerts[(i / users.len() as u64) as usize];
            let reply = http
                .post("/api/queue/tokens", u.auth(), &json!({"concert_id": c}))
                .await;
            record(&rec, "POST /api/queue/tokens", reply);
            true
        }
    })
    .await;
    Ok(Outcome {
        measured,
        ..Outcome::default()
    })
}

async fn queue_poll(k: &Knobs, p: &mut Platform, rec: Arc<Recorder>) -> anyhow::Result<Outcome> {
    let mut users = p.users(k.users, "p").await?;
    let (concert, _) = p.concert("Queue poll", 1, 1, 1000).await?;
    p.join(&mut users, concert, false).await?;
    let users = Arc::new(users);
    let http = p.http.clone();
    let measured = drive(k.load, move |i| {
        let (http, rec, users) = (http.clone(), rec.clone(), users.clone());
        async move {
            let u = &users[(i % users.len() as u64) as usize];
            let path = format!("/api/queue/tokens/{}", u.pass.as_deref().unwrap_or(""));
            let reply = http.get(&path, u.auth()).await;
            record(&rec, "GET /api/queue/tokens/{token}", reply);
            true
        }
    })
    .await;
    Ok(Outcome {
        measured,
        ..Outcome::default()
    })
}

/// Admitted users reading one 50-seat schedule's map.
async fn seat_map(k: &Knobs, p: &mut Platform, rec: Arc<Recorder>) -> anyhow::Result<Outcome> {
    let mut users = p.users(k.users, "m").await?;
    let (concert, schedules) = p.concert("Seat map", 1, k.seats_per_schedule, 1000).await?;
    p.join(&mut users, concert, true).await?;
    let users = Arc::new(users);
    let path: Arc<str> = format!("/api/schedules/{}/seats", schedules[0]).into();
    let http = p.http.clone();
    let measured = drive(k.load, move |i| {
        let (http, rec, users, path) = (http.clone(), rec.clone(), users.clone(), path.clone());
        async move {
            let u = &users[(i % users.len() as u64) as usize];
            record(
                &rec,
                "GET /api/schedules/{id}/seats",
                http.get(&path, u.auth()).await,
            );
            true
        }
    })
    .await;
    Ok(Outcome {
        measured,
        ..Outcome::default()
    })
}

/// Every request one new seat, held by user i % U.
async fn hold_distinct(k: &Knobs, p: &mut Platform, rec: Arc<Recorder>) -> anyhow::Result<Outcome> {
    const SEATS: u32 = 1000;
    let mut users = p.users(k.users, "h").await?;
    let (concert, schedules) = p.concert("Hold distinct", k.schedules, SEATS, 1000).await?;
    p.join(&mut users, concert, true).await?;
    let users = Arc::new(users);
    let total = schedules.len() as u64 * SEATS as u64;
    let schedules = Arc::new(schedules.clone());
    let http = p.http.clone();
    let rec2 = rec.clone();
    let measured = drive(k.load, move |i| {
        let (http, rec, users, schedules) =
            (http.clone(), rec2.clone(), users.clone(), schedules.clone());
        async move {
            if i >= total {
                return false;
            }
            let u = &users[(i % users.len() as u64) as usize];
            let body = json!({
                "schedule_id": schedules[(i / SEATS as u64) as usize],
                "seat_nos": [i % SEATS as u64 + 1],
            });
            record(
                &rec,
                "POST /api/reservations",
                http.post("/api/reservations", u.auth(), &body).await,
            );
            true
        }
    })
    .await;
    let mut audit = audit::no_double_booking(p, concert).await?;
    let held = rec.count("POST /api/reservations", 201);
    let seats_held = audit::seats_in_status(p, concert, "HELD").await?;
    audit.push(Check {
        name: "every 201 holds its seat".into(),
        ok: seats_held as u64 == held,
        detail: format!("{held} holds answered 201, {seats_held} seats HELD in the database"),
    });
    Ok(Outcome {
        measured,
        audit,
        ..Outcome::default()
    })
}

/// `concurrency` users, each with its own session and pass, all wanting the one seat.
async fn hold_contended(
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
    let mut users = p.users(k.load.concurrency.max(1), "c").await?;
    let (concert, schedules) = p.concert("Hold contended", 1, 1, 1000).await?;
    p.join(&mut users, concert, true).await?;
    let clients = users.len();
    let users = Arc::new(users);
    let body = Arc::new(json!({"schedule_id": schedules[0], "seat_nos": [1]}));
    let http = p.http.clone();
    let rec2 = rec.clone();
    let measured = drive(k.load, move |i| {
        let (http, rec, users, body) = (http.clone(), rec2.clone(), users.clone(), body.clone());
        async move {
            let u = &users[(i % users.len() as u64) as usize];
            record(
                &rec,
                "POST /api/reservations (one seat)",
                http.post("/api/reservations", u.auth(), &*body).await,
            );
            true
        }
    })
    .await;
    let winners = rec.count("POST /api/reservations (one seat)", 201);
    let (rows,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM reservations WHERE schedule_id = $1 AND status IN ('HELD', 'CONFIRMED')",
    )
    .bind(schedules[0])
    .fetch_one(&p.concert_db)
    .await?;
    let mut facts = BTreeMap::new();
    facts.insert("clients".into(), clients.to_string());
    facts.insert("winners (201)".into(), winners.to_string());
    Ok(Outcome {
        measured,
        facts,
        sale: None,
        audit: vec![Check {
            name: "exactly one winner".into(),
            ok: winners == 1 && rows == 1,
            detail: format!("{winners} answers 201, {rows} live reservation(s) of the seat"),
        }],
    })
}

async fn charge(k: &Knobs, p: &mut Platform, rec: Arc<Recorder>) -> anyhow::Result<Outcome> {
    let users = Arc::new(p.users(k.users, "w").await?);
    let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    let run: Arc<str> = p.run.clone().into();
    let http = p.http.clone();
    let measured = drive(k.load, move |i| {
        let (http, rec, users, run) = (http.clone(), rec.clone(), users.clone(), run.clone());
        async move {
            let u = &users[(i % users.len() as u64) as usize];
            let key = format!("c{run}-{i}");
            let auth = Auth {
                idempotency_key: Some(&key),
                ..u.auth()
            };
            record(
                &rec,
                "POST /api/wallet/charges",
                http.post("/api/wallet/charges", auth, &json!({"amount": 1000}))
                    .await,
            );
            true
        }
    })
    .await;
    Ok(Outcome {
        measured,
        audit: audit::money(p, &ids).await?,
        ..Outcome::default()
    })
}

/// Every user holds one seat in setup; the measured phase pays each hold once.
async fn pay(k: &Knobs, p: &mut Platform, rec: Arc<Recorder>) -> anyhow::Result<Outcome> {
    const SEATS: u32 = 1000;
    let mut users = p.users(k.users, "y").await?;
    let schedules = k.users.div_ceil(SEATS as usize);
    let (concert, ids) = p.concert("Pay", schedules, SEATS, 1000).await?;
    p.fund(&users, 10_000).await?;
    p.join(&mut users, concert, true).await?;
    let (http, ids) = (&p.http, &ids);
    let holds: Vec<Option<i64>> = futures_util::stream::iter(users.iter().enumerate())
        .map(|(i, u)| async move {
            let body = json!({"schedule_id": ids[i / SEATS as usize], "seat_nos": [i % SEATS as usize + 1]});
            http.post("/api/reservations", u.auth(), &body).await.json()["id"].as_i64()
        })
        .buffered(64)
        .collect()
        .await;
    let Some(holds) = holds.into_iter().collect::<Option<Vec<i64>>>() else {
        bail!("a setup hold failed");
    };
    let work = Arc::new((users, holds));
    let http = p.http.clone();
    let rec2 = rec.clone();
    let measured = drive(k.load, move |i| {
        let (http, rec, work) = (http.clone(), rec2.clone(), work.clone());
        async move {
            let (users, holds) = &*work;
            let Some(u) = users.get(i as usize) else {
                return false;
            };
            let key = format!("pay-{}", holds[i as usize]);
            let auth = Auth {
                idempotency_key: Some(&key),
                ..u.auth()
            };
            let body = json!({"reservation_id": holds[i as usize]});
            record(
                &rec,
                "POST /api/payments",
                http.post("/api/payments", auth, &body).await,
            );
            true
        }
    })
    .await;
    let settled = audit::settle(p, concert, k.settle_limit).await?;
    for d in audit::confirm_latencies(p, concert).await? {
        rec.record_latency("payment → CONFIRMED (database clock)", d);
    }
    let mut facts = BTreeMap::new();
    facts.insert(
        "settled after the measured phase".into(),
        settled.describe(),
    );
    Ok(Outcome {
        measured,
        facts,
        audit: audit::no_double_booking(p, concert).await?,
        sale: None,
    })
}

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
    payment_refused: AtomicU64,
    gave_up_confirm: AtomicU64,
    rejected: AtomicU64,
}

/// How often a buyer re-reads its reservation after paying.
const CONFIRM_POLL: Duration = Duration::from_millis(250);
/// A fan's pause after a fault answer (5xx, no answer): doubling from the first to the most.
const FAULT_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const FAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The pause before the next try after `attempt` faults in a row, with ±20 % jitter so that a
/// crowd turned away together does not come back together.
fn backoff(attempt: u32) -> Duration {
    FAULT_BACKOFF_FIRST
        .saturating_mul(1 << attempt.min(8))
        .min(FAULT_BACKOFF_MAX)
        .mul_f64(rand::random_range(0.8..1.2))
}

/// How a payment attempt ended.
enum Paid {
    /// 201 now (its latency is measured from here), or ALREADY_PAID by an earlier try.
    Now,
    Earlier,
    Refused,
}

impl Sale {
    fn over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// Sends one request until the platform answers it, backing off after each fault (the
    /// gateway's 502 while a service restarts, a refused connection) as a client would. Only
    /// for requests that are safe to repeat. None when the sale ended meanwhile.
    async fn call(
        &self,
        name: &str,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> Option<Reply> {
        let body = body.map(|b| b.to_string().into_bytes());
        let mut attempt = 0;
        loop {
            let reply = record(
                &self.rec,
                name,
                self.http
                    .send(method.clone(), path, auth.clone(), body.clone())
                    .await,
            );
            if !reply.is_fault() {
                return Some(reply);
            }
            if self.over() {
                return None;
            }
            self.fault_retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

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
            if let Some(t) = reply.json()["token"].as_str() {
                return Some(t.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    /// Waits in line (polling at the pace the ETA suggests) until ACTIVE; None when the sale
    /// ended first.
    async fn wait(&self, u: &mut User) -> Option<()> {
        let mut pass = self.join(u).await?;
        let mut pause = self.poll;
        loop {
            let jitter = rand::random_range(0.8..1.2);
            tokio::time::sleep(pause.mul_f64(jitter)).await;
            if self.over() {
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
                    u.pass = Some(pass);
                    return Some(());
                }
                Some("EXPIRED") => pass = self.join(u).await?,
                _ => {
                    let eta = status["eta_seconds"].as_f64().unwrap_or(0.0);
                    pause = Duration::from_secs_f64(
                        (eta / 2.0).clamp(self.poll.as_secs_f64(), 5.0 * self.poll.as_secs_f64()),
                    );
                }
            }
        }
    }

    /// Picks a free seat of a schedule with seats left and holds it, retrying on 409 — as a
    /// fan does, until it has one or the sale is over (seats held by others may still be
    /// released, so an empty list is looked at again a second later).
    ///
    /// A hold that failed with a fault may have been made all the same (the service died
    /// after its commit), and concert-api keeps no idempotency keys for holds: so after one
    /// the fan looks at its own reservations first, and once it has a hold cancels any other
    /// it made meanwhile — or that seat would stay HELD, unsold, until the hold expires.
    async fn hold(&self, u: &User) -> Option<i64> {
        let list = format!(
            "/api/concerts/{}/schedules?available=true&limit=100",
            self.concert
        );
        let mut attempt = 0u64;
        // Faults so far, and whether the last try ended in one (its hold may exist).
        let (mut faults, mut look) = (0, false);
        loop {
            if self.over() {
                return None;
            }
            if std::mem::take(&mut look)
                && let Some(&id) = self.own_holds(u).await?.first()
            {
                self.keep_only(u, id).await;
                return Some(id);
            }
            if attempt > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            attempt += 1;
            let open = self
                .call(
                    "GET /api/concerts/{id}/schedules",
                    Method::GET,
                    &list,
                    Auth::default(),
                    None,
                )
                .await?
                .json();
            let candidates: Vec<i64> = open["items"]
                .as_array()
                .map(|items| items.iter().filter_map(|s| s["id"].as_i64()).collect())
                .unwrap_or_default();
            let Some(&schedule) = candidates.choose(&mut rand::rng()) else {
                // Nothing on sale in the (seconds-old) list: look again in a second.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let map = self
                .call(
                    "GET /api/schedules/{id}/seats",
                    Method::GET,
                    &format!("/api/schedules/{schedule}/seats"),
                    u.auth(),
                    None,
                )
                .await?
                .json();
            let free: Vec<i64> = map["seats"]
                .as_array()
                .map(|seats| {
                    seats
                        .iter()
                        .filter(|s| s["status"] == "AVAILABLE")
                        .filter_map(|s| s["seat_no"].as_i64())
                        .collect()
                })
                .unwrap_or_default();
            let Some(&seat) = free.choose(&mut rand::rng()) else {
                // Every seat of that schedule is taken (the list is seconds old).
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let held = record(
                &self.rec,
                "POST /api/reservations",
                self.http
                    .post(
                        "/api/reservations",
                        u.auth(),
                        &json!({"schedule_id": schedule, "seat_nos": [seat]}),
                    )
                    .await,
            );
            if held.status == 201 {
                let id = held.json()["id"].as_i64();
                if faults > 0
                    && let Some(id) = id
                {
                    self.keep_only(u, id).await;
                }
                return id;
            }
            if held.is_fault() {
                self.fault_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(faults)).await;
                faults += 1;
                look = true;
            }
        }
    }

    /// The fan's HELD reservations of this concert, newest first.
    async fn own_holds(&self, u: &User) -> Option<Vec<i64>> {
        let mine = self
            .call(
                "GET /api/reservations",
                Method::GET,
                "/api/reservations",
                u.auth(),
                None,
            )
            .await?
            .json();
        Some(
            mine["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|r| r["concert_id"] == self.concert && r["status"] == "HELD")
                        .filter_map(|r| r["id"].as_i64())
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// Cancels the fan's other holds of this concert (made by tries it thought had failed).
    async fn keep_only(&self, u: &User, keep: i64) {
        let Some(holds) = self.own_holds(u).await else {
            return;
        };
        for id in holds.into_iter().filter(|id| *id != keep) {
            let _ = self
                .call(
                    "DELETE /api/reservations/{id}",
                    Method::DELETE,
                    &format!("/api/reservations/{id}"),
                    u.auth(),
                    None,
                )
                .await;
        }
    }

    /// Pays the hold, repeating the request (same idempotency key, so at most one charge)
    /// through faults and while an earlier try of the same key is still running.
    async fn pay(&self, u: &User, reservation: i64) -> Paid {
        let key = format!("sale-{reservation}");
        let auth = Auth {
            idempotency_key: Some(&key),
            ..u.auth()
        };
        let body = json!({"reservation_id": reservation});
        let mut attempt = 0;
        loop {
            let Some(reply) = self
                .call(
                    "POST /api/payments",
                    Method::POST,
                    "/api/payments",
                    auth.clone(),
                    Some(&body),
                )
                .await
            else {
                return Paid::Refused;
            };
            match (reply.status, reply.code().as_deref()) {
                (201, _) => return Paid::Now,
                (409, Some("ALREADY_PAID")) => return Paid::Earlier,
                (409, Some("IDEMPOTENCY_KEY_IN_USE")) if !self.over() => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                _ => return Paid::Refused,
            }
        }
    }

    /// Pays, then waits for CONFIRMED — at most `confirm_timeout` after the payment, the
    /// bound past which the platform has broken its promise (DESIGN §9.4).
    async fn buy(&self, u: &User, reservation: i64) -> bool {
        let measured = match self.pay(u, reservation).await {
            Paid::Now => true,
            Paid::Earlier => false,
            Paid::Refused => {
                self.payment_refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        let paid_at = Instant::now();
        let path = format!("/api/reservations/{reservation}");
        while paid_at.elapsed() < self.confirm_timeout {
            tokio::time::sleep(CONFIRM_POLL).await;
            let reply = record(
                &self.rec,
                "GET /api/reservations/{id}",
                self.http.get(&path, u.auth()).await,
            );
            if reply.is_fault() {
                // Polled again at the same pace: that is backoff enough.
                self.fault_retries.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match reply.json()["status"].as_str() {
                Some("CONFIRMED") => {
                    if measured {
                        self.rec.record_latency(
                            "payment → CONFIRMED (client, 250 ms polls)",
                            paid_at.elapsed(),
                        );
                    }
                    return true;
                }
                // Paid but not to be confirmed: the payment is refunded.
                Some("REJECTED" | "EXPIRED" | "CANCELLED") => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                _ => {}
            }
        }
        self.gave_up_confirm.fetch_add(1, Ordering::Relaxed);
        false
    }

    async fn fan(self: Arc<Self>, mut u: User, arrive_after: Duration) {
        tokio::time::sleep(arrive_after).await;
        if self.wait(&mut u).await.is_none() {
            self.left_waiting.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(reservation) = self.hold(&u).await else {
            self.left_active.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.buy(&u, reservation).await {
            self.sold.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sale is over when the database says every seat is SOLD: the platform's truth, not
    /// what the fans have seen.
    /// One indexed count a second (by schedule ids: the seats table holds every earlier run's
    /// seats too), so the watcher itself costs the database next to nothing.
    async fn watch(self: Arc<Self>, db: sqlx::PgPool, schedules: Vec<i64>) -> Instant {
        while !self.over() {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let sold: Result<(i64,), _> = sqlx::query_as(
                "SELECT count(*) FROM seats WHERE schedule_id = ANY($1) AND status = 'SOLD'",
            )
            .bind(&schedules)
            .fetch_one(&db)
            .await;
            if sold.is_ok_and(|(n,)| n as u64 >= self.seats) {
                self.over.store(true, Ordering::Relaxed);
            }
        }
        Instant::now()
    }
}

async fn flash_sale(k: &Knobs, p: &mut Platform, rec: Arc<Recorder>) -> anyhow::Result<Outcome> {
    let seats = k.schedules as u64 * k.seats_per_schedule as u64;
    let price = 50_000;
    let users = p.users(k.users, "f").await?;
    let (concert, schedules) = p
        .concert("Flash sale", k.schedules, k.seats_per_schedule, price)
        .await?;
    p.fund(&users, price).await?;
    let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    let sale = Arc::new(Sale {
        http: p.http.clone(),
        rec: rec.clone(),
        concert,
        seats,
        poll: k.poll,
        confirm_timeout: k.confirm_timeout,
        sold: AtomicU64::new(0),
        over: AtomicBool::new(false),
        left_waiting: AtomicU64::new(0),
        left_active: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        fault_retries: AtomicU64::new(0),
        payment_refused: AtomicU64::new(0),
        gave_up_confirm: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
    });
    let watcher = tokio::spawn(sale.clone().watch(p.concert_db.clone(), schedules));
    // A drill (bench/crash-drill.sh) times its faults from this line.
    eprintln!("[loadtest] flash-sale: the sale opens");
    let started = Instant::now();
    let crowd = users.len().max(1);
    let fans: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            let arrive = k.arrival.mul_f64(i as f64 / crowd as f64);
            tokio::spawn(sale.clone().fan(u, arrive))
        })
        .collect();
    let all = futures_util::future::join_all(fans);
    let finished = tokio::time::timeout(k.max_duration, all).await.is_ok();
    sale.over.store(true, Ordering::Relaxed);
    let measured = started.elapsed();
    let sold_out = watcher.await.map_or(measured, |at| at - started);
    eprintln!("[loadtest] flash-sale: the sale is over; auditing");

    let settled = audit::settle(p, concert, k.settle_limit).await?;
    for d in audit::confirm_latencies(p, concert).await? {
        rec.record_latency("payment → CONFIRMED (database clock)", d);
    }
    let mut audit = audit::sale(p, concert, seats, &ids, &settled).await?;
    audit.extend(audit::money(p, &ids).await?);
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let numbers = SaleNumbers {
        seats,
        bought: count(&sale.sold),
        confirm_timeout_seconds: k.confirm_timeout.as_secs_f64(),
        gave_up_confirm: count(&sale.gave_up_confirm),
        rejected_after_payment: count(&sale.rejected),
        payment_refused: count(&sale.payment_refused),
        left_waiting: count(&sale.left_waiting),
        left_without_seat: count(&sale.left_active),
        fault_retries: count(&sale.fault_retries),
        settle_direct_after_seconds: k.settle_direct_after.as_secs_f64(),
        settle_limit_seconds: k.settle_limit.as_secs_f64(),
        settle_waited_seconds: settled.waited.as_secs_f64(),
        unsettled_after_wait: settled.open as u64,
    };
    let mut facts = BTreeMap::new();
    facts.insert("seats".into(), seats.to_string());
    facts.insert(
        "seats bought (CONFIRMED seen by the buyer)".into(),
        numbers.bought.to_string(),
    );
    facts.insert(
        "sell-out time (every seat SOLD in the database)".into(),
        if finished {
            format!("{:.1} s", sold_out.as_secs_f64())
        } else {
            "not sold out".into()
        },
    );
    facts.insert(
        "hold retries (409 or a stale list)".into(),
        count(&sale.retries).to_string(),
    );
    facts.insert(
        "fans still in line at sell-out".into(),
        numbers.left_waiting.to_string(),
    );
    facts.insert(
        "fans admitted but left without a seat".into(),
        numbers.left_without_seat.to_string(),
    );
    // Only worth a line when something went wrong: a clean run keeps its report as it was.
    for (name, n) in [
        (
            "requests retried after a 5xx or no answer",
            numbers.fault_retries,
        ),
        ("payments refused (4xx)", numbers.payment_refused),
        (
            "fans who paid and saw the reservation rejected (refunded)",
            numbers.rejected_after_payment,
        ),
    ] {
        if n > 0 {
            facts.insert(name.into(), n.to_string());
        }
    }
    if numbers.gave_up_confirm > 0 {
        facts.insert(
            "fans who paid and gave up waiting for CONFIRMED".into(),
            format!(
                "{} (after --confirm-timeout-secs {:.0})",
                numbers.gave_up_confirm, numbers.confirm_timeout_seconds
            ),
        );
    }
    facts.insert("settled after the sale".into(), settled.describe());
    if !finished {
        facts.insert(
            "stopped".into(),
            format!("after --max-duration {:?}", k.max_duration),
        );
    }
    Ok(Outcome {
        measured,
        facts,
        audit,
        sale: Some(numbers),
    })
}

#[cfg(test)]
mod tests {
    //! A fan against a scripted platform: a bare HTTP/1.1 server on a local port whose
    //! answers each test writes, faults included (a 502, a connection closed unanswered).

    use std::collections::HashMap;
    use std::sync::Mutex;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::faults::Window;

    /// One request as the fake platform saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        headers: HashMap<String, String>,
    }

    /// The answer to a request: status and body, or `None` to close the connection unanswered.
    type Script = dyn Fn(&Seen, usize) -> Option<(u16, Value)> + Send + Sync;

    struct Fake {
        base: String,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Fake {
        /// `script(request, how many requests to the same method and path came before)`.
        async fn start(
            script: impl Fn(&Seen, usize) -> Option<(u16, Value)> + Send + Sync + 'static,
        ) -> Fake {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let script: Arc<Script> = Arc::new(script);
            let log = seen.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    tokio::spawn(serve(stream, script.clone(), log.clone()));
                }
            });
            Fake { base, seen }
        }

        fn seen(&self, method: &str, path: &str) -> Vec<Seen> {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.method == method && s.path == path)
                .cloned()
                .collect()
        }
    }

    async fn serve(stream: tokio::net::TcpStream, script: Arc<Script>, log: Arc<Mutex<Vec<Seen>>>) {
        let mut stream = BufReader::new(stream);
        loop {
            let mut head = String::new();
            if stream.read_line(&mut head).await.unwrap_or(0) == 0 {
                return;
            }
            let mut parts = head.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or("").to_owned(),
                parts.next().unwrap_or("").to_owned(),
            );
            let mut headers = HashMap::new();
            loop {
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let length: usize = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            stream.read_exact(&mut body).await.unwrap();
            let seen = Seen {
                method,
                path,
                headers,
            };
            let before = {
                let mut log = log.lock().unwrap();
                let n = log
                    .iter()
                    .filter(|s| s.method == seen.method && s.path == seen.path)
                    .count();
                log.push(seen.clone());
                n
            };
            let Some((status, body)) = script(&seen, before) else {
                return;
            };
            let body = body.to_string();
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    const CONCERT: i64 = 3;

    fn sale(fake: &Fake, confirm_timeout: Duration) -> Sale {
        Sale {
            http: Arc::new(Http::new(&fake.base, 4).unwrap()),
            rec: Arc::new(Recorder::default()),
            concert: CONCERT,
            seats: 1,
            poll: Duration::from_millis(10),
            confirm_timeout,
            sold: AtomicU64::new(0),
            over: AtomicBool::new(false),
            left_waiting: AtomicU64::new(0),
            left_active: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            fault_retries: AtomicU64::new(0),
            payment_refused: AtomicU64::new(0),
            gave_up_confirm: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    fn fan() -> User {
        User {
            id: 1,
            session: "s".into(),
            pass: Some("p".into()),
        }
    }

    fn count(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_fan_retries_through_a_502_and_a_dropped_connection_and_both_are_counted() {
        let fake = Fake::start(|_, before| match before {
            0 => Some((502, json!({"status": 502}))),
            1 => None,
            _ => Some((200, json!({"status": "ACTIVE"}))),
        })
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        let reply = s
            .call("GET /x", Method::GET, "/x", fan().auth(), None)
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(count(&s.fault_retries), 2);
        assert_eq!(s.rec.count("GET /x", 502), 1);
        assert_eq!(s.rec.count("GET /x", 0), 1);
        let split = s.rec.error_split(&[], Duration::ZERO);
        assert_eq!(
            (split.outside.server_errors, split.outside.transport_errors),
            (1, 1)
        );
        // The same errors, inside a window that covers the whole run, are not outside.
        let all = Window {
            label: "everything".into(),
            start_unix_ms: 0,
            end_unix_ms: None,
        };
        let split = s.rec.error_split(&[all], Duration::ZERO);
        assert_eq!((split.inside.failures(), split.outside.failures()), (2, 0));
    }

    #[tokio::test]
    async fn a_fan_stops_retrying_once_the_sale_is_over() {
        let fake = Fake::start(|_, _| Some((502, json!({})))).await;
        let s = sale(&fake, Duration::from_secs(1));
        s.over.store(true, Ordering::Relaxed);
        assert!(
            s.call("GET /x", Method::GET, "/x", fan().auth(), None)
                .await
                .is_none()
        );
        assert_eq!(fake.seen("GET", "/x").len(), 1);
    }

    #[tokio::test]
    async fn a_payment_is_repeated_with_its_idempotency_key_until_answered() {
        let fake = Fake::start(|seen, before| {
            assert_eq!(seen.path, "/api/payments");
            match before {
                0 => Some((
                    503,
                    json!({"status": 503, "code": "CONCERT_API_UNAVAILABLE"}),
                )),
                1 => Some((
                    409,
                    json!({"status": 409, "code": "IDEMPOTENCY_KEY_IN_USE"}),
                )),
                _ => Some((201, json!({"id": 5, "status": "COMPLETED"}))),
            }
        })
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        assert!(matches!(s.pay(&fan(), 7).await, Paid::Now));
        let tries = fake.seen("POST", "/api/payments");
        assert_eq!(tries.len(), 3);
        assert!(
            tries
                .iter()
                .all(|t| t.headers["idempotency-key"] == "sale-7")
        );
        assert_eq!(count(&s.fault_retries), 1);
    }

    /// A platform with one open schedule of one free seat; `holds` answers
    /// POST /api/reservations, `mine` lists the fan's reservations (by how many POSTs came).
    async fn seat_platform(
        holds: impl Fn(usize) -> Option<(u16, Value)> + Send + Sync + 'static,
        mine: impl Fn(usize) -> Value + Send + Sync + 'static,
    ) -> Fake {
        let posts = Arc::new(AtomicU64::new(0));
        Fake::start(move |seen, before| {
            let path = seen.path.split('?').next().unwrap_or("");
            match (seen.method.as_str(), path) {
                ("GET", "/api/concerts/3/schedules") => Some((200, json!({"items": [{"id": 5}]}))),
                ("GET", "/api/schedules/5/seats") => Some((
                    200,
                    json!({"seats": [{"seat_no": 1, "status": "AVAILABLE"}]}),
                )),
                ("POST", "/api/reservations") => {
                    posts.fetch_add(1, Ordering::Relaxed);
                    holds(before)
                }
                ("GET", "/api/reservations") => {
                    Some((200, mine(posts.load(Ordering::Relaxed) as usize)))
                }
                ("DELETE", _) => Some((200, json!({"status": "CANCELLED"}))),
                _ => Some((404, json!({}))),
            }
        })
        .await
    }

    fn held(id: i64) -> Value {
        json!({"id": id, "concert_id": CONCERT, "status": "HELD"})
    }

    #[tokio::test]
    async fn a_hold_answered_with_a_fault_but_made_is_found_and_kept() {
        // The first hold is made, then the service dies before answering.
        let fake = seat_platform(
            |_| Some((502, json!({}))),
            |posts| {
                let items = if posts > 0 { vec![held(41)] } else { vec![] };
                json!({"items": items})
            },
        )
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        assert_eq!(s.hold(&fan()).await, Some(41));
        assert_eq!(fake.seen("POST", "/api/reservations").len(), 1);
        assert!(fake.seen("DELETE", "/api/reservations/41").is_empty());
        assert_eq!(count(&s.fault_retries), 1);
    }

    #[tokio::test]
    async fn after_a_fault_a_fan_keeps_one_hold_and_cancels_the_other() {
        // The first try fails and its hold shows up only later (a slow commit); the second
        // is answered 201. The fan keeps the second and cancels the first.
        let fake = seat_platform(
            |before| match before {
                0 => Some((502, json!({}))),
                _ => Some((201, held(42))),
            },
            |posts| {
                let items = if posts > 1 {
                    vec![held(42), held(41)]
                } else {
                    vec![]
                };
                json!({"items": items})
            },
        )
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        assert_eq!(s.hold(&fan()).await, Some(42));
        assert_eq!(fake.seen("DELETE", "/api/reservations/41").len(), 1);
        assert!(fake.seen("DELETE", "/api/reservations/42").is_empty());
    }

    #[tokio::test]
    async fn a_fan_gives_up_waiting_for_confirmation_after_the_bound_and_is_counted() {
        let fake = Fake::start(|seen, _| match seen.method.as_str() {
            "POST" => Some((201, json!({"id": 5}))),
            _ => Some((200, held(9))),
        })
        .await;
        let s = sale(&fake, Duration::from_millis(600));
        assert!(!s.buy(&fan(), 9).await);
        assert_eq!(count(&s.gave_up_confirm), 1);
        assert_eq!(count(&s.rejected), 0);
    }

    #[tokio::test]
    async fn a_rejected_reservation_ends_the_wait_and_faults_while_polling_are_retried() {
        let fake = Fake::start(|seen, before| match (seen.method.as_str(), before) {
            ("POST", _) => Some((201, json!({"id": 5}))),
            (_, 0) => Some((502, json!({}))),
            (_, 1) => Some((200, held(9))),
            _ => Some((200, json!({"id": 9, "status": "REJECTED"}))),
        })
        .await;
        let s = sale(&fake, Duration::from_secs(60));
        assert!(!s.buy(&fan(), 9).await);
        assert_eq!(count(&s.rejected), 1);
        assert_eq!(count(&s.gave_up_confirm), 0);
        assert_eq!(count(&s.fault_retries), 1);
    }

    #[tokio::test]
    async fn a_confirmed_purchase_is_measured() {
        let fake = Fake::start(|seen, _| match seen.method.as_str() {
            "POST" => Some((201, json!({"id": 5}))),
            _ => Some((200, json!({"id": 9, "status": "CONFIRMED"}))),
        })
        .await;
        let s = sale(&fake, Duration::from_secs(60));
        assert!(s.buy(&fan(), 9).await);
        let latencies = s.rec.summary(Duration::from_secs(1));
        assert!(
            latencies
                .iter()
                .any(|l| l.name.starts_with("payment → CONFIRMED (client") && l.requests == 1)
        );
    }

    #[test]
    fn the_backoff_grows_to_its_ceiling() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            let base = FAULT_BACKOFF_FIRST
                .saturating_mul(1 << attempt.min(8))
                .min(FAULT_BACKOFF_MAX);
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                "{attempt}: {d:?}"
            );
        }
    }
}
