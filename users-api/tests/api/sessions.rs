//! Log out everywhere, the absolute session lifetime, and sessions written before it existed,
//! against real Redis.

use std::time::Duration;

use common::redis::{RedisConn, RedisStore};
use serde_json::{Value, json};

use crate::helpers::{Spawned, spawn_app, spawn_app_with};

const PASSWORD: &str = "password-123";

async fn log_in(s: &Spawned, username: &str) -> Value {
    let res = reqwest::Client::new()
        .post(s.url("/api/sessions"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "log in {username}");
    res.json().await.unwrap()
}

async fn token(s: &Spawned, username: &str) -> String {
    log_in(s, username).await["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn me(s: &Spawned, token: &str) -> u16 {
    reqwest::Client::new()
        .get(s.url("/api/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn log_out(s: &Spawned, token: &str, query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .delete(s.url(&format!("/api/sessions{query}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// A connection to the app's Redis (one server or a cluster) and its session keys.
async fn redis(s: &Spawned) -> (RedisConn, Vec<String>) {
    let mut conn = RedisStore::connect(&s.config.redis).unwrap().conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}session:*", s.iso.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    (conn, keys)
}

#[tokio::test]
async fn log_out_all_ends_every_session_of_the_caller_and_no_one_elses() {
    let s = spawn_app().await;
    let first = s.session("many_devices").await;
    let (second, third) = (
        token(&s, "many_devices").await,
        token(&s, "many_devices").await,
    );
    let other = s.session("bystander").await;
    let other_2 = token(&s, "bystander").await;

    for bad in ["?all=yes", "?all=1", "?all=", "?all=TRUE"] {
        let res = log_out(&s, &second, bad).await;
        assert_eq!(res.status(), 400, "{bad}");
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["code"], "INVALID_REQUEST");
        assert!(p["detail"].as_str().unwrap().contains("`all`"), "{p}");
    }
    for t in [&first, &second, &third] {
        assert_eq!(me(&s, t).await, 200, "a bad request ends nothing");
    }

    assert_eq!(log_out(&s, &second, "?all=true").await.status(), 204);
    for t in [&first, &second, &third] {
        assert_eq!(me(&s, t).await, 401, "every session of the caller ended");
    }
    assert_eq!(log_out(&s, &first, "?all=true").await.status(), 401);
    for t in [&other, &other_2] {
        assert_eq!(
            me(&s, t).await,
            200,
            "another user's sessions are untouched"
        );
    }

    // Plain log-out (and `all=false`) still ends only the current session.
    assert_eq!(log_out(&s, &other, "?all=false").await.status(), 204);
    assert_eq!(me(&s, &other).await, 401);
    assert_eq!(me(&s, &other_2).await, 200);
    assert_eq!(log_out(&s, &other_2, "").await.status(), 204);
    assert_eq!(me(&s, &other_2).await, 401);

    // A new log-in after "everywhere" works as usual.
    let again = token(&s, "many_devices").await;
    assert_eq!(me(&s, &again).await, 200);
}

#[tokio::test]
async fn a_session_slides_but_never_past_its_absolute_lifetime() {
    let s = spawn_app_with(|env| {
        env.with("SESSION_TTL_SECS", "600")
            .with("SESSION_MAX_LIFETIME_SECS", "900")
    })
    .await;
    s.session("short_lived").await;
    let session = log_in(&s, "short_lived").await;
    let at = |field: &str| -> chrono::DateTime<chrono::Utc> {
        session[field].as_str().unwrap().parse().unwrap()
    };
    let now = s.clock.now();
    let near = |t: chrono::DateTime<chrono::Utc>, secs: i64| {
        (t - (now + chrono::Duration::seconds(secs)))
            .num_seconds()
            .abs()
            <= 5
    };
    assert!(near(at("expires_at"), 600), "{session}");
    assert!(near(at("absolute_expires_at"), 900), "{session}");
    let token = session["token"].as_str().unwrap().to_owned();

    // 500 s in: used, so it slides; but only up to the deadline 400 s away, not 600 s.
    s.clock.advance(Duration::from_secs(500));
    assert_eq!(me(&s, &token).await, 200);
    let (mut conn, keys) = redis(&s).await;
    assert_eq!(keys.len(), 2);
    let mut ttls = Vec::new();
    for k in &keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        ttls.push(ttl);
    }
    ttls.sort();
    assert!(
        (390..=400).contains(&ttls[0]),
        "the used session is cut to its deadline: {ttls:?}"
    );

    // Past the deadline it is gone, though Redis would still keep it a while by TTL.
    s.clock.advance(Duration::from_secs(401));
    assert_eq!(me(&s, &token).await, 401);
    let (_, keys) = redis(&s).await;
    assert_eq!(
        keys.len(),
        1,
        "the expired session's key was deleted on sight"
    );
}

#[tokio::test]
async fn sessions_written_before_the_absolute_lifetime_still_work_and_are_capped() {
    let s = spawn_app_with(|env| env.with("SESSION_MAX_LIFETIME_SECS", "3600")).await;
    let token = s.session("old_timer").await;
    let (mut conn, keys) = redis(&s).await;
    assert_eq!(keys.len(), 1);
    let stored: String = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert!(stored["absolute_expires_at"].is_i64(), "{stored}");
    // What a session looked like before: no created_at, no deadline.
    let legacy = json!({
        "user_id": stored["user_id"],
        "username": "old_timer",
        "role": "USER",
    });
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(legacy.to_string())
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .unwrap();

    s.clock.advance(Duration::from_secs(3000));
    assert_eq!(me(&s, &token).await, 200, "an old session still works");
    let rewritten: String = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let rewritten: Value = serde_json::from_str(&rewritten).unwrap();
    let deadline = rewritten["absolute_expires_at"].as_i64().unwrap();
    let expected = s.clock.now().timestamp() + 3600;
    assert!((deadline - expected).abs() <= 5, "{rewritten}");

    // Capped from that first use: 3000 s later it still works, 3601 s later it is over.
    s.clock.advance(Duration::from_secs(3000));
    assert_eq!(me(&s, &token).await, 200);
    s.clock.advance(Duration::from_secs(601));
    assert_eq!(me(&s, &token).await, 401);
}

#[tokio::test]
async fn log_out_all_reaches_sessions_written_before_the_index() {
    let s = spawn_app().await;
    let old = s.session("pre_index").await;
    let (mut conn, keys) = redis(&s).await;
    let stored: String = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    let legacy = json!({"user_id": stored["user_id"], "username": "pre_index", "role": "USER"});
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(legacy.to_string())
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!(
            "{}user_sessions:{}",
            s.iso.redis_prefix, stored["user_id"]
        ))
        .query_async(&mut conn)
        .await
        .unwrap();
    let newer = token(&s, "pre_index").await;
    assert_eq!(log_out(&s, &old, "?all=true").await.status(), 204);
    assert_eq!(me(&s, &old).await, 401);
    assert_eq!(me(&s, &newer).await, 401);
}
