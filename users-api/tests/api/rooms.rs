//! The organiser's levers (DESIGN §10) against real Redis and PostgreSQL: pause and live
//! capacity, the pre-queue lottery, admission that follows the inventory, SOLD_OUT, the
//! public view and the admin audit.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use common::testkit::eventually;
use futures_util::future::join_all;
use hmac::{Hmac, Mac};
use reqwest::{Client, Method};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Spawned, frame_data, rest_of_stream, spawn_app, spawn_app_with};
use users_api::domain::queue::Verdict;

/// Fans' user ids start here.
const FANS: i64 = 20_000;

/// `GET` the organiser's view of a concert's waiting room.
async fn get_room(c: &Client, s: &Spawned, session: Option<&str>, concert: i64) -> (u16, Value) {
    let path = format!("/api/admin/queue/concerts/{concert}");
    s.call(c, Method::GET, &path, session, None).await
}

/// `PATCH` the organiser's levers of a concert's waiting room.
async fn patch_room(
    c: &Client,
    s: &Spawned,
    session: Option<&str>,
    concert: i64,
    body: Value,
) -> (u16, Value) {
    let path = format!("/api/admin/queue/concerts/{concert}");
    s.call(c, Method::PATCH, &path, session, Some(body)).await
}

/// `GET` the public view of a concert's waiting room, without a session.
async fn get_public(c: &Client, s: &Spawned, concert: i64) -> (u16, Value) {
    let path = format!("/api/queue/concerts/{concert}");
    s.call(c, Method::GET, &path, None, None).await
}

/// Writes concert-api's inventory hash for a concert, as the shared interface defines it.
async fn set_inventory(s: &Spawned, concert: i64, total: i64, available: i64, held: i64) {
    let keys = s.queue_keys();
    let mut conn = keys.redis().conn();
    let _: () = redis::cmd("HSET")
        .arg(keys.redis().key(&format!("inventory:{{c{concert}}}")))
        .arg("total")
        .arg(total)
        .arg("available")
        .arg(available)
        .arg("held")
        .arg(held)
        .arg("sold")
        .arg(total - available - held)
        .query_async(&mut conn)
        .await
        .unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn the_levers_refuse_anonymous_callers_and_users_and_check_what_they_are_given() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let user = s.fan_sessions(1, FANS).await.remove(0);
    let boss = s.admin_session().await;

    assert_eq!(get_room(&c, &s, None, 1).await.0, 401);
    assert_eq!(
        patch_room(&c, &s, None, 1, json!({"state": "PAUSED"}))
            .await
            .0,
        401
    );
    let (code, body) = get_room(&c, &s, Some(&user), 1).await;
    assert_eq!((code, body["code"].as_str()), (403, Some("FORBIDDEN")));
    let (code, _) = patch_room(&c, &s, Some(&user), 1, json!({"state": "PAUSED"})).await;
    assert_eq!(code, 403);

    let (code, body) = get_room(&c, &s, Some(&boss), 99).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("CONCERT_NOT_FOUND"))
    );
    let (code, _) = patch_room(&c, &s, Some(&boss), 99, json!({"state": "PAUSED"})).await;
    assert_eq!(code, 404);
    let (code, body) = get_public(&c, &s, 99).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("CONCERT_NOT_FOUND"))
    );

    for (body, field) in [
        (json!({"max_active": 0}), "max_active"),
        (json!({"admit_per_tick": 10_001}), "admit_per_tick"),
        (json!({"state": "SOLD_OUT"}), "state"),
        (json!({"sale_opens_at": "yesterday"}), "sale_opens_at"),
        (
            json!({"sale_opens_at": "2001-01-01T00:00:00Z"}),
            "sale_opens_at",
        ),
        (json!({"max_active": "many"}), "max_active"),
    ] {
        let (code, problem) = patch_room(&c, &s, Some(&boss), 1, body.clone()).await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(problem["code"], "INVALID_REQUEST");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{body}: {problem}"
        );
    }
    assert_eq!(patch_room(&c, &s, Some(&boss), 1, json!({})).await.0, 400);

    // None of that changed anything: the defaults are in effect.
    let (code, room) = get_room(&c, &s, Some(&boss), 1).await;
    assert_eq!(code, 200);
    assert_eq!(room["state"], "OPEN");
    assert_eq!(room["max_active"], s.config.queue.max_active);
    assert_eq!(room["admit_per_tick"], s.config.queue.admit_per_tick);
    assert_eq!(
        room["lottery"],
        json!({"commitment": null, "seed": null, "drawn_at": null})
    );
}

