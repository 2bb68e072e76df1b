//! Sign-up, log-in, log-out, `me` and `create-admin` against real PostgreSQL and Redis.

use std::time::Duration;

use common::redis::RedisStore;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

async fn problem(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn sign_up_log_in_me_log_out() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let creds = json!({"username": "ann_1", "password": "password-123"});

    let res = c
        .post(s.url("/api/users"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["username"], "ann_1");
    assert_eq!(user["role"], "USER");
    assert!(user["id"].as_i64().unwrap() > 0);

    let res = c
        .post(s.url("/api/sessions"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let session: Value = res.json().await.unwrap();
    let token = session["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43, "32 random bytes, base64url");
    assert_eq!(session["user"], user);
    let expires: chrono::DateTime<chrono::Utc> =
        session["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires > chrono::Utc::now() + chrono::Duration::minutes(29));

    let me: Value = c
        .get(s.url("/api/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me, user);

    assert_eq!(
        c.delete(s.url("/api/sessions"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    for res in [
        c.get(s.url("/api/users/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        c.delete(s.url("/api/sessions"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    ] {
        let (status, p) = problem(res).await;
        assert_eq!((status, p["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    }
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_and_wrong_ones_are_refused() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    s.session("bob").await;
    for creds in [
        json!({"username": "bob", "password": "wrong-password"}),
        json!({"username": "nobody", "password": "password-123"}),
        json!({"username": "bob", "password": "p".repeat(10_000)}),
    ] {
        let (status, p) = problem(
            c.post(s.url("/api/sessions"))
                .json(&creds)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, p["code"].as_str()), (401, Some("BAD_CREDENTIALS")));
    }
    let rows = s.query("SELECT password_hash FROM users").await;
    let hash: String = rows[0].try_get("", "password_hash").unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains("password-123"));
}

#[tokio::test]
async fn fifty_concurrent_sign_ups_for_one_name_make_one_account() {
    // Fifty hashes through four slots on a busy test machine can take longer than the
    // default wait for a slot; this test is about the unique name, not about LOGIN_BUSY.
    let s = crate::helpers::spawn_app_with(|env| env.with("LOGIN_HASH_WAIT_MS", "60000")).await;
    let c = reqwest::Client::new();
    let attempts = (0..50).map(|i| {
        let c = c.clone();
        let url = s.url("/api/users");
        async move {
            c.post(url)
                .json(&json!({"username": "popular", "password": format!("password-{i}")}))
                .send()
                .await
                .unwrap()
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let created = results.iter().filter(|r| r.status() == 201).count();
    let taken = results.iter().filter(|r| r.status() == 409).count();
    assert_eq!((created, taken), (1, 49));
    assert_eq!(s.count_users().await, 1);
}

#[tokio::test]
async fn bad_sign_ups_are_400_naming_the_field_and_write_nothing() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let cases = [
        (json!({"password": "password-123"}), "username"),
        (json!({"username": "ann"}), "password"),
        (
            json!({"username": 5, "password": "password-123"}),
            "username",
        ),
        (json!({"username": "ann", "password": ["x"]}), "password"),
        (
            json!({"username": "an", "password": "password-123"}),
            "username",
        ),
        (
            json!({"username": "Ann", "password": "password-123"}),
            "username",
        ),
        (
            json!({"username": "a".repeat(33), "password": "password-123"}),
            "username",
        ),
        (
            json!({"username": "x".repeat(60_000), "password": "password-123"}),
            "username",
        ),
        (json!({"username": "ann", "password": "short"}), "password"),
        (
            json!({"username": "ann", "password": "p".repeat(129)}),
            "password",
        ),
    ];
    for (body, field) in cases {
        let (status, p) = problem(
            c.post(s.url("/api/users"))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(p["code"], "INVALID_REQUEST");
        assert!(
            p["detail"].as_str().unwrap().contains(field),
            "{field}: {p}"
        );
    }
    let huge = json!({"username": "ann", "password": "p".repeat(70_000)});
    assert_eq!(
        problem(
            c.post(s.url("/api/users"))
                .json(&huge)
                .send()
                .await
                .unwrap()
        )
        .await
        .0,
        413
    );
    assert_eq!(s.count_users().await, 0, "nothing written");

    // (username, password, a word the detail must hold)
    let weak = [
        ("ann", "password", "common"),
        ("ann", "Password1", "common"),
        ("ann", "P@ssw0rd", "common"),
        ("ann", "drowssap", "common"),
        ("ann", "iloveyou", "common"),
        ("ann", "12345678", "common"),
        ("ann", "qwertyuiop", "common"),
        ("ann", "aaaaaaaaaa", "common"),
        ("ann", "          ", "whitespace"),
        ("ann", "\t\n \t\n \t\n", "whitespace"),
        ("long_username", " Long_Username ", "username"),
        ("long_username", "LONG_USERNAME", "username"),
    ];
    for (username, password, says) in weak {
        let body = json!({"username": username, "password": password});
        let (status, p) = problem(
            c.post(s.url("/api/users"))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, p["code"].as_str()),
            (400, Some("WEAK_PASSWORD")),
            "{password:?}"
        );
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("password") && detail.contains(says),
            "{password:?}: {detail}"
        );
    }
    assert_eq!(s.count_users().await, 0, "nothing written");

    s.session("ann").await;
    let again = json!({"username": "ann", "password": "password-456"});
    let (status, p) = problem(
        c.post(s.url("/api/users"))
            .json(&again)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, p["code"].as_str()), (409, Some("USERNAME_TAKEN")));
}

#[tokio::test]
async fn expired_and_unknown_sessions_are_401() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let token = s.session("carol").await;
    // Let the session lapse the way a TTL does, without waiting 30 minutes. The TTL runs on
    // Redis's clock, not the app's, so the last 50 ms are waited out.
    let mut conn = RedisStore::connect(&s.config.redis).unwrap().conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}session:*", s.iso.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let _: () = redis::cmd("PEXPIRE")
        .arg(&keys[0])
        .arg(50)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for t in [token.as_str(), "unknown-token"] {
        let (status, p) = problem(
            c.get(s.url("/api/users/me"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, p["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    }
}

#[tokio::test]
async fn a_sessions_expiry_is_stated_by_the_services_clock() {
    let s = spawn_app().await;
    s.session("dave").await;
    s.clock.advance(Duration::from_secs(3600));
    let session: Value = reqwest::Client::new()
        .post(s.url("/api/sessions"))
        .json(&json!({"username": "dave", "password": "password-123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        session["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = chrono::Duration::from_std(s.config.session.ttl).unwrap();
    let from_clock = expires - (s.clock.now() + ttl);
    assert!(
        from_clock.num_seconds().abs() < 5,
        "expires_at is the clock's now + the session TTL: {expires}"
    );
    assert!(expires > chrono::Utc::now() + chrono::Duration::minutes(89));
}

#[tokio::test]
async fn create_admin_creates_then_resets_the_admin() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let run = |password: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_users-api"))
            .args(["create-admin", "--username", "admin"])
            .env("USERS_DATABASE_URL", &s.iso.db.url)
            .env("REDIS_URL", common::testkit::redis_url())
            .env("REDIS_KEY_PREFIX", &s.iso.redis_prefix)
            .env("ADMIN_PASSWORD", password)
            .output()
            .unwrap()
    };
    let log_in = |password: &'static str| {
        c.post(s.url("/api/sessions"))
            .json(&json!({"username": "admin", "password": password}))
            .send()
    };
    let me = |token: String| c.get(s.url("/api/users/me")).bearer_auth(token).send();
    assert!(run("first-password").status.success());
    let res = log_in("first-password").await.unwrap();
    assert_eq!(res.status(), 201);
    let session: Value = res.json().await.unwrap();
    assert_eq!(session["user"]["role"], "ADMIN");
    let old_token = session["token"].as_str().unwrap().to_owned();
    assert_eq!(me(old_token.clone()).await.unwrap().status(), 200);

    assert!(run("second-password").status.success());
    assert_eq!(
        me(old_token).await.unwrap().status(),
        401,
        "a reset ends the admin's sessions"
    );
    assert_eq!(log_in("first-password").await.unwrap().status(), 401);
    assert_eq!(log_in("second-password").await.unwrap().status(), 201);
    assert_eq!(s.count_users().await, 1);

    for (weak, says) in [
        ("short", "8 to 128"),
        ("password1", "common"),
        ("        admin ", "username"),
    ] {
        let out = run(weak);
        assert!(!out.status.success(), "{weak}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("ADMIN_PASSWORD") && stderr.contains(says),
            "{weak}: {stderr}"
        );
    }
    assert_eq!(log_in("second-password").await.unwrap().status(), 201);
}

/// A log-in crowd cannot make users-api hash without bound (each argon2 hash holds ~19 MiB):
/// with every hashing slot taken, a log-in or sign-up is a 503 `LOGIN_BUSY` with
/// `Retry-After`, having spent nothing; once a slot is free it goes through.
#[tokio::test]
async fn with_every_hashing_slot_busy_log_ins_are_told_to_retry_and_then_succeed() {
    let s = crate::helpers::spawn_app_with(|env| {
        env.with("LOGIN_MAX_CONCURRENT_HASHES", "2")
            .with("LOGIN_HASH_WAIT_MS", "50")
    })
    .await;
    let c = reqwest::Client::new();
    let creds = json!({"username": "crowd_1", "password": "password-123"});
    assert_eq!(
        c.post(s.url("/api/users"))
            .json(&creds)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );

    let full = s.config.hashing.fill().expect("the slots are free");
    let storm = futures_util::future::join_all((0..20).map(|i| {
        let body = if i % 2 == 0 {
            creds.clone()
        } else {
            json!({"username": format!("crowd_n{i}"), "password": "password-123"})
        };
        let path = if i % 2 == 0 {
            "/api/sessions"
        } else {
            "/api/users"
        };
        c.post(s.url(path)).json(&body).send()
    }))
    .await;
    for res in storm {
        let res = res.unwrap();
        assert_eq!(res.headers()["retry-after"], "1");
        let (status, body) = problem(res).await;
        assert_eq!((status, body["code"].as_str()), (503, Some("LOGIN_BUSY")));
    }

    drop(full);
    let res = c
        .post(s.url("/api/sessions"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "a free slot lets the log-in through");
    let (status, body) = problem(
        c.post(s.url("/api/sessions"))
            .json(&json!({"username": "crowd_n1", "password": "password-123"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("BAD_CREDENTIALS")),
        "a sign-up refused while busy created nothing"
    );
}
