//! The waiting room against real Redis, with truly concurrent requests.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use common::auth::{ActiveQueuePass, Role};
use common::testkit::{PrivateRedis, StubCatalogue, eventually};
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use users_api::domain::queue::{QueueState, Retired};

use crate::helpers::{Spawned, frame_data, rest_of_stream, spawn_app, spawn_app_with};

/// Users' ids start here.
const USERS: i64 = 10_000;

/// `kafka_consumer_handled_total` in a Prometheus text page (users-api has one consumer).
fn handled(metrics: &str) -> Option<i64> {
    common::testkit::figure(metrics, "kafka_consumer_handled_total{").map(|n| n as i64)
}

async fn zcard(s: &Spawned, key: String) -> i64 {
    let mut conn = s.queue_keys().redis().conn();
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn fifty_parallel_joins_by_one_user_give_one_token_and_one_place() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let session = s.fan_sessions(1, USERS).await.remove(0);
    let results = join_all((0..50).map(|_| s.join(&c, &session, 1))).await;
    let tokens: HashSet<&str> = results
        .iter()
        .map(|(_, b)| b["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 1, "one token");
    assert_eq!(
        results.iter().filter(|(st, _)| *st == 201).count(),
        1,
        "issued once"
    );
    assert_eq!(
        results.iter().filter(|(st, _)| *st == 200).count(),
        49,
        "then returned"
    );
    assert!(
        results
            .iter()
            .all(|(_, b)| b["position"] == 1 && b["status"] == "WAITING")
    );
    assert_eq!(
        zcard(&s, s.queue_keys().waiting(1)).await,
        1,
        "one place in line"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_joins_get_positions_one_to_two_hundred_and_are_admitted_in_that_order()
 {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_MAX_ACTIVE", "50")
            .with("QUEUE_ADMIT_PER_TICK", "50")
    })
    .await;
    let c = reqwest::Client::new();
    let users = s.fan_sessions(200, USERS).await;
    let joined = join_all(users.iter().map(|t| s.join(&c, t, 2))).await;
    assert!(joined.iter().all(|(st, _)| *st == 201));
    let asked = s
        .catalogue
        .as_ref()
        .unwrap()
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        asked, 1,
        "200 simultaneous cache misses share one catalogue request"
    );
    let mut by_position: Vec<(i64, String)> = joined
        .iter()
        .map(|(_, b)| {
            (
                b["position"].as_i64().unwrap(),
                b["token"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    by_position.sort();
    let positions: Vec<i64> = by_position.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        positions,
        (1..=200).collect::<Vec<_>>(),
        "no gaps, no duplicates"
    );

    // Each tick admits the next 50 in join order; actives expire between ticks.
    let room = s.room();
    let active_key = s.queue_keys().active(2);
    for tick in 0..4 {
        let admission = room.admit(2, s.clock.now()).await.unwrap();
        assert_eq!(admission.admitted, 50, "tick {tick}");
        let mut conn = s.queue_keys().redis().conn();
        let active: Vec<String> = redis::cmd("ZRANGE")
            .arg(&active_key)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        let expected: HashSet<String> = by_position[tick * 50..(tick + 1) * 50]
            .iter()
            .map(|(_, t)| t.clone())
            .collect();
        assert_eq!(
            active.into_iter().collect::<HashSet<_>>(),
            expected,
            "tick {tick} admits positions {}..={}",
            tick * 50 + 1,
            tick * 50 + 50
        );
        s.clock
            .advance(s.config.queue.active_ttl + Duration::from_secs(1));
    }
}

#[tokio::test]
async fn concurrent_admission_never_exceeds_the_cap_and_expired_actives_free_their_slots() {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_MAX_ACTIVE", "40")
            .with("QUEUE_ADMIT_PER_TICK", "15")
    })
    .await;
    let room = s.room();
    join_all((0..300).map(|u| room.join(u, 3)))
        .await
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    let now = s.clock.now();
    let results = join_all((0..50).map(|_| room.admit(3, now))).await;
    let admitted: u64 = results.iter().map(|r| r.as_ref().unwrap().admitted).sum();
    assert_eq!(admitted, 40, "exactly the cap, whatever the concurrency");
    assert!(results.iter().all(|r| r.as_ref().unwrap().active <= 40));
    assert_eq!(zcard(&s, s.queue_keys().active(3)).await, 40);

    let full = room.admit(3, now).await.unwrap();
    assert_eq!(
        (full.admitted, full.active, full.waiting),
        (0, 40, 260),
        "a full room admits no one"
    );

    s.clock
        .advance(s.config.queue.active_ttl + Duration::from_secs(1));
    let next = room.admit(3, s.clock.now()).await.unwrap();
    assert_eq!(
        (next.expired, next.admitted, next.active),
        (40, 15, 15),
        "expired slots free at the next tick"
    );
}

#[tokio::test]
async fn a_waiting_token_that_stopped_polling_is_never_admitted() {
    let s = spawn_app_with(|env| env.with("QUEUE_WAITING_IDLE_TIMEOUT_SECS", "1")).await;
    let c = reqwest::Client::new();
    let users = s.fan_sessions(2, USERS).await;
    let (_, gone) = s.join(&c, &users[0], 1).await;
    let (_, here) = s.join(&c, &users[1], 1).await;
    assert_eq!(
        (gone["position"].as_i64(), here["position"].as_i64()),
        (Some(1), Some(2))
    );
    // The second user keeps polling past the idle timeout; the first walked away. A heartbeat
    // is a Redis key TTL, which runs on Redis's clock, not ours: this one has to be waited out.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            s.poll(&c, &users[1], here["token"].as_str().unwrap())
                .await
                .0,
            200
        );
    }
    let admission = s.room().admit(1, s.clock.now()).await.unwrap();
    assert_eq!((admission.admitted, admission.abandoned), (1, 1));
    let (_, status) = s.poll(&c, &users[1], here["token"].as_str().unwrap()).await;
    assert_eq!(status["status"], "ACTIVE");
    let (_, status) = s.poll(&c, &users[0], gone["token"].as_str().unwrap()).await;
    assert_eq!(status["status"], "EXPIRED");

    // Coming back, the abandoned user queues again at the back with a new token.
    let (code, again) = s.join(&c, &users[0], 1).await;
    assert_eq!(code, 201);
    assert_ne!(again["token"], gone["token"]);
}