#[tokio::test]
async fn a_paused_room_admits_nobody_for_several_ticks_then_admits_in_order_and_capacity_applies_at_the_next_tick()
 {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_MAX_ACTIVE", "500")
            .with("QUEUE_ADMIT_PER_TICK", "100")
    })
    .await;
    let c = reqwest::Client::new();
    let boss = s.admin_session().await;
    let users = s.fan_sessions(150, FANS).await;
    let joined = join_all(users.iter().map(|t| s.join(&c, t, 1))).await;
    assert!(joined.iter().all(|(code, _)| *code == 201));
    let mut line: Vec<(i64, usize)> = joined
        .iter()
        .enumerate()
        .map(|(i, (_, b))| (b["position"].as_i64().unwrap(), i))
        .collect();
    line.sort();
    let token = |i: usize| joined[i].1["token"].as_str().unwrap().to_owned();

    let (code, room) = patch_room(&c, &s, Some(&boss), 1, json!({"state": "PAUSED"})).await;
    assert_eq!((code, room["state"].as_str()), (200, Some("PAUSED")));
    let room_api = s.room();
    for tick in 0..3 {
        let a = room_api.admit(1, s.clock.now()).await.unwrap();
        assert_eq!((a.admitted, a.waiting), (0, 150), "paused tick {tick}");
        s.clock.advance(Duration::from_secs(1));
    }
    // Joins and polls go on; positions froze.
    let late = s.fan_sessions(1, FANS + 150).await.remove(0);
    assert_eq!(s.join(&c, &late, 1).await.1["position"], 151);
    let polled = join_all(users.iter().enumerate().map(|(i, u)| {
        let (c, s, t) = (&c, &s, token(i));
        async move { (i, s.poll_ok(c, u, &t).await) }
    }))
    .await;
    for (i, status) in &polled {
        assert_eq!(status["status"], "WAITING");
        assert_eq!(status["position"], joined[*i].1["position"], "frozen");
        assert!(status["eta_seconds"].is_null(), "no estimate while paused");
    }

    // Resume with a smaller capacity: the next tick admits the first 40, in join order.
    let (code, room) = patch_room(
        &c,
        &s,
        Some(&boss),
        1,
        json!({"state": "OPEN", "max_active": 40}),
    )
    .await;
    assert_eq!((code, room["max_active"].as_u64()), (200, Some(40)));
    let a = room_api.admit(1, s.clock.now()).await.unwrap();
    assert_eq!((a.admitted, a.active, a.waiting), (40, 40, 111));
    for (rank, (_, i)) in line.iter().enumerate() {
        let st = s.poll_ok(&c, &users[*i], &token(*i)).await;
        let expected = if rank < 40 { "ACTIVE" } else { "WAITING" };
        assert_eq!(st["status"], expected, "rank {rank}");
    }

    // A per-tick change applies at the next tick too.
    patch_room(
        &c,
        &s,
        Some(&boss),
        1,
        json!({"max_active": 1000, "admit_per_tick": 7}),
    )
    .await;
    let a = room_api.admit(1, s.clock.now()).await.unwrap();
    assert_eq!(a.admitted, 7);
    for (rank, (_, i)) in line.iter().enumerate().skip(40).take(8) {
        let st = s.poll_ok(&c, &users[*i], &token(*i)).await;
        assert_eq!(st["status"], if rank < 47 { "ACTIVE" } else { "WAITING" });
    }
    let (_, room) = get_room(&c, &s, Some(&boss), 1).await;
    assert_eq!(room["admitted_total"], 47);
    assert_eq!(room["active"], 47);
    assert_eq!(room["waiting"], 104);
    assert_eq!(room["admit_per_tick"], 7);

    // Expired passes are counted.
    s.clock
        .advance(s.config.queue.active_ttl + Duration::from_secs(1));
    room_api.admit(1, s.clock.now()).await.unwrap();
    let (_, room) = get_room(&c, &s, Some(&boss), 1).await;
    assert_eq!(room["expired_total"], 47);
}

#[tokio::test]
async fn one_change_is_one_audit_row_with_before_and_after() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let boss = s.admin_session().await;
    let (code, _) = patch_room(
        &c,
        &s,
        Some(&boss),
        2,
        json!({"state": "PAUSED", "max_active": 12}),
    )
    .await;
    assert_eq!(code, 200);
    // Refused changes leave no row.
    patch_room(&c, &s, Some(&boss), 2, json!({"max_active": 0})).await;

    let rows = s
        .query("SELECT actor_id, actor_username, action, target, before, after FROM admin_audit")
        .await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.try_get::<i64>("", "actor_id").unwrap(), 7);
    assert_eq!(
        r.try_get::<String>("", "actor_username").unwrap(),
        "organiser"
    );
    assert_eq!(r.try_get::<String>("", "action").unwrap(), "queue.settings");
    assert_eq!(r.try_get::<String>("", "target").unwrap(), "concert:2");
    let before: Value = r.try_get("", "before").unwrap();
    let after: Value = r.try_get("", "after").unwrap();
    assert_eq!(
        before,
        json!({"state": "OPEN", "max_active": s.config.queue.max_active,
               "admit_per_tick": s.config.queue.admit_per_tick, "sale_opens_at": null})
    );
    assert_eq!(
        after,
        json!({"state": "PAUSED", "max_active": 12,
               "admit_per_tick": s.config.queue.admit_per_tick, "sale_opens_at": null})
    );

    // 200 organisers' changes at once: 200 rows whose before → after links form one chain
    // (each change saw exactly the one before it), ending at the room's setting.
    let changes = join_all(
        (1..=200).map(|n| patch_room(&c, &s, Some(&boss), 3, json!({"max_active": 1000 + n}))),
    )
    .await;
    assert!(changes.iter().all(|(code, _)| *code == 200));
    let rows = s
        .query(
            "SELECT (before->>'max_active')::bigint AS b, (after->>'max_active')::bigint AS a \
             FROM admin_audit WHERE target = 'concert:3'",
        )
        .await;
    assert_eq!(rows.len(), 200);
    let links: std::collections::HashMap<i64, i64> = rows
        .iter()
        .map(|r| (r.try_get("", "b").unwrap(), r.try_get("", "a").unwrap()))
        .collect();
    assert_eq!(links.len(), 200, "no two changes saw the same before");
    let mut at = i64::from(s.config.queue.max_active);
    for _ in 0..200 {
        at = links[&at];
    }
    let (_, room) = get_room(&c, &s, Some(&boss), 3).await;
    assert_eq!(
        room["max_active"], at,
        "the chain ends at the room's setting"
    );
}

