//! The scenarios. Each sets up what it needs (not measured), then drives its endpoint through
//! the gateway and says what it saw; some add checks read from the databases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use crate::audit;
use crate::drive::{Load, drive};
use crate::fixture::{Platform, User};
use crate::http::{Auth, Http, Reply};
use crate::stats::{Check, Recorder};

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
}

/// What one scenario produced besides the recorder's samples.
#[derive(Default)]
pub struct Outcome {
    pub measured: Duration,
    pub facts: BTreeMap<String, String>,
    pub audit: Vec<Check>,
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
    let settle = audit::settle(p, concert, Duration::from_secs(60)).await?;
    for d in audit::confirm_latencies(p, concert).await? {
        rec.record_latency("payment → CONFIRMED (database clock)", d);
    }
    let mut facts = BTreeMap::new();
    facts.insert("settled after the measured phase".into(), settle);
    Ok(Outcome {
        measured,
        facts,
        audit: audit::no_double_booking(p, concert).await?,
    })
}

/// The crowd of a sell-out.
struct Sale {
    http: Arc<Http>,
    rec: Arc<Recorder>,
    concert: i64,
    seats: u64,
    poll: Duration,
    sold: AtomicU64,
    over: AtomicBool,
    left_waiting: AtomicU64,
    left_active: AtomicU64,
    retries: AtomicU64,
}

/// How often a buyer re-reads its reservation after paying.
const CONFIRM_POLL: Duration = Duration::from_millis(250);

impl Sale {
    fn over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    async fn join(&self, u: &User) -> Option<String> {
        for _ in 0..10 {
            let reply = record(
                &self.rec,
                "POST /api/queue/tokens",
                self.http
                    .post(
                        "/api/queue/tokens",
                        u.auth(),
                        &json!({"concert_id": self.concert}),
                    )
                    .await,
            );
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
            let status = record(
                &self.rec,
                "GET /api/queue/tokens/{token}",
                self.http.get(&path, u.auth()).await,
            )
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
    async fn hold(&self, u: &User) -> Option<i64> {
        let list = format!(
            "/api/concerts/{}/schedules?available=true&limit=100",
            self.concert
        );
        let mut attempt = 0u64;
        loop {
            if self.over() {
                return None;
            }
            if attempt > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            attempt += 1;
            let open = record(
                &self.rec,
                "GET /api/concerts/{id}/schedules",
                self.http.get(&list, Auth::default()).await,
            )
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
            let map = record(
                &self.rec,
                "GET /api/schedules/{id}/seats",
                self.http
                    .get(&format!("/api/schedules/{schedule}/seats"), u.auth())
                    .await,
            )
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
                return held.json()["id"].as_i64();
            }
        }
    }

    async fn buy(&self, u: &User, reservation: i64) -> bool {
        let key = format!("sale-{reservation}");
        let auth = Auth {
            idempotency_key: Some(&key),
            ..u.auth()
        };
        let paid = record(
            &self.rec,
            "POST /api/payments",
            self.http
                .post(
                    "/api/payments",
                    auth,
                    &json!({"reservation_id": reservation}),
                )
                .await,
        );
        if paid.status != 201 {
            return false;
        }
        let paid_at = Instant::now();
        let path = format!("/api/reservations/{reservation}");
        while paid_at.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(CONFIRM_POLL).await;
            let r: Value = record(
                &self.rec,
                "GET /api/reservations/{id}",
                self.http.get(&path, u.auth()).await,
            )
            .json();
            if r["status"] == "CONFIRMED" {
                self.rec.record_latency(
                    "payment → CONFIRMED (client, 250 ms polls)",
                    paid_at.elapsed(),
                );
                return true;
            }
        }
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
        sold: AtomicU64::new(0),
        over: AtomicBool::new(false),
        left_waiting: AtomicU64::new(0),
        left_active: AtomicU64::new(0),
        retries: AtomicU64::new(0),
    });
    let watcher = tokio::spawn(sale.clone().watch(p.concert_db.clone(), schedules));
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

    let settle = audit::settle(p, concert, Duration::from_secs(60)).await?;
    for d in audit::confirm_latencies(p, concert).await? {
        rec.record_latency("payment → CONFIRMED (database clock)", d);
    }
    let mut audit = audit::sale(p, concert, seats, &ids).await?;
    audit.extend(audit::money(p, &ids).await?);
    let mut facts = BTreeMap::new();
    facts.insert("seats".into(), seats.to_string());
    facts.insert(
        "seats bought (CONFIRMED seen by the buyer)".into(),
        sale.sold.load(Ordering::Relaxed).to_string(),
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
        sale.retries.load(Ordering::Relaxed).to_string(),
    );
    facts.insert(
        "fans still in line at sell-out".into(),
        sale.left_waiting.load(Ordering::Relaxed).to_string(),
    );
    facts.insert(
        "fans admitted but left without a seat".into(),
        sale.left_active.load(Ordering::Relaxed).to_string(),
    );
    facts.insert("settled after the sale".into(), settle);
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
    })
}