#[tokio::test]
async fn positions_never_increase_between_polls_and_active_shows_active_until() {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_MAX_ACTIVE", "1000")
            .with("QUEUE_ADMIT_PER_TICK", "3")
    })
    .await;
    let c = reqwest::Client::new();
    let users = s.fan_sessions(30, USERS).await;
    for session in &users {
        s.join(&c, session, 2).await;
    }
    let last = &users[29];
    let (_, me) = s.join(&c, last, 2).await;
    let token = me["token"].as_str().unwrap().to_owned();
    let room = s.room();
    let mut previous = i64::MAX;
    loop {
        let (_, status) = s.poll(&c, last, &token).await;
        if status["status"] == "ACTIVE" {
            let until: chrono::DateTime<Utc> =
                status["active_until"].as_str().unwrap().parse().unwrap();
            assert!(until > s.clock.now() + chrono::Duration::minutes(9));
            assert!(status["position"].is_null());
            break;
        }
        let position = status["position"].as_i64().unwrap();
        assert!(
            position <= previous,
            "position went from {previous} to {position}"
        );
        assert!(status["eta_seconds"].as_i64().unwrap() >= 1);
        previous = position;
        // Other users keep polling (heartbeats) while the line moves.
        join_all(users.iter().map(|t| s.join(&c, t, 2))).await;
        room.admit(2, s.clock.now()).await.unwrap();
    }
    let asked = s
        .catalogue
        .as_ref()
        .unwrap()
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        asked, 1,
        "the catalogue is asked once, then its answer is cached"
    );
}