/// The pre-queue and its lottery, end to end: commitment before, 200 parallel pre-queue
/// joins, lapsed fans left out, two racing admission ticks drawing once, the first
/// `max_active` of the HMAC order admitted and the rest in line in that order, the seed
/// published and matching, later arrivals behind, and the opening frozen after the draw.
#[tokio::test]
async fn the_draw_admits_the_first_of_the_hmac_order_and_lines_up_the_rest_behind_in_that_order() {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_MAX_ACTIVE", "25")
            .with("QUEUE_ADMIT_PER_TICK", "100")
            .with("QUEUE_WAITING_IDLE_TIMEOUT_SECS", "1")
    })
    .await;
    let c = reqwest::Client::new();
    let boss = s.admin_session().await;
    // Kept to the millisecond; a whole second compares exactly.
    let opens = (s.clock.now() + chrono::Duration::minutes(10)).trunc_subsecs(0);
    let (code, room) = patch_room(&c, &s, Some(&boss), 3, json!({"sale_opens_at": opens})).await;
    assert_eq!(code, 200, "{room}");
    let commitment = room["lottery"]["commitment"].as_str().unwrap().to_owned();
    assert_eq!(commitment.len(), 64);
    let (_, public) = get_public(&c, &s, 3).await;
    assert_eq!(public["lottery"]["commitment"], commitment.as_str());
    assert!(
        public["lottery"]["seed"].is_null(),
        "secret before the draw"
    );
    assert!(public["lottery"]["drawn_at"].is_null());
    assert_eq!(
        public["sale_opens_at"]
            .as_str()
            .map(|t| t.parse::<chrono::DateTime<Utc>>().unwrap()),
        Some(opens)
    );
    // Moving the opening before the draw keeps the commitment.
    let opens = opens + chrono::Duration::minutes(1);
    let (_, room) = patch_room(&c, &s, Some(&boss), 3, json!({"sale_opens_at": opens})).await;
    assert_eq!(room["lottery"]["commitment"], commitment.as_str());

    let users = s.fan_sessions(200, FANS).await;
    let joined = join_all(users.iter().map(|t| s.join(&c, t, 3))).await;
    for (code, b) in &joined {
        assert_eq!(*code, 201);
        assert_eq!(
            (b["status"].as_str(), b["pre_queue"].as_bool()),
            (Some("WAITING"), Some(true))
        );
        assert!(b["position"].is_null() && b["eta_seconds"].is_null());
        assert_eq!(
            b["opens_at"]
                .as_str()
                .map(|t| t.parse::<chrono::DateTime<Utc>>().unwrap()),
            Some(opens)
        );
    }
    let token = |i: usize| joined[i].1["token"].as_str().unwrap().to_owned();
    // Before the opening, ticks admit nobody and draw nothing.
    let a = s.room().admit(3, s.clock.now()).await.unwrap();
    assert_eq!((a.admitted, a.drawn), (0, 0));

    // The last 10 fans walk away; the others keep heartbeating past the idle timeout (a
    // heartbeat is a Redis TTL on Redis's clock, so this one is waited out).
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        let polled = join_all((0..190).map(|i| {
            let (c, s, t, u) = (&c, &s, token(i), &users[i]);
            async move { s.poll_ok(c, u, &t).await }
        }))
        .await;
        assert!(
            polled
                .iter()
                .all(|p| p["pre_queue"] == true && p["position"].is_null())
        );
    }
    let (_, room) = get_room(&c, &s, Some(&boss), 3).await;
    assert_eq!(
        room["pre_queued"], 200,
        "nobody dropped before the draw looks"
    );

    // The sale opens; two batch leaders tick at once: one draw.
    s.clock.advance(Duration::from_secs(11 * 60));
    let (leader_a, leader_b) = (s.room(), s.room());
    let (r1, r2) = tokio::join!(
        leader_a.admit(3, s.clock.now()),
        leader_b.admit(3, s.clock.now())
    );
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(r1.drawn + r2.drawn, 190, "{r1:?} {r2:?}");
    assert_eq!(r1.admitted + r2.admitted, 25, "max_active in all");

    let (_, public) = get_public(&c, &s, 3).await;
    let seed = public["lottery"]["seed"].as_str().unwrap();
    assert_eq!(
        hex(&Sha256::digest(unhex(seed))),
        commitment,
        "the seed matches"
    );
    assert!(public["lottery"]["drawn_at"].is_string());

    // The expected order, computed here from the published seed.
    let mut expected: Vec<(String, usize)> = (0..190)
        .map(|i| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&unhex(seed)).unwrap();
            mac.update(token(i).as_bytes());
            (hex(&mac.finalize().into_bytes()), i)
        })
        .collect();
    expected.sort();
    // All at once: one by one, the last would be polled close to the 1 s idle timeout after
    // its previous heartbeat. A poll changes no place in line.
    let statuses = join_all(expected.iter().map(|(_, i)| {
        let (c, s, t, u) = (&c, &s, token(*i), &users[*i]);
        async move { s.poll_ok(c, u, &t).await }
    }))
    .await;
    for (rank, st) in statuses.iter().enumerate() {
        assert_eq!(st["pre_queue"], false);
        if rank < 25 {
            assert_eq!(st["status"], "ACTIVE", "rank {rank}");
        } else {
            assert_eq!(st["status"], "WAITING");
            assert_eq!(st["position"], rank as i64 - 24, "rank {rank}");
        }
    }
    for (i, user) in users.iter().enumerate().skip(190) {
        let st = s.poll_ok(&c, user, &token(i)).await;
        assert_eq!(st["status"], "EXPIRED", "a lapsed fan is not in the draw");
    }

    // After the draw: a new fan joins FIFO behind every drawn one; the opening is frozen.
    let newcomer = s.fan_sessions(1, FANS + 200).await.remove(0);
    let (code, me) = s.join(&c, &newcomer, 3).await;
    assert_eq!((code, me["pre_queue"].as_bool()), (201, Some(false)));
    assert_eq!(me["position"], 190 - 25 + 1);
    let later = opens + chrono::Duration::hours(1);
    let (code, problem) = patch_room(&c, &s, Some(&boss), 3, json!({"sale_opens_at": later})).await;
    assert_eq!(
        (code, problem["code"].as_str()),
        (409, Some("LOTTERY_DRAWN"))
    );
    let (code, _) = patch_room(&c, &s, Some(&boss), 3, json!({"sale_opens_at": null})).await;
    assert_eq!(code, 409);
    let (_, room) = get_room(&c, &s, Some(&boss), 3).await;
    assert_eq!(room["abandoned_total"], 10);
    assert_eq!(room["pre_queued"], 0);
    assert_eq!(room["waiting"], 166);
    let distinct: HashSet<String> = (0..200).map(token).collect();
    assert_eq!(distinct.len(), 200);
}

#[tokio::test]
async fn admission_follows_the_inventory_and_never_lets_in_more_than_the_seats_left() {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_MAX_ACTIVE", "100")
            .with("QUEUE_ADMIT_PER_TICK", "30")
    })
    .await;
    let c = reqwest::Client::new();
    let users = s.fan_sessions(120, FANS).await;
    let joined = join_all(users.iter().map(|t| s.join(&c, t, 1))).await;
    assert!(joined.iter().all(|(code, _)| *code == 201));
    let room = s.room();

    // No inventory yet: unknown, admission as before.
    let a = room.admit(1, s.clock.now()).await.unwrap();
    assert_eq!(a.admitted, 30);
    // No seat available but some held: nobody, and not sold out.
    set_inventory(&s, 1, 50, 0, 3).await;
    for _ in 0..3 {
        let a = room.admit(1, s.clock.now()).await.unwrap();
        assert_eq!(
            (a.admitted, a.gate),
            (0, users_api::domain::queue::Gate::NoSeatAvailable)
        );
    }
    let (_, public) = get_public(&c, &s, 1).await;
    assert_eq!(public["state"], "OPEN");
    let waiting_one = joined.iter().find(|(_, b)| b["position"] == 100).unwrap();
    let i = joined
        .iter()
        .position(|x| std::ptr::eq(x, waiting_one))
        .unwrap();
    let st = s
        .poll_ok(&c, &users[i], waiting_one.1["token"].as_str().unwrap())
        .await;
    assert_eq!(st["status"], "WAITING");
    // Two seats come back: exactly two fans, though the tick and the room allow more.
    set_inventory(&s, 1, 50, 2, 3).await;
    let a = room.admit(1, s.clock.now()).await.unwrap();
    assert_eq!((a.admitted, a.active), (2, 32));
}

