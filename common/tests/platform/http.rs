//! problem+json rules, request ids, metrics, readiness and graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use common::http::{Json, Readiness, UnlistedRoutes};
use common::testkit::{PrivateRedis, TcpProxy, TestApp, eventually, kafka_brokers};
use serde::Deserialize;
use serde_json::Value;

use crate::helpers::{ok, redis_store, service_documented, service_with};

#[allow(dead_code)]
#[derive(Deserialize)]
struct HoldBody {
    schedule_id: i64,
    seat_nos: Vec<u16>,
}

async fn hold(body: Json<HoldBody>) -> HttpResponse {
    HttpResponse::Created().json(serde_json::json!({"seats": body.into_inner().seat_nos.len()}))
}

async fn boom() -> HttpResponse {
    panic!("deliberate test panic")
}

async fn slow() -> HttpResponse {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    HttpResponse::Ok().body("finished")
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/hold", web::post().to(hold))
        .route("/boom", web::get().to(boom))
        .route("/slow", web::get().to(slow))
        .route("/ok", web::get().to(ok));
}

async fn problem(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/problem+json",
        "status {status} must be problem+json"
    );
    assert!(res.headers().get("x-request-id").is_some());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], "about:blank");
    assert!(body["title"].is_string() && body["detail"].is_string() && body["code"].is_string());
    (status, body)
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_field() {
    let app = TestApp::start(service_with(Readiness::default(), routes));
    let c = reqwest::Client::new();
    let cases = [
        (
            r#"{"schedule_id": 1, "seat_nos": [1, "two"]}"#,
            "seat_nos[1]",
        ),
        (r#"{"schedule_id": "x", "seat_nos": [1]}"#, "schedule_id"),
        (r#"{"schedule_id": 1}"#, "seat_nos"),
        (r#"{"schedule_id": 1, "seat_nos": [-1]}"#, "seat_nos[0]"),
        (
            r#"{"schedule_id": 99999999999999999999, "seat_nos": [1]}"#,
            "schedule_id",
        ),
        (r#"{"schedule_id": 1, "seat_nos": [1"#, "malformed JSON"),
        ("", "empty"),
    ];
    for (body, needle) in cases {
        let res = c
            .post(app.url("/hold"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, p) = problem(res).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(p["code"], "INVALID_REQUEST");
        assert!(
            p["detail"].as_str().unwrap().contains(needle),
            "{body} -> {p}"
        );
    }
    let res = c
        .post(app.url("/hold"))
        .json(&serde_json::json!({"schedule_id": 1, "seat_nos": [1, 2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn unknown_route_wrong_method_and_large_body_are_problems() {
    let app = TestApp::start(service_with(Readiness::default(), routes));
    let c = reqwest::Client::new();

    let (status, p) = problem(c.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!((status, p["code"].as_str()), (404, Some("NOT_FOUND")));

    let (status, p) = problem(c.get(app.url("/hold")).send().await.unwrap()).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (405, Some("METHOD_NOT_ALLOWED"))
    );

    let big = format!(
        r#"{{"schedule_id": 1, "seat_nos": [], "pad": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let res = c
        .post(app.url("/hold"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, p) = problem(res).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );

    let res = c
        .post(app.url("/hold"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res).await.0, 415);
}

/// A document listing `GET` and `DELETE /things/{id}`.
fn things_document() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::{OpenApiBuilder, PathsBuilder};
    let op = || OperationBuilder::new().build();
    let mut item = PathItem::new(HttpMethod::Get, op());
    item.delete = Some(op());
    OpenApiBuilder::new()
        .paths(PathsBuilder::new().path("/things/{id}", item))
        .build()
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow_naming_the_methods_the_path_takes() {
    let routes = |cfg: &mut web::ServiceConfig| {
        cfg.route("/things/{id}", web::get().to(ok))
            .route("/things/{id}", web::delete().to(ok))
            .route("/hold", web::post().to(hold))
            .app_data(web::Data::new(UnlistedRoutes::new(&[(
                "/hold",
                actix_web::http::Method::POST,
            )])));
    };
    let app = TestApp::start(service_documented(
        Readiness::default(),
        things_document(),
        routes,
    ));
    let c = reqwest::Client::new();
    for (method, path, allow) in [
        (reqwest::Method::POST, "/things/7", "DELETE, GET"),
        (reqwest::Method::PUT, "/things/abc", "DELETE, GET"),
        (reqwest::Method::GET, "/hold", "POST"),
        (reqwest::Method::POST, "/health/live", "GET"),
        (reqwest::Method::DELETE, "/openapi.json", "GET"),
    ] {
        let res = c
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        let allowed = res
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, p) = problem(res).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (405, Some("METHOD_NOT_ALLOWED")),
            "{method} {path}"
        );
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}");
    }
    // A path no route has is still 404, without `Allow`.
    let res = c.get(app.url("/things")).send().await.unwrap();
    assert!(res.headers().get("allow").is_none());
    assert_eq!(problem(res).await.0, 404);
    assert_eq!(
        c.get(app.url("/things/7")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_and_the_server_lives_on() {
    let app = TestApp::start(service_with(Readiness::default(), routes));
    let c = reqwest::Client::new();
    for _ in 0..3 {
        let (status, p) = problem(c.get(app.url("/boom")).send().await.unwrap()).await;
        assert_eq!(status, 500);
        assert_eq!(p["code"], "INTERNAL");
        assert!(
            !p["detail"].as_str().unwrap().contains("deliberate"),
            "panic text must not leak"
        );
    }
    assert_eq!(c.get(app.url("/ok")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn request_id_is_echoed_or_generated_and_metrics_count_routes() {
    let app = TestApp::start(service_with(Readiness::default(), routes));
    let c = reqwest::Client::new();
    let res = c
        .get(app.url("/ok"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("x-request-id").unwrap(), "abc-123");
    let res = c.get(app.url("/ok")).send().await.unwrap();
    let generated = res
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    c.get(app.url("/nope")).send().await.unwrap();
    let text = c
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",route="/ok",status="200",service="test"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(text.contains("http_request_duration_seconds_bucket"));

    let live = c.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let doc: Value = c
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
}

#[tokio::test]
async fn readiness_turns_503_naming_redis_when_it_is_unreachable() {
    // A server of its own: a proxy can stand in front of one server, not of a cluster (whose
    // clients learn the nodes' own addresses), whatever REDIS_URL names.
    let private = PrivateRedis::start().await;
    let proxy = TcpProxy::start(([127, 0, 0, 1], private.port).into()).await;
    let redis = redis_store("ready-test:", &format!("redis://{}", proxy.addr));
    let app = TestApp::start(service_with(
        Readiness {
            redis: Some(redis),
            ..Default::default()
        },
        routes,
    ));
    let c = reqwest::Client::new();

    let res = c.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["redis"], "ok");

    proxy.cut();
    let p = eventually(
        "readiness to report redis down",
        Duration::from_secs(15),
        || {
            let c = c.clone();
            let url = app.url("/health/ready");
            async move {
                let res = c.get(url).send().await.ok()?;
                (res.status() == 503).then_some(res)
            }
        },
    )
    .await;
    assert!(p.headers().get("retry-after").is_some());
    let (_, body) = problem(p).await;
    assert_eq!(body["code"], "NOT_READY");
    assert!(body["detail"].as_str().unwrap().contains("redis"), "{body}");
    assert!(
        body["checks"]["redis"]
            .as_str()
            .unwrap()
            .starts_with("down"),
        "{body}"
    );

    proxy.restore();
    eventually("readiness to recover", Duration::from_secs(15), || {
        let c = c.clone();
        let url = app.url("/health/ready");
        async move { (c.get(url).send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_stops_background_tasks() {
    let mut service = service_with(Readiness::default(), routes);
    let stopped = Arc::new(AtomicBool::new(false));
    let (flag, cancel) = (stopped.clone(), service.cancel_token());
    service.spawn("watcher", async move {
        cancel.cancelled().await;
        flag.store(true, Ordering::SeqCst);
    });
    let mut app = TestApp::start(service);
    let c = reqwest::Client::new();
    assert_eq!(c.get(app.url("/ok")).send().await.unwrap().status(), 200);

    let in_flight = tokio::spawn(c.get(app.url("/slow")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = app.url("/ok");
    app.trigger_stop();
    let res = in_flight
        .await
        .unwrap()
        .expect("in-flight request must complete");
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "finished");
    app.stop().await.expect("clean stop");
    assert!(
        stopped.load(Ordering::SeqCst),
        "background task saw the shutdown"
    );
    assert!(
        reqwest::Client::new().get(url).send().await.is_err(),
        "no longer accepting"
    );
}

/// DESIGN §6: the outbox absorbs a broker outage, so readiness must not depend on the broker.
/// Its state is watched in the background (`kafka_broker_up`) and only reported.
#[tokio::test]
async fn readiness_stays_200_without_the_broker_and_the_metric_says_it_is_down() {
    use common::kafka::KafkaClient;
    use common::metrics::Metrics;
    use tokio_util::sync::CancellationToken;

    let cancel = CancellationToken::new();
    // One service watching the real broker, one watching an address where nothing listens.
    let watched = |brokers: String| {
        let kafka = KafkaClient::new(&crate::helpers::kafka_config(&brokers, "")).unwrap();
        let metrics = Arc::new(Metrics::new("test"));
        tokio::spawn(common::startup::watch_broker(
            kafka,
            metrics.clone(),
            cancel.clone(),
        ));
        let app = TestApp::start(service_with(
            Readiness {
                broker: Some(metrics.clone()),
                ..Default::default()
            },
            routes,
        ));
        (metrics, app)
    };
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = nowhere.local_addr().unwrap().to_string();
    drop(nowhere);
    let (up_metrics, up_app) = watched(kafka_brokers());
    let (down_metrics, down_app) = watched(dead_addr);

    let c = reqwest::Client::new();
    let ready = |app: &TestApp, want: &'static str| {
        let c = c.clone();
        let url = app.url("/health/ready");
        async move {
            let res = c.get(url).send().await.ok()?;
            let status = res.status();
            let body: Value = res.json().await.ok()?;
            let state = body["not_required"]["broker"].as_str()?.to_owned();
            state.starts_with(want).then_some((status, body))
        }
    };
    let (status, _) = eventually("the broker watched as up", Duration::from_secs(20), || {
        ready(&up_app, "ok")
    })
    .await;
    assert_eq!(status, 200);
    assert!(up_metrics.broker_up());

    // The first check of an unreachable broker fails after its 3 s timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, body) = eventually(
        "the unreachable broker reported down",
        Duration::from_secs(20),
        || ready(&down_app, "down"),
    )
    .await;
    assert_eq!(
        status, 200,
        "a broker outage keeps the process ready: {body}"
    );
    assert!(!down_metrics.broker_up());
    assert!(
        down_metrics
            .render()
            .contains("kafka_broker_up{service=\"test\"} 0")
    );
    cancel.cancel();
}