#[tokio::test]
async fn tokens_are_private_and_the_common_queue_pass_agrees_with_what_users_api_writes() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let (ann_id, bob_id) = (USERS, USERS + 1);
    let users = s.fan_sessions(2, ann_id).await;
    let (ann, bob) = (users[0].clone(), users[1].clone());
    let (_, joined) = s.join(&c, &ann, 1).await;
    let token = joined["token"].as_str().unwrap();
    let keys = s.queue_keys();

    assert_eq!(
        s.poll(&c, &bob, token).await.0,
        404,
        "another user's token is not found"
    );
    assert_eq!(s.poll(&c, &ann, "1.not-a-real-token").await.0, 404);
    let err = ActiveQueuePass::check(&keys, ann_id, token, s.clock.now())
        .await
        .unwrap_err();
    assert!(err.detail().contains("waiting"), "{}", err.detail());

    s.room().admit(1, s.clock.now()).await.unwrap();
    let pass = ActiveQueuePass::check(&keys, ann_id, token, s.clock.now())
        .await
        .expect("admitted token is a pass");
    assert_eq!(pass.concert_id, 1);
    pass.require_concert(1).unwrap();
    assert_eq!(
        pass.require_concert(2).unwrap_err().code(),
        "QUEUE_TOKEN_INVALID"
    );
    let err = ActiveQueuePass::check(&keys, bob_id, token, s.clock.now())
        .await
        .unwrap_err();
    assert_eq!(
        (err.status().as_u16(), err.code()),
        (401, "QUEUE_TOKEN_INVALID")
    );

    // Retiring (after a purchase) ends the pass at once.
    let purchase = sea_orm::prelude::Uuid::new_v4();
    assert_eq!(
        s.room().retire(purchase, ann_id, 1).await.unwrap(),
        Retired::Token
    );
    assert!(
        ActiveQueuePass::check(&keys, ann_id, token, s.clock.now())
            .await
            .is_err()
    );
    assert_eq!(s.poll(&c, &ann, token).await.1["status"], "EXPIRED");
}

#[tokio::test]
async fn bad_input_unknown_concerts_and_logged_out_sessions_write_nothing() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let session = s.fan_sessions(1, USERS).await.remove(0);
    for (body, needle) in [
        (json!({}), "concert_id"),
        (json!({"concert_id": "one"}), "concert_id"),
        (json!({"concert_id": 1.5}), "concert_id"),
        (json!({"concert_id": -1}), "concert_id"),
        (json!({"concert_id": 0}), "concert_id"),
        (json!({"concert_id": 1e30}), "concert_id"),
    ] {
        let (code, p) = s
            .call(
                &c,
                Method::POST,
                "/api/queue/tokens",
                Some(&session),
                Some(body.clone()),
            )
            .await;
        assert_eq!(code, 400, "{body}");
        assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
    }
    let (code, p) = s.join(&c, &session, 999).await;
    assert_eq!((code, p["code"].as_str()), (404, Some("CONCERT_NOT_FOUND")));

    for req in [
        c.post(s.url("/api/queue/tokens"))
            .json(&json!({"concert_id": 1})),
        c.post(s.url("/api/queue/tokens"))
            .bearer_auth("logged-out")
            .json(&json!({"concert_id": 1})),
        c.get(s.url("/api/queue/tokens/1.x"))
            .bearer_auth("logged-out"),
        c.get(s.url("/api/queue/tokens/1.x/events"))
            .bearer_auth("logged-out"),
    ] {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            "UNAUTHENTICATED"
        );
    }

    let mut conn = s.queue_keys().redis().conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}queue:*", s.iso.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "nothing written: {keys:?}");
}