/// Waits until none of `tokens` has a heartbeat left in `concert`'s line: their fans stopped
/// polling and the heartbeats' TTL ran out (Redis's clock). Panics after a minute.
async fn until_lapsed(s: &Spawned, concert: i64, tokens: &[&str]) {
    let keys = s.queue_keys();
    let prefix = keys.alive_prefix(concert);
    let mut pipe = redis::pipe();
    for t in tokens {
        pipe.cmd("EXISTS").arg(format!("{prefix}{t}"));
    }
    let what = format!("the heartbeats in concert {concert}'s line to lapse");
    eventually(&what, Duration::from_secs(60), || async {
        let alive: Vec<i64> = pipe.query_async(&mut keys.redis().conn()).await.unwrap();
        alive.iter().all(|&n| n == 0).then_some(())
    })
    .await;
}

/// A sold-out room lets go of the fans who stopped listening — a slice of its line each
/// tick, none while they are still there (a poll still keeps its fan there) — and once
/// nobody is left in it, it is no longer ticked.
///
/// One fan (the keeper) polls all along, from its join on, every 100 ms against a heartbeat
/// of 3 s; the others stop after joining, and the test waits until their heartbeats are gone
/// rather than for a set time, so a slow machine only makes it slower.
#[tokio::test]
async fn a_sold_out_room_lets_go_of_the_fans_who_left_and_is_no_longer_ticked() {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_MAX_ACTIVE", "10")
            .with("QUEUE_WAITING_IDLE_TIMEOUT_SECS", "3")
    })
    .await;
    let c = reqwest::Client::new();
    let users = s.fan_sessions(600, FANS).await;
    // Ten fans first (admitted below), then the keeper (first in line behind them), then the
    // rest.
    let mut joined = join_all(users[..10].iter().map(|t| s.join(&c, t, 3))).await;
    let keeper_user = &users[10];
    let keeper = s.join(&c, keeper_user, 3).await;
    assert_eq!(keeper.1["position"], 11);
    let keeper_token = keeper.1["token"].as_str().unwrap().to_owned();
    joined.push(keeper);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let keeper_polls = async {
        let mut seen = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let st = s.poll_ok(&c, keeper_user, &keeper_token).await;
            seen.push(st["status"].as_str().unwrap_or("?").to_owned());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    };
    let room = s.room();
    // The rooms admission ticks.
    let ticked = || async { room.concerts_with_lines().await.unwrap().contains(&3) };
    let rest = async {
        joined.extend(join_all(users[11..].iter().map(|t| s.join(&c, t, 3))).await);
        assert!(joined.iter().all(|(code, _)| *code == 201));
        assert_eq!(room.admit(3, s.clock.now()).await.unwrap().admitted, 10);
        assert!(ticked().await);

        // The last seat sells while every fan is still in line: nobody is let go.
        set_inventory(&s, 3, 10, 0, 0).await;
        let a = room.admit(3, s.clock.now()).await.unwrap();
        assert_eq!(
            (a.gate, a.abandoned, a.waiting),
            (users_api::domain::queue::Gate::SoldOut, 0, 590)
        );
        let (last_user, last) = users
            .iter()
            .zip(&joined)
            .find(|(_, (_, b))| b["position"] == 590)
            .unwrap();
        let last_token = last.1["token"].as_str().unwrap();
        assert_eq!(
            s.poll_ok(&c, last_user, last_token).await["status"],
            "SOLD_OUT"
        );

        // The others' heartbeats lapse. 256 places a tick are looked at, from where the last
        // tick stopped (after the first 256 above) to the end of the line; then the sweep
        // rests for half the idle timeout (1.5 s of the app's clock) before it starts again
        // from the front.
        let others: Vec<&str> = joined[10..]
            .iter()
            .map(|(_, b)| b["token"].as_str().unwrap())
            .filter(|t| *t != keeper_token)
            .collect();
        until_lapsed(&s, 3, &others).await;
        // The ticks are given their time, so that the rest is exactly that long whatever the
        // machine's pauses.
        let tick = async |at| {
            let a = room.admit(3, at).await.unwrap();
            (a.abandoned, a.waiting)
        };
        let t0 = s.clock.now();
        let rested = t0 + chrono::Duration::milliseconds(1_500);
        let swept = vec![
            tick(t0).await,
            tick(t0).await,
            tick(t0).await,
            tick(rested - chrono::Duration::milliseconds(1)).await,
            tick(rested).await,
            tick(rested).await,
            tick(rested).await,
        ];
        assert_eq!(
            swept,
            vec![
                (256, 334),
                (78, 256),
                (0, 256),
                (0, 256),
                (255, 1),
                (0, 1),
                (0, 1)
            ]
        );
        // The place of a fan who left was lost, as anywhere; joining again is refused.
        let st = s.poll_ok(&c, last_user, last_token).await;
        assert_eq!(st["status"], "EXPIRED");
        assert_eq!(s.join(&c, last_user, 3).await.0, 409);
        let (_, view) = get_room(&c, &s, Some(&s.admin_session().await), 3).await;
        assert_eq!(view["abandoned_total"], 589, "{view}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (seen, ()) = tokio::join!(keeper_polls, rest);
    // The keeper was there at every look: never let go while it polled.
    assert!(
        seen.iter().all(|st| st == "WAITING" || st == "SOLD_OUT"),
        "{seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("SOLD_OUT"));

    // The keeper leaves too and the passes run out: the room is empty and leaves the rooms
    // admission ticks.
    until_lapsed(&s, 3, &[keeper_token.as_str()]).await;
    s.clock
        .advance(s.config.queue.active_ttl + Duration::from_secs(1));
    let a = room.admit(3, s.clock.now()).await.unwrap();
    assert_eq!((a.expired, a.abandoned, a.active, a.waiting), (10, 1, 0, 0));
    assert!(!ticked().await);
}

/// A join registers its room for admission only when it has to: when the line was empty
/// before it (admission may have taken the room out as idle), or when this process last did
/// so a second ago or more. A crowd's other joins skip that round trip (the benchmark's Redis
/// counts show it), and a line is never left unticked for longer than that second.
#[tokio::test]
async fn a_join_registers_its_room_when_the_line_was_empty_or_a_second_has_passed() {
    let s = spawn_app().await;
    let c = Client::new();
    let users = s.fan_sessions(52, FANS).await;
    let room = s.room();
    let ticked = || async { room.concerts_with_lines().await.unwrap().contains(&3) };

    // A fan buys and the room empties: admission takes it out. The next fan, moments after
    // the process last registered the room, finds the line empty and registers it again.
    assert_eq!(s.join(&c, &users[0], 3).await.0, 201);
    assert!(ticked().await);
    assert_eq!(room.admit(3, s.clock.now()).await.unwrap().admitted, 1);
    let purchase = sea_orm::prelude::Uuid::new_v4();
    assert_eq!(
        room.retire(purchase, FANS, 3).await.unwrap(),
        users_api::domain::queue::Retired::Token
    );
    let a = room.admit(3, s.clock.now()).await.unwrap();
    assert_eq!((a.active, a.waiting), (0, 0));
    assert!(!ticked().await, "an idle room is not ticked");
    let (code, me) = s.join(&c, &users[1], 3).await;
    assert_eq!((code, me["position"].as_i64()), (201, Some(1)));
    assert!(
        ticked().await,
        "the first in an empty line registers the room"
    );

    // A crowd joins behind that fan. Then Redis loses the registration but not the line:
    // the joins of the next second may not register the room again, the first join after
    // it does.
    let crowd = join_all(users[2..51].iter().map(|t| s.join(&c, t, 3))).await;
    assert!(crowd.iter().all(|(code, _)| *code == 201));
    let keys = s.queue_keys();
    let _: i64 = redis::cmd("SREM")
        .arg(keys.concerts())
        .arg(3)
        .query_async(&mut keys.redis().conn())
        .await
        .unwrap();
    s.clock.advance(Duration::from_secs(1));
    assert_eq!(s.join(&c, &users[51], 3).await.0, 201);
    assert!(ticked().await, "registered again a second later");
}

#[tokio::test]
async fn a_sold_out_concert_tells_every_waiting_fan_at_the_next_tick_and_refuses_joins() {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_MAX_ACTIVE", "10")
            .with("QUEUE_SSE_POLL_MS", "50")
    })
    .await;
    let c = reqwest::Client::new();
    let boss = s.admin_session().await;
    let users = s.fan_sessions(300, FANS).await;
    let joined = join_all(users.iter().map(|t| s.join(&c, t, 2))).await;
    assert!(joined.iter().all(|(code, _)| *code == 201));
    let room = s.room();
    room.admit(2, s.clock.now()).await.unwrap();

    // One fan watches the stream.
    let watcher = joined
        .iter()
        .position(|(_, b)| b["position"] == 200)
        .unwrap();
    let watcher_token = joined[watcher].1["token"].as_str().unwrap();
    let mut stream = s.open_events(&c, &users[watcher], watcher_token).await;
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"WAITING\""));

    // The last seat sells: nothing available nor held.
    set_inventory(&s, 2, 40, 0, 0).await;
    let a = room.admit(2, s.clock.now()).await.unwrap();
    assert_eq!(
        (a.admitted, a.gate),
        (0, users_api::domain::queue::Gate::SoldOut)
    );

    let frames = rest_of_stream(&mut stream).await;
    let last = frame_data(frames.last().unwrap());
    assert_eq!(
        last["status"], "SOLD_OUT",
        "the stream ends with SOLD_OUT: {frames:?}"
    );

    // Every waiting fan's poll says so; admitted fans keep their pass.
    let polled = join_all(joined.iter().zip(&users).map(|((_, b), u)| {
        let (c, s) = (&c, &s);
        async move { s.poll_ok(c, u, b["token"].as_str().unwrap()).await }
    }))
    .await;
    assert_eq!(
        polled.iter().filter(|p| p["status"] == "SOLD_OUT").count(),
        290
    );
    assert_eq!(
        polled.iter().filter(|p| p["status"] == "ACTIVE").count(),
        10
    );
    // Joining again: refused for a fan who was waiting, the pass for one admitted.
    let rejoined = join_all(users.iter().map(|t| s.join(&c, t, 2))).await;
    let count = |code: u16, what: &str| {
        rejoined
            .iter()
            .filter(|(c, b)| *c == code && (b["code"] == what || b["status"] == what))
            .count()
    };
    assert_eq!(count(409, "SOLD_OUT"), 290);
    assert_eq!(count(200, "ACTIVE"), 10);

    let newcomers = s.fan_sessions(50, FANS + 300).await;
    let refused = join_all(newcomers.iter().map(|t| s.join(&c, t, 2))).await;
    assert!(
        refused
            .iter()
            .all(|(code, b)| *code == 409 && b["code"] == "SOLD_OUT"),
        "{:?}",
        refused.first()
    );
    let (_, public) = get_public(&c, &s, 2).await;
    assert_eq!(public["state"], "SOLD_OUT");
    // Other concerts are not affected.
    assert_eq!(s.join(&c, &newcomers[0], 1).await.0, 201);

    // The organiser adds seats and reopens: the line moves again.
    set_inventory(&s, 2, 60, 20, 0).await;
    let (code, room_view) = patch_room(&c, &s, Some(&boss), 2, json!({"state": "OPEN"})).await;
    assert_eq!((code, room_view["state"].as_str()), (200, Some("OPEN")));
    s.clock
        .advance(s.config.queue.active_ttl + Duration::from_secs(1));
    let a = room.admit(2, s.clock.now()).await.unwrap();
    assert_eq!(a.admitted, 10);
}

