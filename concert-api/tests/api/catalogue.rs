//! Admin writes, public lists with cursors and cache invalidation, the seat map's guard.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use concert_api::store::cache::CatalogueCache;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn only_admins_create_and_bad_bodies_name_the_field() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let buyer = s.buyers(1, 1).await.remove(0);
    let body = json!({"title": "T", "performer": "P"});
    let res = c
        .post(s.url("/api/admin/concerts"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = c
        .post(s.url("/api/admin/concerts"))
        .bearer_auth(&buyer.session)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            res.status().as_u16(),
            res.json::<Value>().await.unwrap()["code"].clone()
        ),
        (403, json!("FORBIDDEN"))
    );

    for (body, field) in [
        (json!({"performer": "P"}), "title"),
        (json!({"title": "", "performer": "P"}), "title"),
        (
            json!({"title": "T", "performer": "x".repeat(201)}),
            "performer",
        ),
    ] {
        let res = c
            .post(s.url("/api/admin/concerts"))
            .bearer_auth(&s.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        assert!(
            res.json::<Value>().await.unwrap()["detail"]
                .as_str()
                .unwrap()
                .contains(field)
        );
    }
    let (concert, _) = s.concert_with_schedule(10, -60, 3600).await;
    let now = s.clock.now();
    for (body, field) in [
        (
            json!({"starts_at": now, "booking_opens_at": now, "seat_count": 0, "price": 1}),
            "seat_count",
        ),
        (
            json!({"starts_at": now, "booking_opens_at": now, "seat_count": 1001, "price": 1}),
            "seat_count",
        ),
        (
            json!({"starts_at": now, "booking_opens_at": now, "seat_count": 10, "price": 0}),
            "price",
        ),
        (
            json!({"starts_at": "tomorrow", "booking_opens_at": now, "seat_count": 10, "price": 5}),
            "starts_at",
        ),
        (
            json!({"starts_at": now, "booking_opens_at": now + chrono::Duration::hours(1), "seat_count": 10, "price": 5}),
            "booking_opens_at",
        ),
    ] {
        let res = c
            .post(s.url(&format!("/api/admin/concerts/{concert}/schedules")))
            .bearer_auth(&s.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body}");
        assert!(
            res.json::<Value>().await.unwrap()["detail"]
                .as_str()
                .unwrap()
                .contains(field),
            "{field}"
        );
    }
    let res = c
        .post(s.url("/api/admin/concerts/999999/schedules"))
        .bearer_auth(&s.admin)
        .json(&json!({"starts_at": now, "booking_opens_at": now, "seat_count": 10, "price": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "CONCERT_NOT_FOUND"
    );
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM schedules").await,
        1,
        "only the valid schedule exists"
    );
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM seats").await,
        10,
        "its seats were created in bulk"
    );
}

#[tokio::test]
async fn lists_paginate_with_cursors_and_see_admin_writes_at_once() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let get = |path: String| {
        let c = c.clone();
        async move {
            let res = c.get(path).send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    for _ in 0..5 {
        s.concert_with_schedule(5, -60, 3600).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor
            .as_ref()
            .map_or(String::new(), |c| format!("&cursor={c}"));
        let (status, page) = get(s.url(&format!("/api/concerts?limit=2{q}"))).await;
        assert_eq!(status, 200);
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // Cached, yet a new concert shows up immediately: admin writes invalidate.
    let (_, before) = get(s.url("/api/concerts?limit=100")).await;
    s.concert_with_schedule(5, -60, 3600).await;
    let (_, after) = get(s.url("/api/concerts?limit=100")).await;
    assert_eq!(
        after["items"].as_array().unwrap().len(),
        before["items"].as_array().unwrap().len() + 1
    );

    assert_eq!(get(s.url("/api/concerts?limit=0")).await.0, 400);
    assert_eq!(get(s.url("/api/concerts?limit=abc")).await.0, 400);
    assert_eq!(get(s.url("/api/concerts?cursor=garbage")).await.0, 400);
    let (status, p) = get(s.url("/api/concerts/999999")).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (404, Some("CONCERT_NOT_FOUND"))
    );
    assert_eq!(get(s.url("/api/concerts/999999/schedules")).await.0, 404);
}

#[tokio::test]
async fn available_schedules_are_future_open_and_not_sold_out() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let (concert, open) = s.concert_with_schedule(2, -60, 3600).await;
    let not_yet_open = s.schedule(concert, 2, 600, 7200).await["id"]
        .as_i64()
        .unwrap();
    let started = s.schedule(concert, 2, -7200, -60).await["id"]
        .as_i64()
        .unwrap();
    let full = s.schedule(concert, 1, -60, 5400).await["id"]
        .as_i64()
        .unwrap();
    let buyer = s.buyers(1, concert).await.remove(0);
    assert_eq!(s.hold(&buyer, full, &[1]).await.0, 201);

    let ids = |v: Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let all: Value = c
        .get(s.url(&format!("/api/concerts/{concert}/schedules?limit=100")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ids(all.clone()),
        vec![started, open, full, not_yet_open],
        "ordered by start time"
    );
    let available: Value = c
        .get(s.url(&format!("/api/concerts/{concert}/schedules?available=true")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(available.clone()), vec![open]);
    assert_eq!(available["items"][0]["available_seats"], 2);
    assert_eq!(available["items"][0]["seat_count"], 2);
}

#[tokio::test]
async fn the_seat_map_needs_an_active_pass_for_that_concert() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let (concert, schedule) = s.concert_with_schedule(50, -60, 3600).await;
    let (other_concert, _) = s.concert_with_schedule(5, -60, 3600).await;
    let buyer = s.buyers(1, concert).await.remove(0);
    let elsewhere = s.buyers(1, other_concert).await.remove(0);
    let url = s.url(&format!("/api/schedules/{schedule}/seats"));

    let res = c
        .get(&url)
        .bearer_auth(&buyer.session)
        .header("x-queue-token", &buyer.pass)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let map: Value = res.json().await.unwrap();
    assert_eq!(map["schedule_id"], schedule);
    assert_eq!(map["seats"].as_array().unwrap().len(), 50);
    assert!(
        map["seats"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "AVAILABLE" && s["price"] == 1000)
    );

    for (req, why) in [
        (c.get(&url).bearer_auth(&buyer.session), "missing"),
        (
            c.get(&url)
                .bearer_auth(&buyer.session)
                .header("x-queue-token", "1.bogus"),
            "malformed",
        ),
        (
            c.get(&url)
                .bearer_auth(&elsewhere.session)
                .header("x-queue-token", &elsewhere.pass),
            "another concert",
        ),
        (
            c.get(&url)
                .bearer_auth(&elsewhere.session)
                .header("x-queue-token", &buyer.pass),
            "another user",
        ),
    ] {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{why}");
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["code"], "QUEUE_TOKEN_INVALID", "{why}");
    }
    let res = c
        .get(s.url("/api/schedules/999999/seats"))
        .bearer_auth(&buyer.session)
        .header("x-queue-token", &buyer.pass)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "SCHEDULE_NOT_FOUND"
    );
}