#[tokio::test]
async fn an_unreachable_catalogue_is_503_with_retry_after_never_a_guess() {
    let s =
        spawn_app_with(|env| env.with("CONCERT_API_URL", StubCatalogue::unreachable_url())).await;
    let c = reqwest::Client::new();
    let session = s.fan_sessions(1, USERS).await.remove(0);
    let res = c
        .post(s.url("/api/queue/tokens"))
        .bearer_auth(&session)
        .json(&json!({"concert_id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("retry-after").is_some());
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "DEPENDENCY_UNAVAILABLE"
    );
    assert_eq!(zcard(&s, s.queue_keys().waiting(1)).await, 0);
}

#[tokio::test]
async fn the_event_stream_pushes_status_until_active_then_ends() {
    let s = spawn_app_with(|env| env.with("QUEUE_SSE_POLL_MS", "50")).await;
    let c = reqwest::Client::new();
    let session = s.fan_sessions(1, USERS).await.remove(0);
    let (_, joined) = s.join(&c, &session, 1).await;
    let token = joined["token"].as_str().unwrap();
    let mut res = s.open_events(&c, &session, token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");

    let first = res.chunk().await.unwrap().unwrap();
    let first = frame_data(std::str::from_utf8(&first).unwrap());
    assert_eq!(first["status"], "WAITING");

    s.room().admit(1, s.clock.now()).await.unwrap();
    let frames = rest_of_stream(&mut res).await;
    let last = frame_data(frames.last().unwrap());
    assert_eq!(
        last["status"], "ACTIVE",
        "the stream ends after ACTIVE: {frames:?}"
    );
    assert!(last["active_until"].is_string());
}

/// A stream that saw its fan admitted ends without handing the token back: admission took
/// the token out of the line, and the stream's registration with it. A stream whose fan is
/// still in line hands it back when it closes, once (the `leave` script: KEYS waiting and
/// pre-queue, then the token).
#[tokio::test]
async fn a_stream_hands_its_token_back_only_while_its_fan_is_in_line() {
    let redis = PrivateRedis::start().await;
    let s = spawn_app_with(|env| {
        env.with("REDIS_URL", redis.url.clone())
            .with("QUEUE_SSE_POLL_MS", "50")
            .with("QUEUE_MAX_ACTIVE", "1")
    })
    .await;
    let c = reqwest::Client::new();
    let users = s.fan_sessions(3, USERS).await;
    let mut tokens = Vec::new();
    for session in &users {
        tokens.push(
            s.join(&c, session, 1).await.1["token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let (first, second, third) = (tokens[0].as_str(), tokens[1].as_str(), tokens[2].as_str());
    let mut streams = Vec::new();
    for (session, token) in users.iter().zip(&tokens) {
        let mut res = s.open_events(&c, session, token).await;
        let frame = res.chunk().await.unwrap().unwrap();
        assert_eq!(
            frame_data(std::str::from_utf8(&frame).unwrap())["status"],
            "WAITING"
        );
        streams.push(res);
    }
    let (mut admitted, waiting, warm_up) = {
        let mut s = streams.into_iter();
        (s.next().unwrap(), s.next().unwrap(), s.next().unwrap())
    };
    let monitor = redis.monitor().await;
    let leaves = |seen: &[Vec<String>], token: &str| {
        seen.iter()
            .filter(|c| {
                c[0].eq_ignore_ascii_case("EVALSHA")
                    && c.get(2).map(String::as_str) == Some("2")
                    && c.get(5).map(String::as_str) == Some(token)
            })
            .count()
    };
    let mut seen = Vec::new();
    // The third fan's stream closes first, so that `leave` is loaded in this Redis (a script
    // it never saw is answered NOSCRIPT and sent again, which would count twice below).
    drop(warm_up);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while leaves(&seen, third) == 0 && std::time::Instant::now() < deadline {
        seen.extend(monitor.take_commands().await);
    }
    assert!(leaves(&seen, third) > 0, "{seen:?}");
    seen.clear();

    s.room().admit(1, s.clock.now()).await.unwrap();
    let frames = rest_of_stream(&mut admitted).await;
    assert_eq!(
        frame_data(frames.last().unwrap())["status"],
        "ACTIVE",
        "{frames:?}"
    );
    drop(waiting);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while leaves(&seen, second) == 0 && std::time::Instant::now() < deadline {
        seen.extend(monitor.take_commands().await);
    }
    seen.extend(monitor.take_commands().await);
    assert_eq!(
        leaves(&seen, second),
        1,
        "the waiting fan's stream hands its token back once: {seen:?}"
    );
    assert_eq!(
        leaves(&seen, first),
        0,
        "the admitted fan's stream has nothing to hand back: {seen:?}"
    );
}

/// The line is read as often as admission runs, however rarely the streams look on their
/// own, and every reading after the first can tell a stream of its fan's admission: the
/// stream's next frame after admission is ACTIVE. (Read only every `QUEUE_SSE_POLL_MS`, or
/// with the stream forgotten by the line's first reading, the next frame would be the
/// keep-alive's repeat of WAITING, 15 s later.)
#[tokio::test]
async fn admission_reaches_the_stream_at_admissions_pace_not_the_streams_looks() {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_SSE_POLL_MS", "60000")
            .with("QUEUE_SSE_KEEPALIVE_SECS", "15")
            .with("QUEUE_ADMIT_INTERVAL_MS", "100")
    })
    .await;
    let c = reqwest::Client::new();
    let session = s.fan_sessions(1, USERS).await.remove(0);
    let (_, joined) = s.join(&c, &session, 1).await;
    let mut res = s
        .open_events(&c, &session, joined["token"].as_str().unwrap())
        .await;
    let first = res.chunk().await.unwrap().unwrap();
    assert_eq!(
        frame_data(std::str::from_utf8(&first).unwrap())["status"],
        "WAITING"
    );
    // Let the line's first reading be taken, so that admission is told by a later one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.room().admit(1, s.clock.now()).await.unwrap();
    let next = res.chunk().await.unwrap().expect("a frame after admission");
    assert_eq!(
        frame_data(std::str::from_utf8(&next).unwrap())["status"],
        "ACTIVE"
    );
}

/// One account cannot hold more than `QUEUE_SSE_PER_USER` status streams, however many
/// sessions it opens; another account is not affected, and a closed stream frees its slot.
#[tokio::test]
async fn a_user_holds_at_most_the_cap_of_status_streams_across_sessions() {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_SSE_PER_USER", "2")
            .with("QUEUE_SSE_POLL_MS", "50")
    })
    .await;
    let c = reqwest::Client::new();
    // One account, two sessions.
    let first_session = s.write_session(20_000, "streamer", Role::User).await;
    let second_session = s.write_session(20_000, "streamer", Role::User).await;
    let (_, joined) = s.join(&c, &first_session, 1).await;
    let token = joined["token"].as_str().unwrap();

    let a = s.open_events(&c, &first_session, token).await;
    let b = s.open_events(&c, &second_session, token).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let refused = s.open_events(&c, &second_session, token).await;
    assert_eq!(refused.status(), 429, "a third stream, from either session");
    assert_eq!(refused.headers()["retry-after"], "5");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "TOO_MANY_STREAMS");

    let other = s.fan_sessions(1, USERS).await.remove(0);
    let (_, other_joined) = s.join(&c, &other, 1).await;
    let other_token = other_joined["token"].as_str().unwrap();
    let other_stream = s.open_events(&c, &other, other_token).await;
    assert_eq!(other_stream.status(), 200, "another user is not affected");

    // The client goes away without a word; the service learns it at the next write, which
    // the refusals make happen at the stream's next checks rather than after a keep-alive.
    drop(a);
    let mut reopened = None;
    for _ in 0..100 {
        let res = s.open_events(&c, &first_session, token).await;
        if res.status() == 200 {
            reopened = Some(res);
            break;
        }
        assert_eq!(res.status(), 429);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "the closed stream's slot came back");
    drop(b);
}

/// A join costs the session read and the script, and the first in an empty line also the
/// line's registration (`SADD queue:concerts`, on another slot than the line); a join behind
/// others skips it, but for one a second per process (`Registrations`). Joining again and
/// polling cost two round trips each.
#[tokio::test]
async fn joins_and_polls_cost_a_fixed_few_redis_round_trips() {
    let redis = PrivateRedis::start().await;
    let s = spawn_app_with(|env| env.with("REDIS_URL", redis.url.clone())).await;
    let c = reqwest::Client::new();
    let users = s.fan_sessions(10, USERS).await;
    // Warm up: scripts get loaded (a first EVALSHA may need an EVAL) and caches filled.
    let registered = std::time::Instant::now();
    let (_, warm) = s.join(&c, &users[0], 1).await;
    s.poll(&c, &users[0], warm["token"].as_str().unwrap()).await;

    let monitor = redis.monitor().await;
    let mut tokens = Vec::new();
    for session in &users[1..] {
        tokens.push(
            s.join(&c, session, 1).await.1["token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let seconds = registered.elapsed().as_secs() as usize;
    let joins = monitor.take().await;
    let sadds = joins.iter().filter(|c| *c == "SADD").count();
    assert!(
        sadds <= 1 + seconds,
        "9 new tokens behind another: a registration only once a second ({seconds} s): {joins:?}"
    );
    assert_eq!(
        joins.len(),
        18 + sadds,
        "9 new tokens × (session GETEX + one script): {joins:?}"
    );
    assert_eq!(joins.iter().filter(|c| *c == "GETEX").count(), 9);
    assert_eq!(joins.iter().filter(|c| *c == "EVALSHA").count(), 9);

    // The first in another concert's empty line registers that room, after the room's
    // restore (this Redis never saw it: the script answers RESTORE, the restore's own script
    // and registration, then the join's script again).
    assert_eq!(s.join(&c, &users[1], 2).await.0, 201);
    let first = monitor.take().await;
    assert_eq!(
        first,
        ["GETEX", "EVALSHA", "EVALSHA", "SADD", "EVALSHA", "SADD"],
        "{first:?}"
    );

    for session in &users[1..] {
        s.join(&c, session, 1).await;
    }
    let again = monitor.take().await;
    assert_eq!(
        again.len(),
        18,
        "9 joins with a token already × (GETEX + one script): {again:?}"
    );

    for (session, token) in users[1..].iter().zip(&tokens) {
        assert_eq!(s.poll(&c, session, token).await.0, 200);
    }
    let polls = monitor.take().await;
    assert_eq!(polls.len(), 18, "9 polls × (GETEX + one script): {polls:?}");
    assert_eq!(polls.iter().filter(|c| *c == "EVALSHA").count(), 9);
}

#[tokio::test]
async fn a_confirmed_reservation_retires_the_buyers_token_once() {
    use common::events::{RESERVATION_CONFIRMED, ReservationConfirmed};
    use common::kafka::{Envelope, KafkaClient};

    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let user_id = USERS;
    let session = s.fan_sessions(1, user_id).await.remove(0);
    let (_, joined) = s.join(&c, &session, 3).await;
    let token = joined["token"].as_str().unwrap().to_owned();
    s.room().admit(3, s.clock.now()).await.unwrap();
    assert_eq!(s.poll(&c, &session, &token).await.1["status"], "ACTIVE");

    let event = Envelope::new(
        RESERVATION_CONFIRMED,
        ReservationConfirmed {
            reservation_id: 9,
            payment_id: 4,
            user_id,
            concert_id: 3,
            schedule_id: 7,
            seat_nos: vec![1, 2],
        },
        s.clock.now(),
    );
    let kafka = KafkaClient::new(&s.config.kafka).unwrap();
    let payload = serde_json::to_vec(&event).unwrap();
    let deliver = || async {
        kafka
            .send(
                &kafka.topic(RESERVATION_CONFIRMED),
                "9",
                &payload,
                rdkafka::message::OwnedHeaders::new(),
            )
            .await
            .unwrap();
    };
    let handled_up_to = |n: i64| {
        let c = c.clone();
        let url = s.url("/metrics");
        eventually(
            "the consumer to handle the delivery",
            Duration::from_secs(30),
            move || {
                let (c, url) = (c.clone(), url.clone());
                async move {
                    let metrics = c.get(url).send().await.ok()?.text().await.ok()?;
                    (handled(&metrics) == Some(n)).then_some(())
                }
            },
        )
    };
    deliver().await;
    handled_up_to(1).await;
    assert_eq!(s.poll(&c, &session, &token).await.1["status"], "EXPIRED");
    assert_eq!(
        zcard(&s, s.queue_keys().active(3)).await,
        0,
        "the slot is free for the next person"
    );

    // The buyer comes back for more and is admitted again; then the same event comes again
    // (a consumer that restarted before committing its offset): the new token stays.
    let (_, again) = s.join(&c, &session, 3).await;
    let second = again["token"].as_str().unwrap().to_owned();
    assert_ne!(second, token);
    s.room().admit(3, s.clock.now()).await.unwrap();
    assert_eq!(s.poll(&c, &session, &second).await.1["status"], "ACTIVE");
    deliver().await;
    handled_up_to(2).await;
    assert_eq!(
        s.poll(&c, &session, &second).await.1["status"],
        "ACTIVE",
        "the redelivery was recognised: it retired nothing"
    );
    assert_eq!(
        s.room().retire(event.id, user_id, 3).await.unwrap(),
        Retired::SeenBefore
    );
    assert_eq!(zcard(&s, s.queue_keys().active(3)).await, 1);
}

/// A batch of purchases of one concert retires in one script, each at most once: the
/// buyers' tokens leave the active set, a buyer without a token is told so, an event seen
/// before (alone or twice in the batch) retires nothing, and other buyers keep theirs.
#[tokio::test]
async fn a_batch_of_purchases_retires_each_buyers_token_once_in_one_script() {
    let redis = PrivateRedis::start().await;
    let s = spawn_app_with(|env| env.with("REDIS_URL", redis.url.clone())).await;
    let c = reqwest::Client::new();
    let sessions = s.fan_sessions(6, USERS).await;
    let mut tokens = Vec::new();
    for session in &sessions[..5] {
        let (_, joined) = s.join(&c, session, 2).await;
        tokens.push(joined["token"].as_str().unwrap().to_owned());
    }
    s.room().admit(2, s.clock.now()).await.unwrap();
    for (session, token) in sessions.iter().zip(&tokens) {
        assert_eq!(s.poll(&c, session, token).await.1["status"], "ACTIVE");
    }
    let event = |_: u8| sea_orm::prelude::Uuid::new_v4();
    let (seen, twice) = (event(0), event(1));
    assert_eq!(
        s.room().retire(seen, USERS, 2).await.unwrap(),
        Retired::Token
    );

    let monitor = redis.monitor().await;
    let retired = s
        .room()
        .retire_each(
            2,
            &[
                (seen, USERS),
                (event(2), USERS + 1),
                (twice, USERS + 2),
                (twice, USERS + 2),
                (event(3), USERS + 3),
                (event(4), USERS + 5),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        retired,
        [
            Retired::SeenBefore,
            Retired::Token,
            Retired::Token,
            Retired::SeenBefore,
            Retired::Token,
            Retired::NoActiveToken,
        ]
    );
    let commands = monitor.take().await;
    assert_eq!(
        commands
            .iter()
            .filter(|c| *c == "EVALSHA" || *c == "EVAL")
            .count(),
        1,
        "one script for the batch: {commands:?}"
    );
    for (i, (session, token)) in sessions.iter().zip(&tokens).enumerate() {
        let want = if i == 4 { "ACTIVE" } else { "EXPIRED" };
        assert_eq!(
            s.poll(&c, session, token).await.1["status"],
            want,
            "fan {i}"
        );
    }
    assert_eq!(zcard(&s, s.queue_keys().active(2)).await, 1);
}

#[tokio::test]
async fn an_open_event_stream_repeats_the_status_and_keeps_the_token_in_line() {
    let s = spawn_app_with(|env| {
        env.with("QUEUE_SSE_POLL_MS", "100")
            .with("QUEUE_SSE_KEEPALIVE_SECS", "1")
            .with("QUEUE_WAITING_IDLE_TIMEOUT_SECS", "1")
    })
    .await;
    let c = reqwest::Client::new();
    let session = s.fan_sessions(1, USERS).await.remove(0);
    let (_, joined) = s.join(&c, &session, 1).await;
    let token = joined["token"].as_str().unwrap();
    let mut res = s.open_events(&c, &session, token).await;

    // Nothing changes for 2.5 s (longer than the idle timeout): the stream still repeats the
    // status every keep-alive period, and its checks are heartbeats. Both are real time (the
    // stream's pacing, Redis's heartbeat TTL), so this one waits.
    let mut frames = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(until, res.chunk())
        .await
        .map(Result::unwrap)
    {
        assert!(String::from_utf8_lossy(&chunk).contains("\"WAITING\""));
        frames += 1;
    }
    assert!(
        frames >= 3,
        "first frame plus a repeat every second, got {frames}"
    );
    let admission = s.room().admit(1, s.clock.now()).await.unwrap();
    assert_eq!(
        (admission.admitted, admission.abandoned),
        (1, 0),
        "the streaming user was still in line"
    );
}

#[tokio::test]
async fn an_active_pass_runs_out_by_the_clock_and_joining_again_queues_at_the_back() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let user_id = USERS;
    let session = s.fan_sessions(1, user_id).await.remove(0);
    let (_, joined) = s.join(&c, &session, 1).await;
    let token = joined["token"].as_str().unwrap();
    s.room().admit(1, s.clock.now()).await.unwrap();
    let (_, status) = s.poll(&c, &session, token).await;
    assert_eq!(status["status"], "ACTIVE");
    let until: chrono::DateTime<Utc> = status["active_until"].as_str().unwrap().parse().unwrap();

    // Just before the end the pass holds; just after, it has run out for every reader.
    s.clock.advance(
        (until - s.clock.now() - chrono::Duration::seconds(5))
            .to_std()
            .unwrap(),
    );
    assert_eq!(s.poll(&c, &session, token).await.1["status"], "ACTIVE");
    s.clock.advance(Duration::from_secs(6));
    assert_eq!(s.poll(&c, &session, token).await.1["status"], "EXPIRED");
    let err = ActiveQueuePass::check(&s.queue_keys(), user_id, token, s.clock.now())
        .await
        .unwrap_err();
    assert!(err.detail().contains("expired"), "{}", err.detail());

    let (code, again) = s.join(&c, &session, 1).await;
    assert_eq!(code, 201, "a new token: {again}");
    assert_ne!(again["token"], joined["token"]);
    let admission = s.room().admit(1, s.clock.now()).await.unwrap();
    assert_eq!(
        (admission.expired, admission.admitted),
        (1, 1),
        "the run-out pass frees its slot at the next tick"
    );
}

/// However many fans stream their status from one process, the process asks Redis about
/// their line once per tick (DESIGN §11), and about one fan only when admission reaches it.
#[tokio::test]
async fn open_streams_cost_redis_one_read_per_tick_not_one_per_fan() {
    const FANS: usize = 40;
    const POLL_MS: u64 = 100;
    let redis = PrivateRedis::start().await;
    let s = spawn_app_with(|env| {
        env.with("REDIS_URL", redis.url.clone())
            .with("QUEUE_SSE_POLL_MS", POLL_MS.to_string())
    })
    .await;
    let c = reqwest::Client::new();
    let users = s.fan_sessions(FANS, USERS).await;
    let mut streams = Vec::new();
    for session in &users {
        let (_, joined) = s.join(&c, session, 1).await;
        let mut res = s
            .open_events(&c, session, joined["token"].as_str().unwrap())
            .await;
        assert_eq!(res.status(), 200);
        res.chunk().await.unwrap().expect("the first frame");
        streams.push(res);
    }

    let monitor = redis.monitor().await;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(15 * POLL_MS)).await;
    let seen = monitor.take().await;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap();
    let ticks_at_most = elapsed_ms / POLL_MS + 2;
    assert!(
        !seen.is_empty() && seen.iter().all(|c| c == "EVALSHA"),
        "only the ticker's reads: {seen:?}"
    );
    assert!(
        seen.len() as u64 <= ticks_at_most,
        "{} commands in {elapsed_ms} ms with {FANS} streams open: one reader, not one per fan",
        seen.len()
    );

    // Admission reaches the first five: those five streams ask Redis about their own fan, the
    // other streams work their new positions out from the tick.
    let mut room = s.config.queue.clone();
    room.admit_per_tick = 5;
    let admitted =
        users_api::domain::queue::WaitingRoom::new(s.queue_keys(), room, s.clock.clone())
            .admit(1, s.clock.now())
            .await
            .unwrap();
    assert_eq!(admitted.admitted, 5);
    let mut actives = 0;
    for res in &mut streams[..5] {
        let frames = rest_of_stream(res).await;
        assert_eq!(frame_data(frames.last().unwrap())["status"], "ACTIVE");
        actives += 1;
    }
    let next = streams[5].chunk().await.unwrap().expect("a frame");
    let next = frame_data(std::str::from_utf8(&next).unwrap());
    assert_eq!(
        (next["status"].as_str(), next["position"].as_i64()),
        (Some("WAITING"), Some(1)),
        "the sixth fan is now first in line"
    );
    let seen = monitor.take().await;
    let checks = seen.iter().filter(|c| *c == "EVALSHA").count();
    assert_eq!(actives, 5);
    assert!(
        checks < FANS,
        "the admitted fans' checks and the ticks, not a check per fan: {seen:?}"
    );
}

/// An open stream keeps its fan in line through its process's lease; a process that stops
/// renewing it (it crashed) stops keeping them, and a stream that closes hands its fan the
/// idle timeout's grace, as a poll would.
#[tokio::test]
async fn a_stream_holds_its_fan_only_while_its_process_renews_the_lease() {
    let s = spawn_app_with(|env| env.with("QUEUE_WAITING_IDLE_TIMEOUT_SECS", "1")).await;
    let c = reqwest::Client::new();
    let users = s.fan_sessions(3, USERS).await;
    let mut tokens = Vec::new();
    for session in &users {
        let (_, joined) = s.join(&c, session, 1).await;
        tokens.push(joined["token"].as_str().unwrap().to_owned());
    }
    // Three processes' worth of streams, without an HTTP server: the first one crashes (never
    // ticks again), the second keeps ticking, the third's stream closes.
    let (crashed, alive, closing) = (s.room(), s.room(), s.room());
    for (room, (user, token)) in [&crashed, &alive, &closing]
        .into_iter()
        .zip((USERS..).zip(&tokens))
    {
        let (status, place) = room.watch(user, token).await.unwrap();
        assert_eq!(status.status, QueueState::Waiting);
        assert!(place.is_some());
    }
    closing.leave(&tokens[2]).await.unwrap();
    // Past the idle timeout on Redis's clock, with the living process ticking.
    for _ in 0..8 {
        alive.tick(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut conn = s.queue_keys().redis().conn();
    let leases: i64 = redis::cmd("HLEN")
        .arg(format!("{}@", s.queue_keys().alive_prefix(1)))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(leases, 2, "the closed stream let go of its fan");
    let admission = s.room().admit(1, s.clock.now()).await.unwrap();
    assert_eq!(
        (admission.admitted, admission.abandoned),
        (1, 2),
        "only the fan whose process still ticks is admitted"
    );
    let (status, _) = alive.watch(USERS + 1, &tokens[1]).await.unwrap();
    assert_eq!(status.status, QueueState::Active);
    let (gone, _) = crashed.watch(USERS, &tokens[0]).await.unwrap();
    assert_eq!(gone.status, QueueState::Expired);
}