/// What a Redis restarted empty leaves of this test's waiting rooms: nothing. Deletes every
/// `queue:*` key under the test's own prefix (tests share one Redis), and with
/// `inventory` concert-api's `inventory:*` counts too. Sessions are kept.
async fn lose_redis_rooms(s: &Spawned, inventory: bool) {
    let mut conn = s.queue_keys().redis().conn();
    let mut patterns = vec![format!("{}queue:*", s.iso.redis_prefix)];
    if inventory {
        patterns.push(format!("{}inventory:*", s.iso.redis_prefix));
    }
    for pattern in patterns {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}queue:*", s.iso.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

async fn audit_rows(s: &Spawned) -> i64 {
    s.query("SELECT count(*)::bigint AS n FROM admin_audit")
        .await[0]
        .try_get("", "n")
        .unwrap()
}

/// A room's row in `queue_rooms` (paused, max_active, admit_per_tick) and the number of
/// audit rows.
async fn stored(s: &Spawned, concert: i64) -> (bool, Option<i64>, Option<i64>, i64) {
    let rows = s
        .query(&format!(
            "SELECT paused, max_active, admit_per_tick, \
             (SELECT count(*) FROM admin_audit)::bigint AS audited \
             FROM queue_rooms WHERE concert_id = {concert}"
        ))
        .await;
    let r = &rows[0];
    (
        r.try_get("", "paused").unwrap(),
        r.try_get("", "max_active").unwrap(),
        r.try_get("", "admit_per_tick").unwrap(),
        r.try_get("", "audited").unwrap(),
    )
}

/// The organiser's settings as the admin view shows them.
fn settings_of(room: &Value) -> Value {
    json!({
        "state": room["state"],
        "max_active": room["max_active"],
        "admit_per_tick": room["admit_per_tick"],
        "sale_opens_at": room["sale_opens_at"],
        "lottery": room["lottery"],
    })
}

/// A field of a room's Redis settings hash.
async fn redis_setting(s: &Spawned, concert: i64, field: &str) -> Option<String> {
    let keys = s.queue_keys();
    redis::cmd("HGET")
        .arg(keys.redis().key(&format!("queue:{{c{concert}}}:settings")))
        .arg(field)
        .query_async(&mut keys.redis().conn())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_room_redis_forgot_comes_back_from_the_database_paused_and_with_its_own_capacity() {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_MAX_ACTIVE", "500")
            .with("QUEUE_ADMIT_PER_TICK", "100")
    })
    .await;
    let c = reqwest::Client::new();
    let boss = s.admin_session().await;
    let (code, set) = patch_room(
        &c,
        &s,
        Some(&boss),
        1,
        json!({"state": "PAUSED", "max_active": 3, "admit_per_tick": 50}),
    )
    .await;
    assert_eq!(code, 200, "{set}");
    let users = s.fan_sessions(10, FANS).await;
    let first = join_all(users.iter().map(|t| s.join(&c, t, 1))).await;
    assert!(first.iter().all(|(code, _)| *code == 201));

    lose_redis_rooms(&s, false).await;

    // The organiser sees the same settings.
    let (code, room) = get_room(&c, &s, Some(&boss), 1).await;
    assert_eq!(code, 200);
    assert_eq!(settings_of(&room), settings_of(&set));
    assert_eq!(room["state"], "PAUSED");
    assert_eq!(
        (room["max_active"].as_u64(), room["admit_per_tick"].as_u64()),
        (Some(3), Some(50))
    );
    assert_eq!(room["waiting"], 0, "the line itself was in Redis only");

    // The fans' tokens went with Redis; they join again, into a room that is still paused:
    // joins and polls go on, nobody is admitted, no estimate.
    let (code, _) = s
        .poll(&c, &users[0], first[0].1["token"].as_str().unwrap())
        .await;
    assert_eq!(code, 404);
    let again = join_all(users.iter().map(|t| s.join(&c, t, 1))).await;
    assert!(
        again
            .iter()
            .all(|(code, b)| *code == 201 && b["status"] == "WAITING")
    );
    let room_api = s.room();
    for tick in 0..3 {
        let a = room_api.admit(1, s.clock.now()).await.unwrap();
        assert_eq!(
            (a.admitted, a.waiting, a.gate),
            (0, 10, users_api::domain::queue::Gate::Paused),
            "paused tick {tick}"
        );
        s.clock.advance(Duration::from_secs(1));
    }
    for (i, (_, joined)) in again.iter().enumerate() {
        let st = s
            .poll_ok(&c, &users[i], joined["token"].as_str().unwrap())
            .await;
        assert_eq!(st["status"], "WAITING");
        assert!(
            st["eta_seconds"].is_null(),
            "no estimate while paused: {st}"
        );
    }

    // Resumed: the room's own max_active (3), not the tick's 50 nor the env's 500.
    let (code, room) = patch_room(&c, &s, Some(&boss), 1, json!({"state": "OPEN"})).await;
    assert_eq!((code, room["max_active"].as_u64()), (200, Some(3)));
    let a = room_api.admit(1, s.clock.now()).await.unwrap();
    assert_eq!((a.admitted, a.active, a.waiting), (3, 3, 7));

    // Lost again, and this time an admission tick is the first to touch the room: it
    // restores the settings before it admits (with nobody in line, nobody).
    lose_redis_rooms(&s, false).await;
    assert_eq!(redis_setting(&s, 1, "max_active").await, None);
    let a = room_api.admit(1, s.clock.now()).await.unwrap();
    assert_eq!((a.admitted, a.active, a.waiting), (0, 0, 0));
    assert_eq!(
        redis_setting(&s, 1, "max_active").await.as_deref(),
        Some("3")
    );
    assert_eq!(
        redis_setting(&s, 1, "admit_per_tick").await.as_deref(),
        Some("50")
    );
    assert_eq!(
        redis_setting(&s, 1, "state").await,
        None,
        "OPEN, as last set"
    );
    let again = join_all(users.iter().map(|t| s.join(&c, t, 1))).await;
    assert!(again.iter().all(|(code, _)| *code == 201));
    let a = room_api.admit(1, s.clock.now()).await.unwrap();
    assert_eq!((a.admitted, a.active, a.waiting), (3, 3, 7));
}

