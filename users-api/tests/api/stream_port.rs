//! The status streams' own listener (`USERS_API_STREAM_PORT`): the same route as the main
//! port, answered the same way, and nothing else.

use std::time::Duration;

use common::auth::Role;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{frame_data, rest_of_stream, spawn_app, spawn_app_with};

const USERS: i64 = 30_000;

/// Sends `request` as it is and reads the whole answer (the listener closes after it).
async fn raw(s: &crate::helpers::Spawned, request: &[u8]) -> (u16, String, Value) {
    let addr = s.stream_url("").trim_start_matches("http://").to_owned();
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("the listener closes after its answer")
        .unwrap();
    let text = String::from_utf8(answer).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    let status = head[9..12].parse().unwrap();
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap(),
    )
}

#[tokio::test]
async fn the_stream_port_answers_the_stream_route_as_the_main_port_does() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let session = s.fan_sessions(1, USERS).await.remove(0);
    let (_, joined) = s.join(&c, &session, 1).await;
    let token = joined["token"].as_str().unwrap();
    let path = format!("/api/queue/tokens/{token}/events");

    let mut main = c
        .get(s.url(&path))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    let mut lean = c
        .get(s.stream_url(&path))
        .bearer_auth(&session)
        .header("x-request-id", "lean-1")
        .send()
        .await
        .unwrap();
    for res in [&main, &lean] {
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(res.headers()["cache-control"], "no-cache");
        assert_eq!(res.headers()["x-accel-buffering"], "no");
    }
    assert_eq!(lean.headers()["x-request-id"], "lean-1");
    let first = |chunk: &[u8]| frame_data(std::str::from_utf8(chunk).unwrap());
    let on_main = first(&main.chunk().await.unwrap().unwrap());
    let on_lean = first(&lean.chunk().await.unwrap().unwrap());
    assert_eq!(on_main, on_lean, "the same first frame on either port");
    assert_eq!(on_lean["status"], "WAITING");

    // Refusals: the same status and code, as problem+json.
    let other = s
        .write_session(USERS + 99, "someone-else", Role::User)
        .await;
    let cases = [
        (None, path.clone(), 401, "UNAUTHENTICATED"),
        (Some("logged-out"), path.clone(), 401, "UNAUTHENTICATED"),
        (
            Some(session.as_str()),
            "/api/queue/tokens/1.nope/events".to_owned(),
            404,
            "QUEUE_TOKEN_NOT_FOUND",
        ),
        (
            Some(other.as_str()),
            path.clone(),
            404,
            "QUEUE_TOKEN_NOT_FOUND",
        ),
    ];
    for (bearer, path, status, code) in cases {
        for url in [s.url(&path), s.stream_url(&path)] {
            let mut req = c.get(&url);
            if let Some(bearer) = bearer {
                req = req.bearer_auth(bearer);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), status, "{url} as {bearer:?}");
            assert_eq!(
                res.headers()["content-type"],
                "application/problem+json",
                "{url}"
            );
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["code"], code, "{url}: {body}");
            assert_eq!(body["status"], status, "{url}: {body}");
        }
    }

    // Admission reaches the lean stream as it reaches the main one; both then end.
    s.room().admit(1, s.clock.now()).await.unwrap();
    for res in [&mut main, &mut lean] {
        let frames = rest_of_stream(res).await;
        assert_eq!(frame_data(frames.last().unwrap())["status"], "ACTIVE");
    }
}

#[tokio::test]
async fn the_stream_port_serves_nothing_else_and_refuses_bad_requests_clearly() {
    let s = spawn_app().await;
    let cases: [(&[u8], u16, &str); 5] = [
        (
            b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n",
            404,
            "NOT_FOUND",
        ),
        (b"GET /api/concerts HTTP/1.1\r\n\r\n", 404, "NOT_FOUND"),
        (
            b"POST /api/queue/tokens/1.x/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            b"GET /x HTTP/1.1\r\nno colon here\r\n\r\n",
            400,
            "INVALID_REQUEST",
        ),
        (b"\x00\x01\x02 nonsense\r\n\r\n", 400, "INVALID_REQUEST"),
    ];
    for (request, status, code) in cases {
        let (got, head, body) = raw(&s, request).await;
        let shown = String::from_utf8_lossy(request);
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{shown}"
        );
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(head.contains("connection: close"), "{head}");
        if status == 405 {
            assert!(head.contains("\r\nallow: get"), "{head}");
        }
    }
    // A head over 48 KiB (more than the gateway lets through) is 431, naming the limit.
    let big = format!(
        "GET /api/queue/tokens/1.x/events HTTP/1.1\r\nAuthorization: Bearer x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(49 * 1024)
    );
    let (got, _, body) = raw(&s, big.as_bytes()).await;
    assert_eq!(
        (got, body["code"].as_str()),
        (431, Some("HEADERS_TOO_LARGE"))
    );
    assert!(
        body["detail"].as_str().unwrap().contains("48 KiB"),
        "{body}"
    );

    // Refusals are counted like every request.
    let metrics = reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("/api/queue/tokens/{token}/events") && l.contains("\"405\"")),
        "{metrics}"
    );
}

/// A client that closes its connection ends its stream at once, not at the stream's next
/// write (up to a keep-alive, 15 s, away): the stream hands its fan's token back to the
/// fan's own heartbeat, and its slot among the user's streams is free.
#[tokio::test]
async fn a_client_closing_its_side_ends_its_stream_at_once() {
    let s = spawn_app_with(|env| env.with("QUEUE_SSE_PER_USER", "1")).await;
    let c = reqwest::Client::new();
    let session = s.fan_sessions(1, USERS + 1).await.remove(0);
    let (_, joined) = s.join(&c, &session, 1).await;
    let token = joined["token"].as_str().unwrap();
    let held = || async {
        let mut conn = s.queue_keys().redis().conn();
        let held: bool = redis::cmd("HEXISTS")
            .arg(format!("{}@", s.queue_keys().alive_prefix(1)))
            .arg(token)
            .query_async(&mut conn)
            .await
            .unwrap();
        held
    };
    let mut first = s.open_events(&c, &session, token).await;
    assert_eq!(first.status(), 200);
    first.chunk().await.unwrap().unwrap();
    assert!(held().await, "an open stream holds its fan's place");
    drop(first);
    // Nothing asks the stream to write (a refused open would make it probe its client).
    let mut let_go = false;
    for _ in 0..50 {
        if !held().await {
            let_go = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(let_go, "the closed stream let go of its fan within 5 s");
    assert_eq!(
        s.open_events(&c, &session, token).await.status(),
        200,
        "its slot is free"
    );
}

/// Shutting down ends the open streams (their clients reconnect to a running replica) and
/// the listener stops accepting.
#[tokio::test]
async fn shutdown_ends_open_streams() {
    let mut s = spawn_app().await;
    let c = reqwest::Client::new();
    let session = s.fan_sessions(1, USERS + 2).await.remove(0);
    let (_, joined) = s.join(&c, &session, 1).await;
    let token = joined["token"].as_str().unwrap();
    let mut stream = s.open_events(&c, &session, token).await;
    stream.chunk().await.unwrap().unwrap();
    let addr = s.stream_url("").trim_start_matches("http://").to_owned();
    s.app.trigger_stop();
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended with the service");
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the listener is closed");
}
