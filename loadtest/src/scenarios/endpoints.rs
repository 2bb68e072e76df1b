//! The single-endpoint scenarios: each drives one endpoint of the platform (the gateway's bare
//! route, the queue, the seat map, holds, wallet charges, payments) and measures it alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::bail;
use futures_util::StreamExt;
use serde_json::json;

use super::{Knobs, Outcome, record, settle};
use crate::audit;
use crate::drive::drive;
use crate::fixture::{Platform, User};
use crate::http::Auth;
use crate::report::Check;
use crate::stats::Recorder;

/// The user who sends request `i`: the users take turns.
fn sender(users: &[User], i: u64) -> &User {
    &users[(i % users.len() as u64) as usize]
}

/// `--baseline-path` through the gateway: the floor the other scenarios are read against.
pub(super) async fn baseline(
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
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
    Ok(Outcome::measured(measured))
}

/// Every request a new token: user i % U joins concert (i / U) % K.
pub(super) async fn queue_join(
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
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
            let u = sender(&users, i);
            let c = concerts[(i / users.len() as u64) as usize];
            let reply = http
                .post("/api/queue/tokens", u.auth(), &json!({"concert_id": c}))
                .await;
            record(&rec, "POST /api/queue/tokens", reply);
            true
        }
    })
    .await;
    Ok(Outcome::measured(measured))
}

/// Users in line (not admitted by the tool) reading their token's status, taking turns.
pub(super) async fn queue_poll(
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
    let mut users = p.users(k.users, "p").await?;
    let (concert, _) = p.concert("Queue poll", 1, 1, 1000).await?;
    p.join(&mut users, concert, false).await?;
    let users = Arc::new(users);
    let http = p.http.clone();
    let measured = drive(k.load, move |i| {
        let (http, rec, users) = (http.clone(), rec.clone(), users.clone());
        async move {
            let u = sender(&users, i);
            let path = format!("/api/queue/tokens/{}", u.pass.as_deref().unwrap_or(""));
            let reply = http.get(&path, u.auth()).await;
            record(&rec, "GET /api/queue/tokens/{token}", reply);
            true
        }
    })
    .await;
    Ok(Outcome::measured(measured))
}

/// Admitted users reading one 50-seat schedule's map.
pub(super) async fn seat_map(
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
    let mut users = p.users(k.users, "m").await?;
    let (concert, schedules) = p.concert("Seat map", 1, k.seats_per_schedule, 1000).await?;
    p.join(&mut users, concert, true).await?;
    let users = Arc::new(users);
    let path: Arc<str> = format!("/api/schedules/{}/seats", schedules[0]).into();
    let http = p.http.clone();
    let measured = drive(k.load, move |i| {
        let (http, rec, users, path) = (http.clone(), rec.clone(), users.clone(), path.clone());
        async move {
            let u = sender(&users, i);
            record(
                &rec,
                "GET /api/schedules/{id}/seats",
                http.get(&path, u.auth()).await,
            );
            true
        }
    })
    .await;
    Ok(Outcome::measured(measured))
}

/// Every request one new seat, held by user i % U.
pub(super) async fn hold_distinct(
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
    const SEATS: u32 = 1000;
    let mut users = p.users(k.users, "h").await?;
    let (concert, schedules) = p.concert("Hold distinct", k.schedules, SEATS, 1000).await?;
    // Each user holds many seats (request i is user i % U's): at the default 4 per buyer,
    // 2,000 users run out after 8,000 holds and the rest measure PURCHASE_LIMIT refusals.
    p.limit_per_buyer(concert, 20).await?;
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
            let u = sender(&users, i);
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
pub(super) async fn hold_contended(
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
            let u = sender(&users, i);
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
        ..Outcome::default()
    })
}

/// Wallet charges, each under a new idempotency key; then the money audit.
pub(super) async fn charge(
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
    let users = Arc::new(p.users(k.users, "w").await?);
    let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    let run: Arc<str> = p.run.clone().into();
    let http = p.http.clone();
    let measured = drive(k.load, move |i| {
        let (http, rec, users, run) = (http.clone(), rec.clone(), users.clone(), run.clone());
        async move {
            let u = sender(&users, i);
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
pub(super) async fn pay(
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
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
    let settled = settle(k, p, concert, &rec).await?;
    let mut facts = BTreeMap::new();
    facts.insert(
        "settled after the measured phase".into(),
        settled.describe(),
    );
    Ok(Outcome {
        measured,
        facts,
        audit: audit::no_double_booking(p, concert).await?,
        ..Outcome::default()
    })
}