/// The pre-queue's lottery across a Redis loss before the draw: the room is still ticked
/// (nobody need touch it), fans who join are pre-queued again, and the draw uses the seed
/// whose commitment was published before the loss, in its HMAC order. Lost again after the
/// draw, the room stays drawn: the same seed and time, joins FIFO, the opening frozen.
#[tokio::test]
async fn a_lottery_redis_forgot_is_drawn_with_the_seed_committed_before_in_the_same_order() {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_MAX_ACTIVE", "4")
            .with("QUEUE_ADMIT_PER_TICK", "100")
    })
    .await;
    let c = reqwest::Client::new();
    let boss = s.admin_session().await;
    let opens = (s.clock.now() + chrono::Duration::minutes(10)).trunc_subsecs(0);
    let (code, set) = patch_room(&c, &s, Some(&boss), 3, json!({"sale_opens_at": opens})).await;
    assert_eq!(code, 200, "{set}");
    let commitment = set["lottery"]["commitment"].as_str().unwrap().to_owned();

    lose_redis_rooms(&s, false).await;

    // Admission still ticks the room: its lottery is to draw.
    let room_api = s.room();
    assert_eq!(room_api.concerts_with_lines().await.unwrap(), vec![3]);
    let (code, public) = get_public(&c, &s, 3).await;
    assert_eq!(code, 200);
    assert_eq!(public["lottery"]["commitment"], commitment.as_str());
    assert!(public["lottery"]["seed"].is_null(), "still secret");
    assert_eq!(
        public["sale_opens_at"]
            .as_str()
            .map(|t| t.parse::<chrono::DateTime<Utc>>().unwrap()),
        Some(opens)
    );
    let (_, room) = get_room(&c, &s, Some(&boss), 3).await;
    assert_eq!(settings_of(&room), settings_of(&set));

    let users = s.fan_sessions(30, FANS).await;
    let joined = join_all(users.iter().map(|t| s.join(&c, t, 3))).await;
    for (code, b) in &joined {
        assert_eq!(*code, 201);
        assert_eq!(b["pre_queue"], true, "pre-queued as before the loss: {b}");
    }
    let token = |i: usize| joined[i].1["token"].as_str().unwrap().to_owned();
    let a = room_api.admit(3, s.clock.now()).await.unwrap();
    assert_eq!((a.admitted, a.drawn), (0, 0), "nobody before the opening");

    s.clock.advance(Duration::from_secs(11 * 60));
    let a = room_api.admit(3, s.clock.now()).await.unwrap();
    assert_eq!((a.drawn, a.admitted), (30, 4));
    let (_, public) = get_public(&c, &s, 3).await;
    let seed = public["lottery"]["seed"].as_str().unwrap().to_owned();
    assert_eq!(
        hex(&Sha256::digest(unhex(&seed))),
        commitment,
        "the seed committed to before Redis was lost"
    );
    let mut expected: Vec<(String, usize)> = (0..30)
        .map(|i| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&unhex(&seed)).unwrap();
            mac.update(token(i).as_bytes());
            (hex(&mac.finalize().into_bytes()), i)
        })
        .collect();
    expected.sort();
    for (rank, (_, i)) in expected.iter().enumerate() {
        let st = s.poll_ok(&c, &users[*i], &token(*i)).await;
        if rank < 4 {
            assert_eq!(st["status"], "ACTIVE", "rank {rank}");
        } else {
            assert_eq!(st["status"], "WAITING");
            assert_eq!(st["position"], rank as i64 - 3, "rank {rank}");
        }
    }
    let drawn_at = public["lottery"]["drawn_at"].clone();
    assert!(drawn_at.is_string());

    // Lost after the draw: it stays drawn.
    lose_redis_rooms(&s, false).await;
    assert!(
        room_api.concerts_with_lines().await.unwrap().is_empty(),
        "nothing to draw"
    );
    let (_, public) = get_public(&c, &s, 3).await;
    assert_eq!(public["lottery"]["seed"], seed.as_str());
    assert_eq!(public["lottery"]["commitment"], commitment.as_str());
    assert_eq!(public["lottery"]["drawn_at"], drawn_at);
    let (code, me) = s.join(&c, &users[0], 3).await;
    assert_eq!((code, me["pre_queue"].as_bool()), (201, Some(false)));
    assert_eq!(me["position"], 1);
    let rows = audit_rows(&s).await;
    let later = opens + chrono::Duration::hours(1);
    let (code, problem) = patch_room(&c, &s, Some(&boss), 3, json!({"sale_opens_at": later})).await;
    assert_eq!(
        (code, problem["code"].as_str()),
        (409, Some("LOTTERY_DRAWN"))
    );
    assert_eq!(audit_rows(&s).await, rows, "a refused change leaves no row");
    let stored = s
        .query("SELECT sale_opens_at, drawn_at FROM queue_rooms WHERE concert_id = 3")
        .await;
    assert_eq!(
        stored[0]
            .try_get::<chrono::DateTime<Utc>>("", "sale_opens_at")
            .unwrap(),
        opens
    );
    assert!(
        stored[0]
            .try_get::<Option<chrono::DateTime<Utc>>>("", "drawn_at")
            .unwrap()
            .is_some()
    );
}

