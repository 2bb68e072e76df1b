//! On-sale operations (DESIGN §10): the inventory hashes the waiting room reads, the
//! per-buyer limit, hold idempotency, the live sale view and the admin audit trail — each
//! against real PostgreSQL and Redis, with real concurrency and exact counts.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{Buyer, Spawned, spawn_app, spawn_app_with};

/// Redis and the database agree on every count of the concert and of each schedule.
async fn assert_inventory_exact(s: &Spawned, concert: i64, schedules: &[i64]) -> [i64; 4] {
    let inv = s.inventory();
    let counted = s.counted(concert).await;
    assert_eq!(
        s.hash(&inv.concert_key(concert)).await,
        Some(counted),
        "concert {concert}: Redis vs database (total, available, held, sold)"
    );
    for &id in schedules {
        let n = |status: &str| {
            format!("SELECT count(*)::bigint AS n FROM seats WHERE schedule_id = {id} {status}")
        };
        let db = [
            s.count(&n("")).await,
            s.count(&n("AND status = 'AVAILABLE'")).await,
            s.count(&n("AND status = 'HELD'")).await,
            s.count(&n("AND status = 'SOLD'")).await,
        ];
        assert_eq!(
            s.hash(&inv.schedule_key(concert, id)).await,
            Some(db),
            "schedule {id}"
        );
    }
    counted
}

fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

#[tokio::test]
async fn the_inventory_follows_every_hold_cancel_sale_rejection_takeover_and_expiry_exactly() {
    let spawned = spawn_app().await;
    let s = &spawned;
    let (hold, grace) = (s.config.reservation.hold, s.config.reservation.grace);
    let inv = s.inventory();
    let (concert, a) = s.concert_with_schedule(300, -60, 3600).await;
    let b = id_of(&s.schedule(concert, 100, -60, 7200).await);
    assert_eq!(
        s.hash(&inv.concert_key(concert)).await,
        Some([400, 400, 0, 0]),
        "schedules count as they are created"
    );
    assert_eq!(
        s.hash(&inv.schedule_key(concert, b)).await,
        Some([100, 100, 0, 0])
    );

    // 400 parallel holds: two buyers on each of 150 seats of A (one wins each), one on each
    // of B's 100 seats.
    let buyers = s.buyers(400, concert).await;
    let results = join_all(buyers.iter().enumerate().map(|(i, buyer)| {
        let s = &s;
        async move {
            let (schedule, seat) = if i < 300 {
                (a, (i % 150) as i64 + 1)
            } else {
                (b, (i - 300) as i64 + 1)
            };
            let (status, body) = s.hold(buyer, schedule, [seat]).await;
            (i, status, body)
        }
    }))
    .await;
    let held: Vec<(usize, i64)> = results
        .iter()
        .filter(|r| r.1 == 201)
        .map(|r| (r.0, id_of(&r.2)))
        .collect();
    assert_eq!(held.len(), 250);
    assert_eq!(results.iter().filter(|r| r.1 == 409).count(), 150);
    assert_eq!(
        assert_inventory_exact(s, concert, &[a, b]).await,
        [400, 150, 250, 0]
    );

    // In parallel: 40 cancels, 60 sales, 20 rejected payments (paid by someone else).
    let (cancels, rest) = held.split_at(40);
    let (sales, rest) = rest.split_at(60);
    let (rejections, _) = rest.split_at(20);
    let now = s.clock.now();
    let cancelled = join_all(cancels.iter().map(|(i, id)| s.cancel(&buyers[*i], *id)));
    let sold = join_all(sales.iter().map(|(i, id)| {
        let event = s.payment(&buyers[*i], *id, 10_000 + id, now);
        async move { s.settle(&event).await }
    }));
    let rejected = join_all(rejections.iter().map(|(i, id)| {
        let event = s.payment(&buyers[(*i + 1) % buyers.len()], *id, 20_000 + id, now);
        async move { s.settle(&event).await }
    }));
    let (cancelled, sold, rejected) = tokio::join!(cancelled, sold, rejected);
    assert!(cancelled.iter().all(|c| *c == 200));
    assert!(sold.iter().all(|v| v["verdict"] == "CONFIRMED"), "{sold:?}");
    assert!(rejected.iter().all(|v| v["verdict"] == "REJECTED"));
    assert_eq!(
        assert_inventory_exact(s, concert, &[a, b]).await,
        [400, 210, 130, 60]
    );

    // Every hold left dies. 50 of its seats are taken over by new holds in parallel
    // (the dead holds' seats stay HELD, for their new holders), then the sweep frees the rest.
    s.clock.advance(hold + grace + Duration::from_secs(1));
    let dead: Vec<i64> = held[120..].iter().map(|(i, _)| *i as i64).collect();
    let takers = &buyers[..50];
    let taken = join_all(takers.iter().zip(&dead).map(|(buyer, i)| {
        let (schedule, seat) = if *i < 300 {
            (a, i % 150 + 1)
        } else {
            (b, i - 300 + 1)
        };
        async move { s.hold(buyer, schedule, [seat]).await.0 }
    }))
    .await;
    assert!(taken.iter().all(|st| *st == 201), "{taken:?}");
    assert_eq!(
        assert_inventory_exact(s, concert, &[a, b]).await,
        [400, 210, 130, 60],
        "a takeover moves no count"
    );
    let sweep = concert_api::expire_holds(&s.db, &inv, s.clock.now(), grace)
        .await
        .unwrap();
    assert_eq!(sweep.seats_freed, 80);
    assert_eq!(
        assert_inventory_exact(s, concert, &[a, b]).await,
        [400, 290, 50, 60]
    );

    // Lost, or wrong: a resync rewrites both from one count of the database.
    s.forget(&[inv.concert_key(concert)]).await;
    let _: () = redis::cmd("HSET")
        .arg(inv.schedule_key(concert, a))
        .arg(&["available", "9999", "held", "-3"])
        .query_async(&mut s.redis().conn())
        .await
        .unwrap();
    assert!(
        concert_api::resync_inventory(&s.db, &s.redis(), concert)
            .await
            .unwrap()
    );
    assert_eq!(
        assert_inventory_exact(s, concert, &[a, b]).await,
        [400, 290, 50, 60]
    );
}

