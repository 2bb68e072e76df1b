//! The whole journey of one fan, as a client sees it: every request through the nginx gateway
//! to the three service processes, with batch (its own process) admitting from the line.
//! Sign up → log in → charge → join → wait on the SSE stream until ACTIVE → seat map → hold →
//! pay → CONFIRMED → token retired → wallet, ledger and payment history right.

use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use common::testkit::eventually;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::gateway::start_gateway;
use crate::processes::{binary, shared_env, start, start_three_services};

/// A client of the gateway: its base URL and the caller's session and queue token.
struct Client {
    http: reqwest::Client,
    base: String,
    session: Option<String>,
    pass: Option<String>,
}

impl Client {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(s) = &self.session {
            req = req.bearer_auth(s);
        }
        if let Some(q) = &self.pass {
            req = req.header("x-queue-token", q);
        }
        req
    }

    async fn send(&self, req: RequestBuilder) -> (u16, Value) {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        assert!(
            res.headers().get("x-request-id").is_some(),
            "every answer carries X-Request-Id"
        );
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.request(Method::GET, path)).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    /// Reads the status stream until it ends; returns every `QueueStatus` it carried.
    async fn stream_until_end(&self, path: &str) -> Vec<Value> {
        let mut res = self.request(Method::GET, path).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let mut text = String::new();
        while let Some(chunk) = res.chunk().await.unwrap() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn a_fan_buys_two_seats_through_the_gateway() {
    let services = start_three_services().await;
    let (dbs_users, dbs_concert, dbs_payment) = (
        services.dbs.0.url.clone(),
        services.dbs.1.url.clone(),
        services.dbs.2.url.clone(),
    );
    let mut batch_env = shared_env(&services.id);
    batch_env.extend([
        ("USERS_DATABASE_URL", dbs_users.clone()),
        ("CONCERT_DATABASE_URL", dbs_concert),
        ("PAYMENT_DATABASE_URL", dbs_payment),
        ("QUEUE_ADMIT_INTERVAL_MS", "200".into()),
        ("BATCH_LEASE_MS", "1000".into()),
    ]);
    let _batch = start("batch", &batch_env).await;
    let (_gateway, gw) = start_gateway(&services, &[]).await;

    // The operator's admin puts a concert on sale.
    let admin_ok = Command::new(binary("users-api"))
        .args(["create-admin", "--username", "admin"])
        .env("USERS_DATABASE_URL", &dbs_users)
        .env("ADMIN_PASSWORD", "admin-pass-test")
        .output()
        .unwrap();
    assert!(admin_ok.status.success());
    let mut admin = Client {
        http: reqwest::Client::new(),
        base: gw.clone(),
        session: None,
        pass: None,
    };
    let (_, s) = admin
        .post(
            "/api/sessions",
            json!({"username": "admin", "password": "admin-pass-test"}),
        )
        .await;
    admin.session = s["token"].as_str().map(str::to_owned);
    let (status, concert) = admin
        .post(
            "/api/admin/concerts",
            json!({"title": "Journey", "performer": "The Gateways"}),
        )
        .await;
    assert_eq!(status, 201, "{concert}");
    let concert_id = concert["id"].as_i64().unwrap();
    let now = Utc::now();
    let (status, schedule) = admin
        .post(
            &format!("/api/admin/concerts/{concert_id}/schedules"),
            json!({"starts_at": now + chrono::Duration::days(7), "booking_opens_at": now - chrono::Duration::minutes(1), "seat_count": 50, "price": 45000}),
        )
        .await;
    assert_eq!(status, 201, "{schedule}");
    let schedule_id = schedule["id"].as_i64().unwrap();

    // A fan signs up, logs in and funds the wallet.
    let mut fan = Client {
        http: reqwest::Client::new(),
        base: gw,
        session: None,
        pass: None,
    };
    let credentials = json!({"username": "journey_fan", "password": "journey-password"});
    let (status, user) = fan.post("/api/users", credentials.clone()).await;
    assert_eq!((status, user["role"].as_str()), (201, Some("USER")));
    let (status, session) = fan.post("/api/sessions", credentials).await;
    assert_eq!(status, 201);
    fan.session = session["token"].as_str().map(str::to_owned);
    let (status, me) = fan.get("/api/users/me").await;
    assert_eq!((status, &me["id"]), (200, &user["id"]));
    let charge = fan
        .request(Method::POST, "/api/wallet/charges")
        .header("idempotency-key", "journey-charge-1")
        .json(&json!({"amount": 100000}));
    let (status, charged) = fan.send(charge).await;
    assert_eq!((status, charged["balance"].as_i64()), (201, Some(100_000)));

    // It finds the concert's open schedule and joins the line.
    let (_, open) = fan
        .get(&format!(
            "/api/concerts/{concert_id}/schedules?available=true"
        ))
        .await;
    assert_eq!(open["items"][0]["id"].as_i64(), Some(schedule_id));
    assert_eq!(open["items"][0]["available_seats"], 50);
    let (status, joined) = fan
        .post("/api/queue/tokens", json!({"concert_id": concert_id}))
        .await;
    assert_eq!(status, 201, "{joined}");
    let pass = joined["token"].as_str().unwrap().to_owned();

    // Until admitted the pass opens nothing; then the stream, through the gateway unbuffered,
    // carries ACTIVE (batch admits) and ends.
    let statuses = fan
        .stream_until_end(&format!("/api/queue/tokens/{pass}/events"))
        .await;
    let last = statuses.last().expect("the stream carried a status");
    assert_eq!(last["status"], "ACTIVE", "{statuses:?}");
    assert!(last["active_until"].is_string());
    fan.pass = Some(pass.clone());

    // The seat map, a hold, and the seats held in the map.
    let (status, map) = fan
        .get(&format!("/api/schedules/{schedule_id}/seats"))
        .await;
    assert_eq!(status, 200, "{map}");
    let seats = map["seats"].as_array().unwrap();
    assert_eq!(seats.len(), 50);
    assert!(seats.iter().all(|s| s["status"] == "AVAILABLE"));
    let (status, held) = fan
        .post(
            "/api/reservations",
            json!({"schedule_id": schedule_id, "seat_nos": [21, 22]}),
        )
        .await;
    assert_eq!((status, held["status"].as_str()), (201, Some("HELD")));
    assert_eq!(held["amount"], 90_000);
    let reservation_id = held["id"].as_i64().unwrap();
    let (_, map) = fan
        .get(&format!("/api/schedules/{schedule_id}/seats"))
        .await;
    assert_eq!(map["seats"][20]["status"], "HELD");
    assert_eq!(map["seats"][21]["status"], "HELD");

    // Payment; the amount comes from the reservation.
    let pay = fan
        .request(Method::POST, "/api/payments")
        .header("idempotency-key", "journey-pay-1")
        .json(&json!({"reservation_id": reservation_id, "amount": 1}));
    let (status, payment) = fan.send(pay).await;
    assert_eq!(
        (status, payment["amount"].as_i64()),
        (201, Some(90_000)),
        "{payment}"
    );
    let payment_id = payment["id"].clone();

    let path = format!("/api/reservations/{reservation_id}");
    let confirmed = eventually("CONFIRMED", Duration::from_secs(30), || async {
        let (_, r) = fan.get(&path).await;
        (r["status"] == "CONFIRMED").then_some(r)
    })
    .await;
    assert_eq!(confirmed["payment_id"], payment_id);
    let token_path = format!("/api/queue/tokens/{pass}");
    eventually(
        "the token to be retired",
        Duration::from_secs(30),
        || async {
            let (_, s) = fan.get(&token_path).await;
            (s["status"] == "EXPIRED").then_some(())
        },
    )
    .await;
    let (status, refused) = fan
        .get(&format!("/api/schedules/{schedule_id}/seats"))
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (401, Some("QUEUE_TOKEN_INVALID")),
        "a retired token opens nothing"
    );

    // Everything the fan can read agrees.
    let (_, wallet) = fan.get("/api/wallet").await;
    assert_eq!(wallet["balance"], 10_000);
    let (_, ledger) = fan.get("/api/wallet/transactions").await;
    let entries: Vec<(&str, i64, i64)> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["amount"].as_i64().unwrap(),
                e["balance_after"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![("PAYMENT", 90_000, 10_000), ("CHARGE", 100_000, 100_000)]
    );
    let (_, payments) = fan.get("/api/payments").await;
    let items = payments["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "COMPLETED");
    assert_eq!(items[0]["reservation_id"], reservation_id);
    let (_, mine) = fan.get("/api/reservations").await;
    assert_eq!(mine["items"][0]["status"], "CONFIRMED");
    let schedules = format!("/api/concerts/{concert_id}/schedules?available=true");
    eventually(
        "the public list to count 48 seats left (it is cached for seconds)",
        Duration::from_secs(30),
        || async {
            let (_, open) = fan.get(&schedules).await;
            (open["items"][0]["available_seats"] == 48).then_some(())
        },
    )
    .await;
}