/// SOLD_OUT is not stored: it is the inventory's verdict, judged again when Redis comes back
/// — at once if concert-api has counted the seats again, else at the first tick after.
#[tokio::test]
async fn a_sold_out_room_redis_forgot_is_sold_out_again_as_soon_as_the_inventory_says_so() {
    let s = spawn_app_with(|env| env.with("QUEUE_MAX_ACTIVE", "2")).await;
    let c = reqwest::Client::new();
    let users = s.fan_sessions(6, FANS).await;
    for u in &users[..4] {
        assert_eq!(s.join(&c, u, 2).await.0, 201);
    }
    set_inventory(&s, 2, 40, 0, 0).await;
    let room = s.room();
    let a = room.admit(2, s.clock.now()).await.unwrap();
    assert_eq!(a.gate, users_api::domain::queue::Gate::SoldOut);
    assert_eq!(s.join(&c, &users[4], 2).await.0, 409);

    // Redis comes back empty but concert-api has already counted the seats again: the room
    // is SOLD_OUT from its first use, and the join is refused.
    lose_redis_rooms(&s, true).await;
    set_inventory(&s, 2, 40, 0, 0).await;
    let (code, problem) = s.join(&c, &users[4], 2).await;
    assert_eq!((code, problem["code"].as_str()), (409, Some("SOLD_OUT")));
    let (_, public) = get_public(&c, &s, 2).await;
    assert_eq!(public["state"], "SOLD_OUT");

    // Redis comes back empty and the counts are not there yet: unknown, so a fan gets in
    // line; the first tick after concert-api's resync makes the room SOLD_OUT again.
    lose_redis_rooms(&s, true).await;
    let (code, joined) = s.join(&c, &users[5], 2).await;
    assert_eq!(code, 201, "{joined}");
    let (_, public) = get_public(&c, &s, 2).await;
    assert_eq!(public["state"], "OPEN");
    set_inventory(&s, 2, 40, 0, 0).await;
    let a = room.admit(2, s.clock.now()).await.unwrap();
    assert_eq!(
        (a.admitted, a.gate),
        (0, users_api::domain::queue::Gate::SoldOut)
    );
    let st = s
        .poll_ok(&c, &users[5], joined["token"].as_str().unwrap())
        .await;
    assert_eq!(st["status"], "SOLD_OUT");
    assert_eq!(s.join(&c, &users[0], 2).await.0, 409);
}

