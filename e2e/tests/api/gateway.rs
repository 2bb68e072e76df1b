//! Real requests through the nginx gateway (deploy/gateway) in front of the three service
//! processes: public paths reach their services, the web app is served at / (index.html for
//! its client-side routes, immutable hashed assets, its CSP), nothing else is reachable,
//! login bursts get 429, and a dead upstream is a 502 problem. Against a hostile crowd: slow clients are cut off,
//! malformed requests get problem+json (raw sockets), per-address and per-session limits
//! answer 429 problems naming the limit, every answer carries the security headers, and
//! queue tokens stay out of the gateway's logs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::testkit::eventually;
use e2e::{Client, Gateway, Platform};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

async fn problem(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    assert!(res.headers().get("x-request-id").is_some());
    (status, res.json().await.unwrap())
}

/// The web app's CSP (deploy/gateway/nginx.conf.template).
const APP_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// A built web app of the test's own (what `GATEWAY_WEB` points at), so the gateway's routing
/// is checked whatever state web/dist is in: its index.html (over 256 bytes: compressed) and a
/// hashed bundle.
const APP_INDEX: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Tickets</title><script type=\"module\" src=\"/assets/index-Ab12Cd34.js\"></script></head><body><div id=\"app\"></div><!-- the gateway test's stand-in for web/dist: long enough to be compressed by the gateway, which skips answers under 256 bytes --></body></html>";
const APP_BUNDLE: &str = "document.getElementById('app').textContent = 'Tickets';";

/// Writes the stand-in app into a new directory; returns it (removed by the caller).
fn stand_in_app(id: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("web-dist-{id}"));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), APP_INDEX).unwrap();
    std::fs::write(dir.join("assets/index-Ab12Cd34.js"), APP_BUNDLE).unwrap();
    dir
}

