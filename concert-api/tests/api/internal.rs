//! `/internal/**` requires the service credential: `X-Internal-Token` holding
//! `INTERNAL_API_TOKEN`, or 401 problem+json `INTERNAL_UNAUTHENTICATED`; a concert-api
//! started without the token refuses every internal request.

use common::testkit::{INTERNAL_TEST_TOKEN, Isolation, TestApp};
use serde_json::Value;

use crate::helpers::spawn_app;

const HEADER: &str = "x-internal-token";

async fn refused(res: reqwest::Response, what: &str) {
    assert_eq!(res.status(), 401, "{what}");
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "INTERNAL_UNAUTHENTICATED", "{what}: {body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("X-Internal-Token"),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn internal_routes_require_the_service_credential() {
    let s = spawn_app().await;
    let (concert, schedule) = s.concert_with_schedule(10, -60, 3600).await;
    let buyer = s.buyers(1, concert).await.remove(0);
    let (status, held) = s.hold(&buyer, schedule, &[1, 2]).await;
    assert_eq!(status, 201, "{held}");
    let path = format!("/internal/reservations/{}", held["id"]);
    let c = reqwest::Client::new();

    refused(c.get(s.url(&path)).send().await.unwrap(), "no header").await;
    let wrong = "w".repeat(INTERNAL_TEST_TOKEN.len());
    refused(
        c.get(s.url(&path))
            .header(HEADER, wrong)
            .send()
            .await
            .unwrap(),
        "a wrong token",
    )
    .await;
    // One character short of the right one: still wrong.
    refused(
        c.get(s.url(&path))
            .header(HEADER, &INTERNAL_TEST_TOKEN[1..])
            .send()
            .await
            .unwrap(),
        "a truncated token",
    )
    .await;

    let ok = c
        .get(s.url(&path))
        .header(HEADER, INTERNAL_TEST_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let r: Value = ok.json().await.unwrap();
    assert_eq!(r["user_id"], buyer.user_id);
    assert_eq!(r["status"], "HELD");

    // Every other /internal request too: nothing about the internal surface is told to an
    // unauthenticated caller, not even that a path does not exist.
    refused(
        c.post(s.url("/internal/settlements"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap(),
        "a settlement",
    )
    .await;
    refused(
        c.get(s.url("/internal/nothing-here")).send().await.unwrap(),
        "an unknown internal path",
    )
    .await;
    let unknown = c
        .get(s.url("/internal/nothing-here"))
        .header(HEADER, INTERNAL_TEST_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // Public routes never need it.
    let public = c
        .get(s.url(&format!("/api/concerts/{concert}")))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 200);
}

/// Fail closed: without `INTERNAL_API_TOKEN` concert-api starts, serves its public routes,
/// and refuses every internal request, whatever it carries.
#[tokio::test]
async fn without_a_configured_token_every_internal_request_is_refused() {
    let iso = Isolation::new().await;
    let env = iso
        .env("CONCERT_DATABASE_URL")
        .with("INTERNAL_API_TOKEN", "");
    let config = concert_api::Config::from_env(&env).unwrap();
    assert!(config.http.internal_token.is_none());
    let app = TestApp::start(concert_api::Application::build(config).await.unwrap());
    let c = reqwest::Client::new();
    for token in [None, Some(""), Some(INTERNAL_TEST_TOKEN)] {
        let mut req = c.get(app.url("/internal/reservations/1"));
        if let Some(t) = token {
            req = req.header(HEADER, t);
        }
        refused(req.send().await.unwrap(), &format!("token {token:?}")).await;
    }
    let public = c.get(app.url("/api/concerts")).send().await.unwrap();
    assert_eq!(public.status(), 200);
    app.stop().await.unwrap();
}