#[tokio::test]
async fn a_seat_map_read_a_moment_ago_shows_holds_made_here_at_once_and_other_news_within_its_freshness()
 {
    let s = spawn_app().await;
    let (concert, schedule) = s.concert_with_schedule(10, -60, 3600).await;
    let buyers = s.buyers(2, concert).await;
    let held = |map: &Value| -> Vec<i64> {
        map["seats"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["status"] != "AVAILABLE")
            .map(|x| x["seat_no"].as_i64().unwrap())
            .collect()
    };
    let map = || async {
        let res = reqwest::Client::new()
            .get(s.url(&format!("/api/schedules/{schedule}/seats")))
            .bearer_auth(&buyers[0].session)
            .header("x-queue-token", &buyers[0].pass)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()
    };
    assert_eq!(held(&map().await), Vec::<i64>::new());

    // Held through this process just after the map was read: shown at once.
    assert_eq!(s.hold(&buyers[1], schedule, &[2, 3]).await.0, 201);
    assert_eq!(held(&map().await), vec![2, 3]);

    // Seat 3 released and seat 9 sold where this process cannot see it (by hand here; in
    // life the sweep, another replica, a settlement): shown once the map it read is too old.
    s.db.execute_unprepared(&format!(
        "UPDATE seats SET status = 'AVAILABLE', reservation_id = NULL, held_until = NULL \
         WHERE schedule_id = {schedule} AND seat_no = 3;
         UPDATE seats SET status = 'SOLD', reservation_id = \
           (SELECT reservation_id FROM seats WHERE schedule_id = {schedule} AND seat_no = 2) \
         WHERE schedule_id = {schedule} AND seat_no = 9"
    ))
    .await
    .unwrap();
    s.clock.advance(std::time::Duration::from_millis(
        concert_api::store::seat_maps::FRESH_FOR.num_milliseconds() as u64 + 50,
    ));
    assert_eq!(held(&map().await), vec![2, 9]);
}

/// What `cache` answers for `what`, and whether it had to compute it.
async fn through(cache: &CatalogueCache, what: &str, fresh: &str) -> (String, bool) {
    let computed = AtomicU32::new(0);
    let body = cache
        .read_through(what, || async {
            computed.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::convert::Infallible>(fresh.to_owned())
        })
        .await
        .unwrap();
    (body, computed.load(Ordering::Relaxed) == 1)
}

#[tokio::test]
async fn a_process_serves_its_own_copy_while_the_version_stands_and_sees_a_write_anywhere_at_once()
{
    let s = spawn_app().await;
    let ttl = Duration::from_millis(600);
    let (a, b) = (
        CatalogueCache::new(s.redis(), ttl),
        CatalogueCache::new(s.redis(), ttl),
    );
    assert_eq!(through(&a, "list", "one").await, ("one".into(), true));
    assert_eq!(
        through(&b, "list", "unused").await,
        ("one".into(), false),
        "another process reads what the first cached"
    );

    // The entry is changed behind the processes' backs, under the same version: a process
    // with a copy is not sent the entry again; one without reads it.
    let redis = s.redis();
    let mut conn = redis.conn();
    let version: String = redis::cmd("GET")
        .arg(redis.key("cache:{catalogue}:version"))
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|_| "0".into());
    let _: () = redis::cmd("SET")
        .arg(redis.key(&format!("cache:{{catalogue}}:{version}:list")))
        .arg("changed")
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(through(&b, "list", "unused").await, ("one".into(), false));
    let c = CatalogueCache::new(s.redis(), ttl);
    assert_eq!(
        through(&c, "list", "unused").await,
        ("changed".into(), false)
    );

    // A write through any process moves the version: every copy is stale at once.
    a.invalidate().await;
    assert_eq!(through(&b, "list", "two").await, ("two".into(), true));
    assert_eq!(through(&c, "list", "unused").await, ("two".into(), false));

    // A copy lives no longer than the entry it was read from.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(through(&c, "list", "three").await, ("three".into(), true));
}
