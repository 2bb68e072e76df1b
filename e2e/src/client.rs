//! A client of the public contract (through the gateway, or straight to one service): its
//! base URL and the caller's session and queue pass, and the steps every test repeats.

use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

pub struct Client {
    http: reqwest::Client,
    pub base: String,
    pub session: Option<String>,
    pub pass: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            session: None,
            pass: None,
        }
    }

    /// The same caller (session, pass) against another base URL (another service).
    pub fn at(&self, base: &str) -> Self {
        Self {
            http: self.http.clone(),
            base: base.to_owned(),
            session: self.session.clone(),
            pass: self.pass.clone(),
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(s) = &self.session {
            req = req.bearer_auth(s);
        }
        if let Some(q) = &self.pass {
            req = req.header("x-queue-token", q);
        }
        req
    }

    /// Sends `req`; every answer must carry `X-Request-Id`.
    pub async fn send(&self, req: RequestBuilder) -> (u16, Value) {
        let res = req.send().await.expect("an answer");
        let status = res.status().as_u16();
        assert!(
            res.headers().get("x-request-id").is_some(),
            "every answer carries X-Request-Id"
        );
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    /// `POST` with an `Idempotency-Key`.
    pub async fn post_once(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.send(
            self.request(Method::POST, path)
                .header("idempotency-key", key)
                .json(&body),
        )
        .await
    }

    /// Logs in and keeps the session.
    pub async fn log_in(&mut self, username: &str, password: &str) -> Value {
        let (status, session) = self
            .post(
                "/api/sessions",
                json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(status, 201, "log-in of {username}: {session}");
        self.session = session["token"].as_str().map(str::to_owned);
        session
    }

    /// Signs up (a USER) and logs in; returns the account.
    pub async fn sign_up(&mut self, username: &str, password: &str) -> Value {
        let (status, user) = self
            .post(
                "/api/users",
                json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(
            (status, user["role"].as_str()),
            (201, Some("USER")),
            "{user}"
        );
        self.log_in(username, password).await;
        user
    }

    /// As an admin: a concert with one schedule of `seats` seats at `price`, starting in a
    /// week and open for booking since a minute ago. Returns (concert id, schedule id).
    pub async fn concert_on_sale(&self, title: &str, seats: i64, price: i64) -> (i64, i64) {
        let (status, concert) = self
            .post(
                "/api/admin/concerts",
                json!({"title": title, "performer": "The Fixtures"}),
            )
            .await;
        assert_eq!(status, 201, "{concert}");
        let concert_id = concert["id"].as_i64().expect("concert id");
        let now = common::clock::Clock::system().now();
        let (status, schedule) = self
            .post(
                &format!("/api/admin/concerts/{concert_id}/schedules"),
                json!({
                    "starts_at": now + chrono::Duration::days(7),
                    "booking_opens_at": now - chrono::Duration::minutes(1),
                    "seat_count": seats,
                    "price": price,
                }),
            )
            .await;
        assert_eq!(status, 201, "{schedule}");
        (concert_id, schedule["id"].as_i64().expect("schedule id"))
    }

    /// Joins the line for `concert`; returns the queue token (not yet kept as the pass).
    pub async fn join(&self, concert: i64) -> String {
        let (status, joined) = self
            .post("/api/queue/tokens", json!({"concert_id": concert}))
            .await;
        assert_eq!(status, 201, "{joined}");
        joined["token"].as_str().expect("queue token").to_owned()
    }

    /// Polls the queue pass `pass` until its status is `status` (`ACTIVE` once batch admits
    /// it, `EXPIRED` once a purchase retired it); panics after 30 s naming `what`.
    pub async fn until_pass(&self, pass: &str, status: &str, what: &str) {
        let path = format!("/api/queue/tokens/{pass}");
        common::testkit::eventually(what, Duration::from_secs(30), || async {
            let (_, s) = self.get(&path).await;
            (s["status"] == status).then_some(())
        })
        .await;
    }

    /// Reads a status stream until it ends; returns every `QueueStatus` it carried.
    pub async fn stream_until_end(&self, path: &str) -> Vec<Value> {
        let mut res = self
            .request(Method::GET, path)
            .send()
            .await
            .expect("stream");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let mut text = String::new();
        while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(60), res.chunk())
            .await
            .expect("the stream speaks at least every 15 s")
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect()
    }
}
