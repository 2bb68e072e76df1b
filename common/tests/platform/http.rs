//! problem+json rules, request ids, metrics, readiness and graceful shutdown.

use std::collections::{HashMap, HashSet};
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

/// The Redis connection a request's handler gets, by the worker thread that ran it.
/// 503 when the connection fails.
async fn redis_client_id(redis: web::Data<common::redis::RedisStore>) -> HttpResponse {
    let id: i64 = match redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut redis.conn())
        .await
    {
        Ok(id) => id,
        Err(e) => return HttpResponse::ServiceUnavailable().body(e.to_string()),
    };
    let thread = format!("{:?}", std::thread::current().id());
    HttpResponse::Ok().json(serde_json::json!({"thread": thread, "client": id}))
}

/// Who answered `n` requests to `/client`, each from a new client (a new connection, which
/// the server hands to its workers in turn): the Redis connections by worker thread.
async fn clients_by_thread(app: &TestApp, n: usize) -> HashMap<String, HashSet<i64>> {
    let mut by_thread: HashMap<String, HashSet<i64>> = HashMap::new();
    for _ in 0..n {
        let body: Value = reqwest::get(app.url("/client"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        by_thread
            .entry(body["thread"].as_str().unwrap().to_owned())
            .or_default()
            .insert(body["client"].as_i64().unwrap());
    }
    by_thread
}

/// `n` requests to `/client`, each from a new client, are all answered.
async fn every_request_answered(app: &TestApp, n: usize) {
    for _ in 0..n {
        let res = reqwest::get(app.url("/client")).await.unwrap();
        let status = res.status();
        assert_eq!(status, 200, "{}", res.text().await.unwrap());
    }
}

#[tokio::test]
async fn each_http_worker_talks_to_redis_over_a_connection_of_its_own_that_ends_with_it() {
    // A server of its own, so that its client list holds this test's connections only.
    let private = PrivateRedis::start().await;
    let store = redis_store("worker-conn:", &private.url);
    let id = |mut conn: common::redis::RedisConn| async move {
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .unwrap();
        id
    };
    let background = id(store.conn()).await;
    let data = web::Data::new(store.clone());
    let app = TestApp::start(service_with(Readiness::default(), move |cfg| {
        cfg.app_data(data.clone())
            .route("/client", web::get().to(redis_client_id));
    }));

    let by_thread = clients_by_thread(&app, 20).await;
    assert_eq!(by_thread.len(), 2, "both workers served: {by_thread:?}");
    let workers: Vec<i64> = by_thread
        .values()
        .map(|ids| {
            assert_eq!(ids.len(), 1, "one connection per worker: {by_thread:?}");
            *ids.iter().next().unwrap()
        })
        .collect();
    assert_ne!(workers[0], workers[1], "{by_thread:?}");
    assert!(!workers.contains(&background), "{by_thread:?} {background}");
    assert_eq!(
        id(store.conn()).await,
        background,
        "the test's thread keeps the background one"
    );

    // Redis drops every connection (a restart, a failover). Each connection learns it only
    // when a command on it fails: readiness asks over every one, so once it is green again
    // no request meets a dead connection.
    let mut killer = redis::Client::open(private.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut killer)
        .await
        .unwrap();
    assert!(
        killed >= 3,
        "the background and both workers' connections: {killed}"
    );
    eventually(
        "readiness to be green again",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            async move { store.ping().await.ok() }
        },
    )
    .await;
    every_request_answered(&app, 20).await;
    let workers: Vec<i64> = clients_by_thread(&app, 20)
        .await
        .into_values()
        .flatten()
        .collect();
    assert_eq!(workers.len(), 2, "each worker connected again: {workers:?}");
    let background = id(store.conn()).await;

    // The workers' connections go with their threads.
    app.stop().await.unwrap();
    let list = || {
        let mut conn = store.conn();
        let workers = workers.clone();
        async move {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut conn)
                .await
                .ok()?;
            let open = |id: i64| list.lines().any(|l| l.starts_with(&format!("id={id} ")));
            (!workers.iter().any(|&w| open(w)) && open(background)).then_some(())
        }
    };
    eventually(
        "the workers' connections to close",
        Duration::from_secs(10),
        list,
    )
    .await;
}

/// The first command on each connection after Redis went away fails. After one such
/// failure anywhere, every HTTP thread opens a new connection: one failed request, not one
/// per thread, and then every request is answered.
#[tokio::test]
async fn after_redis_restarts_one_failed_request_and_every_worker_is_back() {
    let mut private = PrivateRedis::start().await;
    let store = redis_store("worker-restart:", &private.url);
    let data = web::Data::new(store.clone());
    let app = TestApp::start(service_with(Readiness::default(), move |cfg| {
        cfg.app_data(data.clone())
            .route("/client", web::get().to(redis_client_id));
    }));
    assert_eq!(
        clients_by_thread(&app, 20).await.len(),
        2,
        "both workers have a connection"
    );

    private.restart_empty().await;
    // The connections find out in their own time; give them some.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // One client, one keep-alive connection: one worker waits for Redis, as a fan would.
    let one = reqwest::Client::new();
    eventually(
        "a request to be answered again",
        Duration::from_secs(10),
        || {
            let request = one.get(app.url("/client"));
            async move { (request.send().await.ok()?.status() == 200).then_some(()) }
        },
    )
    .await;
    // A new client for each request: the two workers in turn.
    every_request_answered(&app, 20).await;
    app.stop().await.unwrap();
}