#[tokio::test]
async fn a_missing_hash_is_never_created_by_a_change_and_the_service_resyncs_it_on_its_timer() {
    let s = spawn_app().await;
    let inv = s.inventory();
    let (concert, schedule) = s.concert_with_schedule(20, -60, 3600).await;
    let buyers = s.buyers(3, concert).await;
    s.forget(&[inv.concert_key(concert)]).await;
    assert_eq!(s.hold(&buyers[0], schedule, [1]).await.0, 201);
    // The schedule's hash still exists and moved; the concert's stays unknown until the
    // resync: a change alone would have made a hash of deltas (held 1, available -1).
    assert_eq!(
        s.hash(&inv.schedule_key(concert, schedule)).await,
        Some([20, 19, 1, 0])
    );
    let deleted = s.hash(&inv.concert_key(concert)).await;
    assert!(
        deleted.is_none() || deleted == Some([20, 19, 1, 0]),
        "{deleted:?}"
    );
    // concert-api's own timer (INVENTORY_RESYNC_MS, 5 s by default) brings it back.
    common::testkit::eventually("the periodic resync", Duration::from_secs(30), || {
        let (s, key) = (&s, inv.concert_key(concert));
        async move { (s.hash(&key).await == Some([20, 19, 1, 0])).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn between_full_passes_the_resync_counts_only_the_concerts_changed_or_gone_back() {
    use concert_api::store::inventory::{Reach, live_concerts};
    use sea_orm::ConnectionTrait;
    let s = spawn_app().await;
    let (touched, schedule) = s.concert_with_schedule(20, -60, 3600).await;
    let (untouched, _) = s.concert_with_schedule(20, -60, 3600).await;
    let buyers = s.buyers(1, touched).await;
    // Neither is new any more; only `touched` changes now.
    s.db.execute_unprepared("UPDATE concerts SET created_at = now() - interval '1 hour'")
        .await
        .unwrap();
    assert_eq!(s.hold(&buyers[0], schedule, [1]).await.0, 201);
    let within = |secs| Reach::ChangedWithin(Duration::from_secs(secs));
    assert_eq!(live_concerts(&s.db, within(60)).await.unwrap(), [touched]);
    assert_eq!(
        live_concerts(&s.db, Reach::Live).await.unwrap(),
        [touched.min(untouched), touched.max(untouched)],
        "a full pass counts every concert still to come"
    );
    // A change older than the window is left to the next full pass.
    s.db.execute_unprepared("UPDATE reservations SET updated_at = now() - interval '2 minutes'")
        .await
        .unwrap();
    assert!(live_concerts(&s.db, within(60)).await.unwrap().is_empty());
    // But a live concert whose hash is gone (Redis lost it) is counted by every pass.
    let inv = s.inventory();
    s.forget(&[inv.concert_key(untouched)]).await;
    assert_eq!(inv.resync_all(&s.db, within(60)).await.unwrap(), 1);
    assert_eq!(
        s.hash(&inv.concert_key(untouched)).await,
        Some([20, 20, 0, 0])
    );
    // Nothing changed since: nothing is counted.
    assert_eq!(inv.resync_all(&s.db, within(60)).await.unwrap(), 0);
    // Redis goes back in time under `untouched` (restored from an older copy): its hash is
    // there but older, and so is its sequence. Nothing changed in the database, yet the next
    // pass counts it (this one, or the service's own timer if it looks first).
    let seq_key = format!("{}:seq", inv.concert_key(untouched));
    let mut redis = s.redis().conn();
    let seq: i64 = redis::cmd("GET")
        .arg(&seq_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::pipe()
        .set(&seq_key, seq - 1)
        .hset(inv.concert_key(untouched), "available", 7)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(inv.resync_all(&s.db, within(60)).await.unwrap() <= 1);
    assert_eq!(
        s.hash(&inv.concert_key(untouched)).await,
        Some([20, 20, 0, 0]),
        "a hash older than the one last seen is counted again"
    );
    // A new concert is counted at once, changed or not.
    let (fresh, _) = s.concert_with_schedule(20, -60, 3600).await;
    assert_eq!(live_concerts(&s.db, within(60)).await.unwrap(), [fresh]);
}

/// Holds `seat` of `schedule` for `buyer`; the status and the problem's code.
async fn try_hold(s: &Spawned, buyer: &Buyer, schedule: i64, seat: i64) -> (u16, Value) {
    let (status, body) = s.hold(buyer, schedule, [seat]).await;
    (status, body)
}

async fn patch_limit(s: &Spawned, concert: i64, token: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .patch(s.url(&format!("/api/admin/concerts/{concert}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn twelve_parallel_holds_by_one_buyer_across_two_schedules_with_limit_2_make_exactly_2() {
    let s = spawn_app().await;
    let (hold, grace) = (s.config.reservation.hold, s.config.reservation.grace);
    let concert = id_of(&s.concert(json!({"max_tickets_per_user": 2})).await);
    assert_eq!(
        s.concert(json!({})).await["max_tickets_per_user"],
        4,
        "default"
    );
    let a = id_of(&s.schedule(concert, 100, -60, 3600).await);
    let b = id_of(&s.schedule(concert, 100, -60, 7200).await);
    let shown: Value = reqwest::get(s.url(&format!("/api/concerts/{concert}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["max_tickets_per_user"], 2);
    let buyer = s.buyers(1, concert).await.remove(0);

    let answers = join_all((0..12).map(|i| {
        let schedule = if i % 2 == 0 { a } else { b };
        try_hold(&s, &buyer, schedule, i + 1)
    }))
    .await;
    let won: Vec<i64> = answers
        .iter()
        .filter(|(st, _)| *st == 201)
        .map(|(_, b)| id_of(b))
        .collect();
    assert_eq!(won.len(), 2, "{answers:?}");
    for (status, p) in answers.iter().filter(|(st, _)| *st != 201) {
        assert_eq!((*status, p["code"].as_str()), (409, Some("PURCHASE_LIMIT")));
        assert_eq!(p["remaining"], 0);
        assert!(p["detail"].as_str().unwrap().contains("0 more"), "{p}");
    }
    let live = format!(
        "SELECT coalesce(sum(cardinality(seat_nos)), 0)::bigint AS n FROM reservations \
         WHERE user_id = {} AND status IN ('HELD', 'CONFIRMED')",
        buyer.user_id
    );
    assert_eq!(s.count(&live).await, 2);

    // A cancelled seat no longer counts: one more may be held, and then none.
    assert_eq!(s.cancel(&buyer, won[0]).await, 200);
    let (status, p) = s.hold(&buyer, a, [40, 41]).await;
    assert_eq!((status, p["remaining"].as_i64()), (409, Some(1)), "{p}");
    let answers = join_all((0..50).map(|i| try_hold(&s, &buyer, b, 20 + i))).await;
    assert_eq!(answers.iter().filter(|(st, _)| *st == 201).count(), 1);
    assert_eq!(s.count(&live).await, 2);

    // A sold seat counts; a rejected one does not.
    let now = s.clock.now();
    let newest_hold = s
        .count(&format!(
            "SELECT max(id) AS n FROM reservations WHERE user_id = {} AND status = 'HELD'",
            buyer.user_id
        ))
        .await;
    let other_payer = Buyer {
        user_id: buyer.user_id + 100_000,
        ..buyer.clone()
    };
    let verdict = s
        .settle(&s.payment(&other_payer, newest_hold, 777, now))
        .await;
    assert_eq!(verdict["verdict"], "REJECTED");
    assert_eq!(s.count(&live).await, 1, "the rejected hold is over");
    let (status, p) = s.hold(&buyer, b, [90]).await;
    assert_eq!(status, 201, "{p}");
    let verdict = s.settle(&s.payment(&buyer, id_of(&p), 778, now)).await;
    assert_eq!(verdict["verdict"], "CONFIRMED");
    assert_eq!(s.hold(&buyer, a, [46]).await.0, 409, "a sold seat counts");

    // Lowering the limit below what the buyer has refuses further holds and touches none.
    let before = s
        .count("SELECT count(*)::bigint AS n FROM reservations WHERE status = 'HELD'")
        .await;
    let (status, c) = patch_limit(&s, concert, &s.admin, json!({"max_tickets_per_user": 1})).await;
    assert_eq!((status, c["max_tickets_per_user"].as_i64()), (200, Some(1)));
    let (status, p) = s.hold(&buyer, a, [47]).await;
    assert_eq!(
        (status, p["code"].as_str(), p["remaining"].as_i64()),
        (409, Some("PURCHASE_LIMIT"), Some(0))
    );
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM reservations WHERE status = 'HELD'")
            .await,
        before,
        "existing holds untouched"
    );
    assert_eq!(s.count(&live).await, 2);

    // An expired hold no longer counts (even before the sweep): the CONFIRMED seat is left.
    patch_limit(&s, concert, &s.admin, json!({"max_tickets_per_user": 2})).await;
    s.clock.advance(hold + grace + Duration::from_secs(1));
    assert_eq!(s.hold(&buyer, a, [48]).await.0, 201);
    assert_eq!(s.hold(&buyer, a, [49]).await.0, 409);
}

#[tokio::test]
async fn hundreds_of_parallel_holds_by_one_buyer_never_pass_the_limit() {
    let s = spawn_app().await;
    let concert = id_of(&s.concert(json!({"max_tickets_per_user": 5})).await);
    let schedules = [
        id_of(&s.schedule(concert, 1000, -60, 3600).await),
        id_of(&s.schedule(concert, 1000, -60, 7200).await),
    ];
    let buyers = s.buyers(3, concert).await;
    // Each buyer sends 100 holds of 1 or 2 seats over both schedules, all at once.
    let answers = join_all(buyers.iter().enumerate().flat_map(|(u, buyer)| {
        let s = &s;
        (0..100i64).map(move |i| async move {
            let schedule = schedules[(i % 2) as usize];
            let first = (u as i64) * 130 + i + 1;
            let seats: Vec<i64> = if i % 3 == 0 {
                vec![first, first + 500]
            } else {
                vec![first]
            };
            s.hold(buyer, schedule, seats).await.0
        })
    }))
    .await;
    assert!(
        answers.iter().all(|st| *st == 201 || *st == 409),
        "{answers:?}"
    );
    let won = answers.iter().filter(|st| **st == 201).count() as i64;
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM reservations")
            .await,
        won
    );
    for buyer in &buyers {
        let seats = s
            .count(&format!(
                "SELECT coalesce(sum(cardinality(seat_nos)), 0)::bigint AS n FROM reservations \
                 WHERE user_id = {} AND status = 'HELD'",
                buyer.user_id
            ))
            .await;
        assert!(
            (4..=5).contains(&seats),
            "buyer {}: {seats} seats",
            buyer.user_id
        );
    }
}

#[tokio::test]
async fn a_retried_hold_with_the_same_key_makes_one_reservation_and_replays_its_answer() {
    let s = spawn_app().await;
    let (concert, schedule) = s.concert_with_schedule(50, -60, 3600).await;
    let buyers = s.buyers(2, concert).await;
    let buyer = &buyers[0];

    // 100 copies of one keyed hold at once: one reservation, and every answer is its 201.
    let answers = join_all((0..100).map(|_| s.hold_keyed(buyer, "hold-1", schedule, [7, 3]))).await;
    let first = answers[0].1.clone();
    assert_eq!(answers[0].0, 201, "{first}");
    assert!(
        answers.iter().all(|a| a == &(201, first.clone())),
        "{answers:?}"
    );
    assert_eq!(
        s.count(&format!(
            "SELECT count(*)::bigint AS n FROM reservations WHERE user_id = {}",
            buyer.user_id
        ))
        .await,
        1
    );

    // A retry afterwards, seats in another order: the same 201 — even with no pass at all.
    assert_eq!(
        s.hold_keyed(buyer, "hold-1", schedule, [3, 7]).await,
        (201, first.clone())
    );
    let no_pass = Buyer {
        pass: "0.not-a-pass".into(),
        ..buyer.clone()
    };
    assert_eq!(
        s.hold_keyed(&no_pass, "hold-1", schedule, [3, 7]).await,
        (201, first.clone())
    );
    // Another hold under the same key: 422, nothing held.
    let (status, p) = s.hold_keyed(buyer, "hold-1", schedule, [8]).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (422, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    // Keys are per user: another buyer's "hold-1" is its own.
    let (status, other) = s.hold_keyed(&buyers[1], "hold-1", schedule, [8]).await;
    assert_eq!(status, 201, "{other}");
    // A refusal decided under the key is kept too: seat 8 is taken, and stays "taken" for
    // this key after it is freed.
    let (status, refused) = s.hold_keyed(buyer, "hold-2", schedule, [8]).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("SEAT_UNAVAILABLE"))
    );
    assert_eq!(s.cancel(&buyers[1], id_of(&other)).await, 200);
    assert_eq!(
        s.hold_keyed(buyer, "hold-2", schedule, [8]).await,
        (409, refused)
    );
    // A malformed key is 400 and holds nothing.
    for bad in ["x".repeat(65), "has space".to_owned()] {
        let (status, p) = s.hold_keyed(buyer, &bad, schedule, [9]).await;
        assert_eq!(status, 400, "{bad}");
        assert!(p["detail"].as_str().unwrap().contains("Idempotency-Key"));
    }
    assert_eq!(
        s.count(&format!(
            "SELECT count(*)::bigint AS n FROM reservations WHERE user_id = {}",
            buyer.user_id
        ))
        .await,
        1
    );
}

async fn sale(s: &Spawned, concert: i64, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(s.url(&format!("/api/admin/concerts/{concert}/sale")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn the_sale_view_shows_seats_reservations_revenue_and_the_last_minute() {
    let s = spawn_app().await;
    let (concert, a) = s.concert_with_schedule(100, -60, 3600).await;
    let b = id_of(&s.schedule(concert, 50, -60, 7200).await);
    let buyers = s.buyers(200, concert).await;
    // 200 parallel holds on 120 distinct seats: 120 win.
    let answers = join_all(buyers.iter().enumerate().map(|(i, buyer)| {
        let (schedule, seat) = if i % 200 < 160 {
            (a, (i % 80) as i64 + 1)
        } else {
            (b, (i - 160) as i64 + 1)
        };
        let s = &s;
        async move { (i, s.hold(buyer, schedule, [seat]).await) }
    }))
    .await;
    let held: Vec<(usize, i64)> = answers
        .iter()
        .filter(|(_, (st, _))| *st == 201)
        .map(|(i, (_, b))| (*i, id_of(b)))
        .collect();
    assert_eq!(held.len(), 120);
    let now = s.clock.now();
    for (i, id) in &held[..10] {
        assert_eq!(
            s.settle(&s.payment(&buyers[*i], *id, 50_000 + id, now))
                .await["verdict"],
            "CONFIRMED"
        );
    }
    for (i, id) in &held[10..15] {
        assert_eq!(s.cancel(&buyers[*i], *id).await, 200);
    }
    for (i, id) in &held[15..17] {
        let payer = &buyers[(*i + 1) % buyers.len()];
        assert_eq!(
            s.settle(&s.payment(payer, *id, 60_000 + id, now)).await["verdict"],
            "REJECTED"
        );
    }

    let (status, v) = sale(&s, concert, Some(&s.admin)).await;
    assert_eq!(status, 200, "{v}");
    let [total, available, held_seats, sold] = s.counted(concert).await;
    assert_eq!(
        (
            v["seats_total"].as_i64(),
            v["available"].as_i64(),
            v["held"].as_i64(),
            v["sold"].as_i64()
        ),
        (Some(total), Some(available), Some(held_seats), Some(sold))
    );
    assert_eq!((total, available, held_seats, sold), (150, 37, 103, 10));
    assert_eq!(v["revenue"], 10 * 1000);
    assert_eq!(
        v["reservations"],
        json!({"held": 103, "confirmed": 10, "expired": 0, "cancelled": 5, "rejected": 2})
    );
    assert_eq!(v["holds_per_minute"], 120);
    assert_eq!(v["sold_per_minute"], 10);
    let schedules = v["schedules"].as_array().unwrap();
    assert_eq!(schedules.len(), 2);
    assert_eq!(schedules[0]["id"], a);
    assert_eq!(schedules[1]["id"], b);
    assert_eq!(
        schedules[0]["seats_total"].as_i64().unwrap()
            + schedules[1]["seats_total"].as_i64().unwrap(),
        150
    );
    assert_eq!(
        schedules[0]["held"].as_i64().unwrap() + schedules[1]["held"].as_i64().unwrap(),
        103
    );

    // Without its hashes (never synced, or lost), it counts once and answers the same.
    let inv = s.inventory();
    s.forget(&[inv.concert_key(concert), inv.schedule_key(concert, a)])
        .await;
    assert_eq!(sale(&s, concert, Some(&s.admin)).await, (200, v.clone()));
    assert!(
        s.hash(&inv.concert_key(concert)).await.is_some(),
        "written back"
    );

    // Admins only.
    assert_eq!(sale(&s, concert, None).await.0, 401);
    let (status, p) = sale(&s, concert, Some(&buyers[0].session)).await;
    assert_eq!((status, p["code"].as_str()), (403, Some("FORBIDDEN")));
    let (status, p) = sale(&s, 999_999, Some(&s.admin)).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (404, Some("CONCERT_NOT_FOUND"))
    );
}

/// However many organisers watch a sale, each concert's reservation figures are read once per
/// `SALE_VIEW_CACHE_MS`; the seat counts, from the inventory, are exact at every poll.
#[tokio::test]
async fn organisers_polling_together_cost_one_read_of_the_figures() {
    let s = spawn_app_with(|c| c.sale_view_cache = Duration::from_secs(600)).await;
    let (concert, schedule) = s.concert_with_schedule(10, -60, 3600).await;
    let reads = || async {
        s.figure("sale_view_figures_reads_total")
            .await
            .expect("exported")
    };
    let before = reads().await;

    let polls = join_all((0..50).map(|_| sale(&s, concert, Some(&s.admin)))).await;
    assert!(polls.iter().all(|p| *p == polls[0]), "{:?}", polls[0]);
    assert_eq!(polls[0].0, 200, "{}", polls[0].1);
    assert_eq!(reads().await - before, 1.0, "50 polls, one read");

    let buyer = &s.buyers(1, concert).await[0];
    assert_eq!(s.hold(buyer, schedule, [1]).await.0, 201);
    let (_, v) = sale(&s, concert, Some(&s.admin)).await;
    assert_eq!(
        (v["available"].as_i64(), v["held"].as_i64()),
        (Some(9), Some(1))
    );
    assert_eq!(
        v["reservations"]["held"], 0,
        "the reservations as read before the hold"
    );
    assert_eq!(reads().await - before, 1.0);

    // Each concert has its own figures.
    let (other, _) = s.concert_with_schedule(5, -60, 3600).await;
    assert_eq!(sale(&s, other, Some(&s.admin)).await.1["available"], 5);
    assert_eq!(reads().await - before, 2.0);
}

/// With `SALE_VIEW_CACHE_MS=0` every poll reads the figures: a hold shows at once.
#[tokio::test]
async fn without_the_cache_every_poll_reads_the_figures() {
    let s = spawn_app_with(|c| c.sale_view_cache = Duration::ZERO).await;
    let (concert, schedule) = s.concert_with_schedule(10, -60, 3600).await;
    assert_eq!(
        sale(&s, concert, Some(&s.admin)).await.1["reservations"]["held"],
        0
    );
    let buyer = &s.buyers(1, concert).await[0];
    assert_eq!(s.hold(buyer, schedule, [1]).await.0, 201);
    assert_eq!(
        sale(&s, concert, Some(&s.admin)).await.1["reservations"]["held"],
        1
    );
}

/// actor id, actor username, action, target, before, after, written in the last minute.
type AuditRow = (
    i64,
    String,
    String,
    String,
    Option<Value>,
    Option<Value>,
    bool,
);

#[tokio::test]
async fn every_admin_change_is_one_audit_row_with_who_what_and_before_and_after() {
    use sea_orm::{ConnectionTrait, Statement};
    let s = spawn_app().await;
    let concert = id_of(&s.concert(json!({"max_tickets_per_user": 3})).await);
    let schedule = id_of(&s.schedule(concert, 10, -60, 3600).await);
    let (status, c) = patch_limit(&s, concert, &s.admin, json!({"max_tickets_per_user": 6})).await;
    assert_eq!((status, c["max_tickets_per_user"].as_i64()), (200, Some(6)));

    let rows =
        s.db.query_all_raw(Statement::from_string(
            s.db.get_database_backend(),
            "SELECT actor_id, actor_username, action, target, before, after, \
                    (at > now() - interval '1 minute') AS recent \
             FROM admin_audit ORDER BY id",
        ))
        .await
        .unwrap();
    let rows: Vec<AuditRow> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "actor_id").unwrap(),
                r.try_get("", "actor_username").unwrap(),
                r.try_get("", "action").unwrap(),
                r.try_get("", "target").unwrap(),
                r.try_get("", "before").unwrap(),
                r.try_get("", "after").unwrap(),
                r.try_get("", "recent").unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.0 == 1 && r.1 == "admin" && r.6));
    assert_eq!(
        (rows[0].2.as_str(), rows[0].3.clone(), rows[0].4.clone()),
        ("concert.create", format!("concert:{concert}"), None)
    );
    assert_eq!(rows[0].5.as_ref().unwrap()["max_tickets_per_user"], 3);
    assert_eq!(
        (rows[1].2.as_str(), rows[1].3.clone()),
        ("schedule.create", format!("schedule:{schedule}"))
    );
    assert_eq!(rows[1].5.as_ref().unwrap()["seat_count"], 10);
    assert_eq!(
        (rows[2].2.as_str(), rows[2].3.clone()),
        ("concert.update", format!("concert:{concert}"))
    );
    assert_eq!(rows[2].4.as_ref().unwrap()["max_tickets_per_user"], 3);
    assert_eq!(rows[2].5.as_ref().unwrap()["max_tickets_per_user"], 6);
    assert_eq!(
        rows[2].4.as_ref().unwrap()["title"],
        rows[2].5.as_ref().unwrap()["title"]
    );

    // Refused changes write nothing: bad bodies (naming the field), users, anonymous
    // callers, unknown concerts.
    for (body, field) in [
        (json!({}), "max_tickets_per_user"),
        (json!({"max_tickets_per_user": 0}), "max_tickets_per_user"),
        (json!({"max_tickets_per_user": 21}), "max_tickets_per_user"),
    ] {
        let (status, p) = patch_limit(&s, concert, &s.admin, body).await;
        assert_eq!(status, 400);
        assert!(p["detail"].as_str().unwrap().contains(field), "{p}");
    }
    let user = s.buyers(1, concert).await.remove(0);
    let ok = json!({"max_tickets_per_user": 2});
    assert_eq!(
        patch_limit(&s, concert, &user.session, ok.clone()).await.0,
        403
    );
    assert_eq!(
        patch_limit(&s, concert, "not-a-session", ok.clone())
            .await
            .0,
        401
    );
    let (status, p) = patch_limit(&s, 999_999, &s.admin, ok).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (404, Some("CONCERT_NOT_FOUND"))
    );
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM admin_audit")
            .await,
        3
    );
    let res = reqwest::Client::new()
        .post(s.url("/api/admin/concerts"))
        .bearer_auth(&s.admin)
        .json(&json!({"title": "T", "performer": "P", "max_tickets_per_user": 21}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn a_keyed_hold_waits_for_the_first_request_with_its_key_then_answers_in_use() {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
    let s = spawn_app().await;
    let (concert, schedule) = s.concert_with_schedule(10, -60, 3600).await;
    let buyer = s.buyers(1, concert).await.remove(0);
    // A first request with the key, still running: its claim is not committed.
    let first = s.db.begin().await.unwrap();
    first
        .execute_raw(Statement::from_string(
            s.db.get_database_backend(),
            format!(
                "INSERT INTO idempotency_keys (user_id, key, request_hash) \
                 VALUES ({}, 'busy', 'hold:{schedule}:1')",
                buyer.user_id
            ),
        ))
        .await
        .unwrap();
    let res = reqwest::Client::new()
        .post(s.url("/api/reservations"))
        .bearer_auth(&buyer.session)
        .header("x-queue-token", &buyer.pass)
        .header("idempotency-key", "busy")
        .json(&json!({"schedule_id": schedule, "seat_nos": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["code"], "IDEMPOTENCY_KEY_IN_USE");
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM reservations")
            .await,
        0
    );
    // The first request failed (rolled back): the key is free, and the retry holds.
    first.rollback().await.unwrap();
    let (status, held) = s.hold_keyed(&buyer, "busy", schedule, [1]).await;
    assert_eq!(status, 201, "{held}");
    assert_eq!(
        s.hold_keyed(&buyer, "busy", schedule, [1]).await,
        (201, held)
    );
}