#[tokio::test]
async fn the_gateway_routes_exactly_the_public_contract() {
    let platform = Platform::start().await;
    let app = stand_in_app(&platform.id);
    let gateway = Gateway::start(
        &platform,
        &[
            ("GATEWAY_AUTH_RATE", "2r/s"),
            ("GATEWAY_AUTH_BURST", "5"),
            ("GATEWAY_WEB", app.to_str().unwrap()),
        ],
    )
    .await;
    let _ = std::fs::remove_dir_all(&app);
    let gw = gateway.url.clone();
    let c = reqwest::Client::new();

    // Each service by its public paths, with the request id passed through.
    let res = c
        .post(format!("{gw}/api/users"))
        .json(&json!({"username": "gw_fan", "password": "fan-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "users-api");
    let res = c
        .post(format!("{gw}/api/sessions"))
        .header("x-request-id", "trace-me-123")
        .json(&json!({"username": "gw_fan", "password": "fan-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-123");
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        c.get(format!("{gw}/api/concerts"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "concert-api"
    );
    let wallet = c
        .get(format!("{gw}/api/wallet"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        wallet.json::<Value>().await.unwrap()["balance"],
        0,
        "payment-api"
    );
    let (status, p) = problem(
        c.get(format!("{gw}/api/reservations/999999"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (404, Some("NOT_FOUND")),
        "a service's own problem passes through"
    );

    // The web app: its page at / and at every client-side route (the browser resolves them),
    // revalidated on each load, with the app's CSP; compressed for a client that accepts it.
    for path in ["/", "/concerts/3", "/admin/concerts/2", "/index.html"] {
        let res = c.get(format!("{gw}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "text/html; charset=utf-8",
            "{path}"
        );
        assert_security_headers(res.headers(), "no-cache", path);
        assert_eq!(res.headers()["content-security-policy"], APP_CSP, "{path}");
        assert!(res.headers().get("x-request-id").is_some(), "{path}");
        assert_eq!(res.text().await.unwrap(), APP_INDEX, "{path}");
    }
    let res = c
        .get(format!("{gw}/concerts/3"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["content-encoding"],
        "gzip",
        "the page, compressed"
    );
    // Its hashed bundles never change under one name: cached for a year, never revalidated.
    let res = c
        .get(format!("{gw}/assets/index-Ab12Cd34.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/javascript; charset=utf-8"
    );
    assert_security_headers(
        res.headers(),
        "public, max-age=31536000, immutable",
        "a bundle",
    );
    assert_eq!(res.text().await.unwrap(), APP_BUNDLE);
    // The API's answers are never compressed (a session token beside echoed input: BREACH).
    let res = c
        .get(format!("{gw}/api/concerts"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("content-encoding").is_none());

    // Nothing else is reachable: not the services' own routes, not another /api/ path, not a
    // bundle the app does not have (a 404 that is never cached, nor the page in its place).
    for path in [
        "/internal/reservations/1",
        "/internal",
        "/health/ready",
        "/health/live",
        "/metrics",
        "/openapi.json",
        "/api/nope",
        "/api",
        "/api/",
        "/assets/index-00000000.js",
    ] {
        let res = c.get(format!("{gw}{path}")).send().await.unwrap();
        assert_security_headers(res.headers(), "no-store", path);
        assert_eq!(
            res.headers()["content-security-policy"],
            "frame-ancestors 'none'",
            "{path}"
        );
        let (status, p) = problem(res).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (404, Some("NOT_FOUND")),
            "{path}"
        );
    }
    let big = json!({"username": "x", "password": "p".repeat(70_000)});
    let (status, _) = problem(
        c.post(format!("{gw}/api/users"))
            .json(&big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);

    // A burst of log-ins from one address is cut off with 429 and Retry-After.
    let burst = futures_util::future::join_all((0..30).map(|_| {
        c.post(format!("{gw}/api/sessions"))
            .json(&json!({"username": "gw_fan", "password": "wrong-password"}))
            .send()
    }))
    .await;
    let limited: Vec<&reqwest::Response> = burst
        .iter()
        .map(|r| r.as_ref().unwrap())
        .filter(|r| r.status() == 429)
        .collect();
    assert!(!limited.is_empty(), "a burst of 30 log-ins is rate limited");
    assert!(
        limited
            .iter()
            .all(|r| r.headers().get("retry-after").is_some()
                && r.headers()["content-type"] == "application/problem+json")
    );

    // An upstream that is gone is a 502 problem, not a hang or an HTML page.
    drop(platform.payment);
    let (status, p) = problem(
        c.get(format!("{gw}/api/wallet"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (502, Some("UPSTREAM_UNAVAILABLE"))
    );
    drop(gateway);
}

/// The security headers every answer of the gateway carries, each exactly once; `cache` is
/// the expected Cache-Control. No HSTS: the test gateway is plain HTTP (GATEWAY_HSTS=0).
fn assert_security_headers(headers: &HeaderMap, cache: &str, what: &str) {
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cache-control", cache),
    ] {
        let values: Vec<_> = headers.get_all(name).iter().collect();
        assert_eq!(values, [value], "{what}: {name}");
    }
    let csp: Vec<_> = headers.get_all("content-security-policy").iter().collect();
    assert_eq!(csp.len(), 1, "{what}: one CSP");
    assert!(
        csp[0].to_str().unwrap().contains("frame-ancestors 'none'"),
        "{what}: {csp:?}"
    );
    assert!(
        headers.get("strict-transport-security").is_none(),
        "{what}: no HSTS on plain HTTP"
    );
}

/// A 429 problem of the gateway with `Retry-After` and the security headers; its `code`.
async fn limited(res: reqwest::Response, what: &str) -> String {
    assert_eq!(res.status(), 429, "{what}");
    assert!(res.headers().get("retry-after").is_some(), "{what}");
    assert_security_headers(res.headers(), "no-store", what);
    let (_, p) = problem(res).await;
    assert_eq!(p["status"], 429, "{what}");
    p["code"].as_str().unwrap_or_default().to_owned()
}

/// An answer read off a raw socket: status, lower-cased headers, body.
struct RawAnswer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

/// Sends `request` on a new connection and reads one answer (its head and Content-Length
/// bytes of body), or until the gateway closes the connection; None when it closed without
/// a byte.
fn raw(addr: &str, request: &[u8]) -> Option<RawAnswer> {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(request).unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16384];
    while !complete(&bytes) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    if bytes.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (k, v) = line.split_once(':').unwrap();
        headers.append(
            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            v.trim().parse().unwrap(),
        );
    }
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    Some(RawAnswer {
        status,
        headers,
        body,
    })
}

/// Whether `bytes` hold a whole answer: a head, and as many body bytes as it announces.
fn complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    length.is_some_and(|n| body.len() >= n)
}

/// The raw answer is a problem+json of `status` with `code`, with the security headers.
fn assert_raw_problem(answer: Option<RawAnswer>, status: u16, code: &str, what: &str) {
    let a = answer.unwrap_or_else(|| panic!("{what}: the gateway closed without answering"));
    assert_eq!(a.status, status, "{what}: {}", a.body);
    assert_eq!(
        a.headers["content-type"], "application/problem+json",
        "{what}"
    );
    assert!(a.headers.get("x-request-id").is_some(), "{what}");
    assert_eq!(
        (a.body["status"].as_u64(), a.body["code"].as_str()),
        (Some(status as u64), Some(code)),
        "{what}: {}",
        a.body
    );
    assert_security_headers(&a.headers, "no-store", what);
}

/// A connection that stops halfway through its request is closed by the gateway, with no
/// answer (nginx answers nothing to a client that timed out); the wait is bounded by the
/// read timeout of `raw` (30 s against the test gateway's 1 s timeouts).
fn assert_cut_off(addr: &str, partial: &[u8], what: &str) {
    assert!(
        raw(addr, partial).is_none(),
        "{what}: closed without an answer"
    );
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_malformed_requests_get_problems() {
    let platform = Platform::start().await;
    let gateway = Gateway::start(
        &platform,
        &[
            ("GATEWAY_HEADER_TIMEOUT", "1"),
            ("GATEWAY_BODY_TIMEOUT", "1"),
        ],
    )
    .await;
    let addr = gateway.addr().to_owned();

    // Slow clients: half a request header; a whole header and half its body.
    assert_cut_off(
        &addr,
        b"GET /api/concerts HTTP/1.1\r\nHost: gw\r\nX-Slow: ",
        "half a header",
    );
    assert_cut_off(
        &addr,
        b"POST /api/users HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username\":",
        "half a body",
    );

    // nginx's own errors, as problems.
    assert_raw_problem(
        raw(
            &addr,
            b"GET /api/concerts HTTP/1.1 junk\r\nHost: gw\r\n\r\n",
        ),
        400,
        "BAD_REQUEST",
        "a bad request line",
    );
    assert_raw_problem(
        raw(&addr, b"G@T /api/concerts HTTP/1.1\r\nHost: gw\r\n\r\n"),
        400,
        "BAD_REQUEST",
        "a bad method",
    );
    assert_raw_problem(
        raw(
            &addr,
            b"GET /api/concerts HTTP/1.1\r\nHost: gw\r\nX-Bad: a\x00b\r\n\r\n",
        ),
        400,
        "BAD_REQUEST",
        "a NUL in a header",
    );
    assert_raw_problem(
        raw(
            &addr,
            b"GET /api/concerts HTTP/1.1\r\nHost: gw\r\nHost: other\r\n\r\n",
        ),
        400,
        "BAD_REQUEST",
        "two Host headers",
    );
    let long_uri = format!(
        "GET /api/concerts?q={} HTTP/1.1\r\nHost: gw\r\n\r\n",
        "a".repeat(9000)
    );
    assert_raw_problem(
        raw(&addr, long_uri.as_bytes()),
        414,
        "URI_TOO_LONG",
        "a 9 KB URI",
    );
    let big_header = format!(
        "GET /api/concerts HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert_raw_problem(
        raw(&addr, big_header.as_bytes()),
        431,
        "HEADERS_TOO_LARGE",
        "a 9 KB header line",
    );
    let many_headers = format!(
        "GET /api/concerts HTTP/1.1\r\nHost: gw\r\n{}\r\n",
        (0..6)
            .map(|i| format!("X-H{i}: {}\r\n", "a".repeat(7000)))
            .collect::<String>()
    );
    assert_raw_problem(
        raw(&addr, many_headers.as_bytes()),
        431,
        "HEADERS_TOO_LARGE",
        "42 KB of headers",
    );

    // Requests actix-web (the services' HTTP parser) would refuse with an empty 400 do not
    // reach a service: a control character in a header the services read, or a character in
    // the request target that must be percent-encoded, is the gateway's 400 problem.
    for (what, request) in [
        (
            "a control character in X-Queue-Token",
            &b"GET /api/concerts HTTP/1.1\r\nHost: gw\r\nX-Queue-Token: a\x01b\r\n\r\n"[..],
        ),
        (
            "DEL in Authorization",
            b"GET /api/users/me HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer a\x7fb\r\n\r\n",
        ),
        (
            "< in the query",
            b"GET /api/concerts?q=<b> HTTP/1.1\r\nHost: gw\r\n\r\n",
        ),
        (
            "a backtick in the path",
            b"GET /api/concerts/`1 HTTP/1.1\r\nHost: gw\r\n\r\n",
        ),
        (
            "a raw UTF-8 byte in the path",
            b"GET /api/concerts/\xc3\xa9 HTTP/1.1\r\nHost: gw\r\n\r\n",
        ),
    ] {
        assert_raw_problem(raw(&addr, request), 400, "BAD_REQUEST", what);
    }

    // A 500 of nginx itself: a body over its 16 KiB buffer goes to a temporary file, and the
    // temporary directory is gone.
    std::fs::remove_dir_all(gateway.state().join("tmp/body")).unwrap();
    let body = json!({"username": "x", "password": "p".repeat(20_000)}).to_string();
    let request = format!(
        "POST /api/users HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_raw_problem(
        raw(&addr, request.as_bytes()),
        500,
        "INTERNAL",
        "a temp file nginx cannot create",
    );

    // And the gateway still answers.
    assert_eq!(
        reqwest::get(format!("{}/api/concerts", gateway.url))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Opens the status stream of queue token `pass` with `fan`'s session.
async fn stream(fan: &Client, pass: &str) -> reqwest::Response {
    fan.request(
        reqwest::Method::GET,
        &format!("/api/queue/tokens/{pass}/events"),
    )
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn per_address_and_per_session_limits_answer_429_problems_naming_the_limit() {
    let platform = Platform::start().await;
    let gateway = Gateway::start(&platform, &[]).await;
    let gw = gateway.url.clone();
    let admin = platform.admin(&gw).await;
    let (concert, schedule) = admin.concert_on_sale("Limits", 10, 1000).await;
    let mut fan = Client::new(&gw);
    fan.sign_up("limits_fan", "fan-password").await;
    let mut neighbour = Client::new(&gw);
    neighbour.sign_up("limits_neighbour", "fan-password").await;
    // No batch runs: the tokens stay WAITING and their streams stay open.
    let pass = fan.join(concert).await;
    let neighbours_pass = neighbour.join(concert).await;

    // Three streams of one session at once; the fourth is refused by the gateway (its
    // detail says per session: users-api's own per-account cap never sees it).
    let mut open = Vec::new();
    for _ in 0..3 {
        let res = stream(&fan, &pass).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        open.push(res);
    }
    let res = stream(&fan, &pass).await;
    assert_eq!(res.status(), 429, "a 4th stream");
    assert!(res.headers().get("retry-after").is_some());
    assert_security_headers(res.headers(), "no-store", "a 4th stream");
    let (_, p) = problem(res).await;
    assert_eq!(p["code"], "TOO_MANY_STREAMS");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("at most 3 per session"),
        "{p}"
    );
    // Another session has its own.
    let other = stream(&neighbour, &neighbours_pass).await;
    assert_eq!(other.status(), 200, "another session's stream");
    drop(open);
    // A place is freed when its stream closes. (Shown with a gateway allowing one stream per
    // session: users-api's per-account cap, 3, never refuses these.)
    let one_stream = Gateway::start(&platform, &[("GATEWAY_SSE_PER_SESSION", "1")]).await;
    let at_one = neighbour.at(&one_stream.url);
    let first = stream(&at_one, &neighbours_pass).await;
    assert_eq!(first.status(), 200);
    let res = stream(&at_one, &neighbours_pass).await;
    assert_eq!(res.status(), 429, "a 2nd stream");
    let (_, p) = problem(res).await;
    assert_eq!(p["code"], "TOO_MANY_STREAMS");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("at most 1 per session"),
        "{p}"
    );
    drop(first);
    let reopened = eventually(
        "a stream's place to be freed",
        Duration::from_secs(30),
        || {
            let (at_one, pass) = (&at_one, &neighbours_pass);
            async move {
                let res = stream(at_one, pass).await;
                (res.status() == 200).then_some(res)
            }
        },
    )
    .await;
    drop((other, reopened));

    // Holds and cancels per session: a burst of 30 holds from one session is cut off with
    // HOLD_RATE_LIMITED (burst 10 at 2/s); the rest reach concert-api (no pass: 401).
    let hold = json!({"schedule_id": schedule, "seat_nos": [1]});
    let burst = futures_util::future::join_all((0..30).map(|_| {
        fan.request(reqwest::Method::POST, "/api/reservations")
            .json(&hold)
            .send()
    }))
    .await;
    let mut refused = 0;
    for res in burst {
        let res = res.unwrap();
        if res.status() == 429 {
            assert_eq!(limited(res, "a hold in a burst").await, "HOLD_RATE_LIMITED");
            refused += 1;
        } else {
            let (status, p) = problem(res).await;
            assert_eq!(
                (status, p["code"].as_str()),
                (401, Some("QUEUE_TOKEN_INVALID"))
            );
        }
    }
    assert!(
        refused > 0,
        "a burst of 30 holds from one session is limited"
    );
    assert!(refused < 30, "the first ten of the burst pass");
    // Reading is never limited: the same session lists its reservations 30 times at once.
    let reads = futures_util::future::join_all((0..30).map(|_| {
        fan.request(reqwest::Method::GET, "/api/reservations")
            .send()
    }))
    .await;
    assert!(reads.iter().all(|r| r.as_ref().unwrap().status() == 200));
    // Another fan's session is unaffected.
    let (status, p) = neighbour.post("/api/reservations", hold.clone()).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (401, Some("QUEUE_TOKEN_INVALID"))
    );
    // Cancels count too: a burst of 30 from the neighbour's session.
    let cancels = futures_util::future::join_all((0..30).map(|_| {
        neighbour
            .request(reqwest::Method::DELETE, "/api/reservations/999999")
            .send()
    }))
    .await;
    let mut refused = 0;
    for res in cancels {
        let res = res.unwrap();
        if res.status() == 429 {
            assert_eq!(
                limited(res, "a cancel in a burst").await,
                "HOLD_RATE_LIMITED"
            );
            refused += 1;
        } else {
            assert_eq!(res.status(), 404);
        }
    }
    assert!(
        refused > 0,
        "a burst of 30 cancels from one session is limited"
    );

    // Requests in flight per address: a gateway that allows 3 refuses a 4th while three
    // requests are still sending their bodies, and answers again once one is gone.
    let capped = Gateway::start(
        &platform,
        &[
            ("GATEWAY_CONN_PER_ADDR", "3"),
            ("GATEWAY_BODY_TIMEOUT", "120"),
        ],
    )
    .await;
    // The probes below are requests in flight too: one may be counted before a slow request's
    // header is read, and that slow request is then the one refused. So a slow request that was
    // answered is replaced until three are waiting at once.
    let slow_request = || {
        let mut c = TcpStream::connect(capped.addr()).unwrap();
        c.write_all(b"POST /api/users HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            .unwrap();
        c.set_nonblocking(true).unwrap();
        c
    };
    let slow = std::cell::RefCell::new((0..3).map(|_| slow_request()).collect::<Vec<_>>());
    let concerts = format!("{}/api/concerts", capped.url);
    let refused = eventually(
        "the 4th request in flight to be refused",
        Duration::from_secs(30),
        || {
            for c in slow.borrow_mut().iter_mut() {
                if answered(c) {
                    *c = slow_request();
                }
            }
            let concerts = concerts.clone();
            async move {
                let res = reqwest::get(concerts).await.unwrap();
                (res.status() == 429).then_some(res)
            }
        },
    )
    .await;
    let detail = {
        assert!(refused.headers().get("retry-after").is_some());
        assert_security_headers(refused.headers(), "no-store", "per-address 429");
        let (_, p) = problem(refused).await;
        assert_eq!(p["code"], "RATE_LIMITED");
        p["detail"].as_str().unwrap().to_owned()
    };
    assert!(detail.contains("in flight from this address"), "{detail}");
    let mut slow = slow.into_inner();
    drop(slow.pop());
    eventually("a place to be freed", Duration::from_secs(30), || {
        let concerts = concerts.clone();
        async move { (reqwest::get(concerts).await.unwrap().status() == 200).then_some(()) }
    })
    .await;
    drop(slow);
}

/// Whether the gateway answered (or closed) a non-blocking connection.
fn answered(c: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    !matches!(c.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let platform = Platform::start().await;
    let gateway = Gateway::start(
        &platform,
        &[("GATEWAY_AUTH_RATE", "1r/s"), ("GATEWAY_AUTH_BURST", "3")],
    )
    .await;
    let gw = gateway.url.clone();
    let c = reqwest::Client::new();
    let account = json!({"username": "headers_fan", "password": "fan-password"});

    // Proxied: the sign-up and the log-in (which carries the session token), a listing.
    let res = c
        .post(format!("{gw}/api/users"))
        .json(&account)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_security_headers(res.headers(), "no-store", "POST /api/users 201");
    let res = c
        .post(format!("{gw}/api/sessions"))
        .json(&account)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_security_headers(res.headers(), "no-store", "POST /api/sessions 201");
    assert!(res.json::<Value>().await.unwrap()["token"].is_string());
    let res = c.get(format!("{gw}/api/concerts")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_security_headers(res.headers(), "no-store", "GET /api/concerts 200");
    // A service's own error.
    let res = c.get(format!("{gw}/api/users/me")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_security_headers(res.headers(), "no-store", "a service's 401");

    // nginx's own: a 404, a 405, a 429.
    let res = c.get(format!("{gw}/api/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_security_headers(res.headers(), "no-store", "the gateway's 404");
    let res = c
        .post(format!("{gw}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_security_headers(res.headers(), "no-cache", "the gateway's 405");
    let burst = futures_util::future::join_all(
        (0..10).map(|_| c.post(format!("{gw}/api/sessions")).json(&account).send()),
    )
    .await;
    let res = burst
        .into_iter()
        .map(Result::unwrap)
        .find(|r| r.status() == 429)
        .expect("a burst of 10 log-ins at 1/s (burst 3) is limited");
    assert_eq!(limited(res, "the gateway's 429").await, "RATE_LIMITED");

    // The API reference keeps no-cache, and the page keeps its own CSP (one header).
    let res = c
        .get(format!("{gw}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_security_headers(res.headers(), "no-cache", "GET /api/openapi.json");
    let res = c.get(format!("{gw}/api/docs")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_security_headers(res.headers(), "no-cache", "GET /api/docs");
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");

    // HSTS only when asked for (where TLS terminates in front of the gateway).
    let tls = Gateway::start(&platform, &[("GATEWAY_HSTS", "1")]).await;
    for path in [
        "/api/concerts",
        "/api/nope",
        "/api/docs",
        "/",
        "/concerts/3",
    ] {
        let res = c.get(format!("{}{path}", tls.url)).send().await.unwrap();
        let hsts: Vec<_> = res
            .headers()
            .get_all("strict-transport-security")
            .iter()
            .collect();
        assert_eq!(hsts, ["max-age=31536000; includeSubDomains"], "{path}");
    }
}

#[tokio::test]
async fn queue_tokens_stay_out_of_the_gateway_logs() {
    let platform = Platform::start().await;
    let access_log = std::env::temp_dir().join(format!("gateway-access-{}.log", platform.id));
    let gateway = Gateway::start(
        &platform,
        &[
            ("GATEWAY_ACCESS_LOG", access_log.to_str().unwrap()),
            ("GATEWAY_SSE_PER_SESSION", "1"),
        ],
    )
    .await;
    let gw = gateway.url.clone();
    let admin = platform.admin(&gw).await;
    let (concert, _) = admin.concert_on_sale("Logs", 10, 1000).await;
    let mut fan = Client::new(&gw);
    fan.sign_up("logs_fan", "fan-password").await;
    let pass = fan.join(concert).await;
    let secret = pass.split_once('.').unwrap().1.to_owned();

    // A status read, a stream and a second one over the cap (an error-log line for nginx).
    let (status, _) = fan.get(&format!("/api/queue/tokens/{pass}")).await;
    assert_eq!(status, 200);
    let open = stream(&fan, &pass).await;
    assert_eq!(open.status(), 200);
    assert_eq!(
        limited(stream(&fan, &pass).await, "a 2nd stream").await,
        "TOO_MANY_STREAMS"
    );
    drop(open);
    // users-api down: every token path is a 502, and nginx logs an error for each.
    drop(platform.users);
    let (status, _) = fan.get(&format!("/api/queue/tokens/{pass}")).await;
    assert_eq!(status, 502);
    assert_eq!(stream(&fan, &pass).await.status(), 502);
    // A path without a token: its error line is written (error logging is on).
    let (status, _) = fan.get("/api/users/me").await;
    assert_eq!(status, 502);

    let access = std::fs::read_to_string(&access_log).unwrap();
    let _ = std::fs::remove_file(&access_log);
    let errors = std::fs::read_to_string(gateway.error_log()).unwrap();
    for line in [
        "\"GET /api/queue/tokens/*** HTTP/1.1\" 200",
        "\"GET /api/queue/tokens/***/events HTTP/1.1\" 429",
        "\"GET /api/queue/tokens/*** HTTP/1.1\" 502",
        "\"GET /api/queue/tokens/***/events HTTP/1.1\" 502",
    ] {
        assert!(access.contains(line), "access log has {line}:\n{access}");
    }
    assert!(
        errors.contains("connect() failed") && errors.contains("/api/users/me"),
        "the error log is written:\n{errors}"
    );
    assert!(
        !access.contains(&secret),
        "no queue token in the access log:\n{access}"
    );
    assert!(
        !errors.contains(&secret),
        "no queue token in the error log:\n{errors}"
    );
}

/// The waiting room's live controls (`/api/admin/queue/**`) and its public view
/// (`/api/queue/concerts/**`) reach users-api through the gateway, ahead of concert-api's
/// `/api/admin/**`, whose own routes still reach concert-api.
#[tokio::test]
async fn the_waiting_rooms_controls_and_view_reach_users_api_through_the_gateway() {
    let platform = Platform::start().await;
    let gateway = Gateway::start(&platform, &[]).await;
    let gw = gateway.url.clone();
    let admin = platform.admin(&gw).await;
    let (concert, _) = admin.concert_on_sale("Levers", 10, 1000).await;

    let path = format!("/api/admin/queue/concerts/{concert}");
    let (status, room) = admin
        .send(
            admin
                .request(reqwest::Method::PATCH, &path)
                .json(&json!({"state": "PAUSED", "max_active": 9})),
        )
        .await;
    assert_eq!(status, 200, "{room}");
    assert_eq!(
        (room["state"].as_str(), room["max_active"].as_u64()),
        (Some("PAUSED"), Some(9)),
        "users-api's WaitingRoom"
    );
    let (status, room) = admin.get(&path).await;
    assert_eq!((status, room["concert_id"].as_i64()), (200, Some(concert)));
    let (status, public) = Client::new(&gw)
        .get(&format!("/api/queue/concerts/{concert}"))
        .await;
    assert_eq!((status, public["state"].as_str()), (200, Some("PAUSED")));
    assert!(
        public.get("max_active").is_none(),
        "the public view: {public}"
    );

    // A fan is refused by users-api (its catalogue's 403), not routed elsewhere.
    let mut fan = Client::new(&gw);
    fan.sign_up("levers_fan", "fan-password").await;
    let (status, p) = fan.get(&path).await;
    assert_eq!((status, p["code"].as_str()), (403, Some("FORBIDDEN")));
    let (status, p) = Client::new(&gw).get(&path).await;
    assert_eq!((status, p["code"].as_str()), (401, Some("UNAUTHENTICATED")));

    // concert-api's admin routes are untouched; users-api going down shows on the levers only.
    let (status, _) = admin
        .post(
            "/api/admin/concerts",
            json!({"title": "Other", "performer": "Band"}),
        )
        .await;
    assert_eq!(status, 201, "concert-api still serves /api/admin/concerts");
    drop(platform.users);
    let (status, p) = admin.get(&path).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (502, Some("UPSTREAM_UNAVAILABLE"))
    );
    let (status, _) = admin
        .post(
            "/api/admin/concerts",
            json!({"title": "Still", "performer": "Band"}),
        )
        .await;
    assert_eq!(status, 201);
}