/// A change is persisted with its audit row in one transaction, or not at all (Redis then
/// forgets it too); under concurrent changes the database and Redis end on the same one.
#[tokio::test]
async fn a_change_is_persisted_with_its_audit_row_or_not_at_all() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let boss = s.admin_session().await;
    let (code, _) = patch_room(
        &c,
        &s,
        Some(&boss),
        2,
        json!({"state": "PAUSED", "max_active": 12}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(stored(&s, 2).await, (true, Some(12), None, 1));

    // The audit row cannot be written: the change is refused and undone in Redis too.
    s.query("ALTER TABLE admin_audit RENAME TO admin_audit_away")
        .await;
    let (code, problem) = patch_room(&c, &s, Some(&boss), 2, json!({"max_active": 99})).await;
    assert_eq!(
        (code, problem["code"].as_str()),
        (503, Some("DEPENDENCY_UNAVAILABLE"))
    );
    s.query("ALTER TABLE admin_audit_away RENAME TO admin_audit")
        .await;
    let (_, room) = get_room(&c, &s, Some(&boss), 2).await;
    assert_eq!(
        (room["max_active"].as_u64(), room["state"].as_str()),
        (Some(12), Some("PAUSED"))
    );
    assert_eq!(stored(&s, 2).await, (true, Some(12), None, 1));

    // 50 changes at once: whichever Redis ended on, the database did too.
    let changes = join_all(
        (1..=50).map(|n| patch_room(&c, &s, Some(&boss), 2, json!({"max_active": 1000 + n}))),
    )
    .await;
    assert!(changes.iter().all(|(code, _)| *code == 200));
    let (_, room) = get_room(&c, &s, Some(&boss), 2).await;
    let last = room["max_active"].as_i64().unwrap();
    assert_eq!(stored(&s, 2).await, (true, Some(last), None, 51));
    lose_redis_rooms(&s, false).await;
    let (_, room) = get_room(&c, &s, Some(&boss), 2).await;
    assert_eq!(room["max_active"].as_i64(), Some(last));
    assert_eq!(room["state"], "PAUSED");
}

/// Writes one instance's last second into the checkout's pressure hash, as concert-api and
/// payment-api publish it.
async fn publish_pressure(s: &Spawned, instance: &str, p90_ms: u64, age: Duration) {
    let redis = common::redis::RedisStore::connect(&s.config.redis).unwrap();
    let sample = common::pressure::Sample {
        at_ms: (Utc::now() - age).timestamp_millis(),
        requests: 50,
        p90_ms,
        pool_busy: 0.0,
    };
    let _: () = redis::cmd("HSET")
        .arg(redis.key(common::pressure::PRESSURE_KEY))
        .arg(instance)
        .arg(serde_json::to_string(&sample).unwrap())
        .query_async(&mut redis.conn())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_admission_window_widens_while_the_checkout_keeps_up_and_narrows_when_it_is_slow() {
    // Ticks of 250 ms and 40 a second: the window grows by 10 a tick.
    let s = spawn_app_with(|env| {
        env.with("QUEUE_MAX_ACTIVE", "60")
            .with("QUEUE_ADMIT_PER_TICK", "100")
            .with("QUEUE_ADMIT_INTERVAL_MS", "250")
            .with("QUEUE_PACE_START", "20")
            .with("QUEUE_PACE_STEP", "40")
    })
    .await;
    let c = reqwest::Client::new();
    let boss = s.admin_session().await;
    let users = s.fan_sessions(150, FANS).await;
    let joined = join_all(users.iter().map(|t| s.join(&c, t, 1))).await;
    assert!(joined.iter().all(|(code, _)| *code == 201));
    let room = s.room();
    let tick = |verdict| {
        let room = room.clone();
        let now = s.clock.now();
        async move { room.admit_paced(1, now, verdict).await.unwrap() }
    };

    // Fans wait and the checkout keeps up: each tick widens the window and fills it.
    let a = tick(Verdict::Widen).await;
    assert_eq!((a.window, a.admitted, a.active), (Some(30), 30, 30));
    let a = tick(Verdict::Widen).await;
    assert_eq!((a.window, a.admitted, a.active), (Some(40), 10, 40));
    let (_, view) = get_room(&c, &s, Some(&boss), 1).await;
    assert_eq!(view["admission_window"], 40);
    assert_eq!(view["max_active"], 60);

    // Slow: cut to 85 %, once a second however many ticks judge it slow.
    let a = tick(Verdict::Narrow).await;
    assert_eq!((a.window, a.admitted, a.active), (Some(34), 0, 40));
    let a = tick(Verdict::Narrow).await;
    assert_eq!(a.window, Some(34), "one cut per second");
    s.clock.advance(Duration::from_secs(1));
    let a = tick(Verdict::Narrow).await;
    assert_eq!(a.window, Some(28));

    // Keeping up again, it grows back, but never past the organiser's max_active.
    for _ in 0..10 {
        tick(Verdict::Widen).await;
    }
    let a = tick(Verdict::Widen).await;
    assert_eq!((a.window, a.active), (Some(60), 60));
    let (code, _) = patch_room(&c, &s, Some(&boss), 1, json!({"max_active": 45})).await;
    assert_eq!(code, 200);
    let a = tick(Verdict::Widen).await;
    assert_eq!(
        (a.window, a.admitted),
        (Some(45), 0),
        "the ceiling moved down"
    );

    // Without a pace the window is max_active itself.
    let a = room.admit(1, s.clock.now()).await.unwrap();
    assert_eq!(a.window, None);

    // The verdict comes from the instances' fresh samples.
    assert_eq!(room.checkout_verdict().await.unwrap(), Verdict::Widen);
    publish_pressure(&s, "concert-api:test:1", 20, Duration::ZERO).await;
    publish_pressure(&s, "payment-api:test:2", 500, Duration::from_secs(30)).await;
    assert_eq!(
        room.checkout_verdict().await.unwrap(),
        Verdict::Widen,
        "a stale sample says nothing"
    );
    publish_pressure(&s, "payment-api:test:2", 500, Duration::ZERO).await;
    assert_eq!(room.checkout_verdict().await.unwrap(), Verdict::Narrow);
}
