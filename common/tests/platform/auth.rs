//! Session and queue-pass extractors against real Redis.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use chrono::Utc;
use common::ApiError;
use common::auth::{
    ActiveQueuePass, AuthUser, QueueKeys, Role, Session, SessionStore, new_queue_token,
};
use common::http::Readiness;
use common::testkit::{TestApp, redis_url, unique_id};
use serde_json::Value;

use crate::helpers::{redis_store, service_with};

async fn me(user: AuthUser) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"id": user.id, "role": user.role.as_str()}))
}

async fn admin_only(user: AuthUser) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    Ok(HttpResponse::Ok().finish())
}

async fn concert_page(
    pass: ActiveQueuePass,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    pass.require_concert(path.into_inner())?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"active_until": pass.active_until})))
}

struct Fixture {
    app: TestApp,
    sessions: SessionStore,
    keys: QueueKeys,
}

async fn fixture(ttl: Duration) -> Fixture {
    let redis = redis_store(&format!("{}:", unique_id()), &redis_url());
    let sessions = SessionStore::new(redis.clone(), ttl);
    let keys = QueueKeys::new(redis);
    let (s, k) = (
        web::Data::new(sessions.clone()),
        web::Data::new(keys.clone()),
    );
    let app = TestApp::start(service_with(Readiness::default(), move |cfg| {
        cfg.app_data(s.clone())
            .app_data(k.clone())
            .route("/me", web::get().to(me))
            .route("/admin", web::get().to(admin_only))
            .route("/concerts/{id}/page", web::get().to(concert_page));
    }));
    Fixture {
        app,
        sessions,
        keys,
    }
}

async fn code_of(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (
        status,
        body["code"].as_str().unwrap_or_default().to_owned(),
        body["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn sessions_authenticate_slide_and_die_on_logout() {
    let f = fixture(Duration::from_secs(60)).await;
    let c = reqwest::Client::new();
    let session = Session {
        user_id: 7,
        username: "ann".into(),
        role: Role::User,
    };
    let (token, expires_at) = f.sessions.create(&session).await.unwrap();
    assert!(expires_at > Utc::now());

    let res = c
        .get(f.app.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], 7);

    // Only the hash of the token is stored, and its TTL slides on use.
    let mut conn = f.keys.redis().conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}session:*", f.keys.redis().prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert!(!keys[0].contains(&token));
    let _: () = redis::cmd("EXPIRE")
        .arg(&keys[0])
        .arg(5)
        .query_async(&mut conn)
        .await
        .unwrap();
    c.get(f.app.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 50, "TTL slid back to the session lifetime, got {ttl}");

    assert_eq!(
        code_of(
            c.get(f.app.url("/admin"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
        )
        .await
        .1,
        "FORBIDDEN"
    );

    f.sessions.delete(&token).await.unwrap();
    let (status, code, _) = code_of(
        c.get(f.app.url("/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "UNAUTHENTICATED"));
}

#[tokio::test]
async fn missing_unknown_and_malformed_sessions_are_401() {
    let f = fixture(Duration::from_secs(60)).await;
    let c = reqwest::Client::new();
    for req in [
        c.get(f.app.url("/me")),
        c.get(f.app.url("/me")).bearer_auth("not-a-session"),
        c.get(f.app.url("/me")).header("authorization", "Basic abc"),
        c.get(f.app.url("/me")).header("authorization", "Bearer "),
    ] {
        let (status, code, _) = code_of(req.send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (401, "UNAUTHENTICATED"));
    }
}

#[tokio::test]
async fn queue_pass_requires_an_active_token_of_this_user_and_concert() {
    let f = fixture(Duration::from_secs(60)).await;
    let c = reqwest::Client::new();
    let (ann, _) = f
        .sessions
        .create(&Session {
            user_id: 1,
            username: "ann".into(),
            role: Role::User,
        })
        .await
        .unwrap();
    let (bob, _) = f
        .sessions
        .create(&Session {
            user_id: 2,
            username: "bob".into(),
            role: Role::User,
        })
        .await
        .unwrap();
    let mut conn = f.keys.redis().conn();

    // What users-api writes when ann joins concert 5 and is admitted.
    let token = new_queue_token(5);
    let until = Utc::now().timestamp_millis() + 60_000;
    let _: () = redis::cmd("SET")
        .arg(f.keys.user(5, 1))
        .arg(&token)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(f.keys.active(5))
        .arg(until)
        .arg(&token)
        .query_async(&mut conn)
        .await
        .unwrap();

    let get = |session: &str, concert: i64, token: Option<&str>| {
        let mut r = c
            .get(f.app.url(&format!("/concerts/{concert}/page")))
            .bearer_auth(session);
        if let Some(t) = token {
            r = r.header("x-queue-token", t);
        }
        r.send()
    };
    assert_eq!(get(&ann, 5, Some(&token)).await.unwrap().status(), 200);

    let cases = [
        (get(&ann, 5, None).await.unwrap(), "missing"),
        (get(&ann, 5, Some("garbage")).await.unwrap(), "malformed"),
        (get(&ann, 6, Some(&token)).await.unwrap(), "another concert"),
        (get(&bob, 5, Some(&token)).await.unwrap(), "another user"),
    ];
    for (res, why) in cases {
        let (status, code, detail) = code_of(res).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "QUEUE_TOKEN_INVALID"),
            "{why}"
        );
        assert!(detail.contains(why), "{why}: {detail}");
    }

    // Waiting, then expired.
    let _: () = redis::cmd("ZREM")
        .arg(f.keys.active(5))
        .arg(&token)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(f.keys.waiting(5))
        .arg(1)
        .arg(&token)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        code_of(get(&ann, 5, Some(&token)).await.unwrap())
            .await
            .2
            .contains("waiting")
    );
    let _: () = redis::cmd("ZREM")
        .arg(f.keys.waiting(5))
        .arg(&token)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(f.keys.active(5))
        .arg(Utc::now().timestamp_millis() - 1)
        .arg(&token)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        code_of(get(&ann, 5, Some(&token)).await.unwrap())
            .await
            .2
            .contains("expired")
    );

    // No session at all is a session problem first.
    let res = c
        .get(f.app.url("/concerts/5/page"))
        .header("x-queue-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(res).await.1, "UNAUTHENTICATED");
}
