//! Faults at small scale, across the real processes, each in the middle of a small sale:
//! Redis cut off (through the load tool's fault proxy) and healed, Redis restarted empty, the
//! broker killed and restarted, a service killed with SIGKILL mid-payment. Every request a
//! fan sends is logged; outside a fault nothing may answer 5xx, inside one only the clear
//! 503 of the platform. Each test ends with an exact audit of the databases: every seat sold
//! once, one payment and one ledger debit per confirmed reservation, money conserved to the
//! unit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::testkit::{PrivateBroker, PrivateRedis, delete_kafka_prefix, eventually};
use e2e::process::Process;
use e2e::{Client, FaultProxy, Platform};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::audit::Money;

/// Every seat's price.
const PRICE: i64 = 10_000;
/// What each fan charges to the wallet (two seats' worth and change).
const FUNDS: i64 = 25_000;
/// Longer than any timeout of the services (Redis 1 s to connect, 2 s to answer, two
/// retries; concert-api 2 s): a request still unanswered by then hangs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a wait of the happy path may take (admission, confirmation through the broker).
const WAIT: Duration = Duration::from_secs(30);

/// The code every 503 of a dependency that cannot answer carries.
const UNAVAILABLE: &str = "DEPENDENCY_UNAVAILABLE";

/// One answer a fan got (or none: status 0).
struct Answer {
    what: String,
    status: u16,
    code: String,
    in_fault: bool,
}

/// Every answer of a test, and whether a fault is on.
#[derive(Clone, Default)]
struct Log {
    answers: Arc<Mutex<Vec<Answer>>>,
    fault: Arc<AtomicBool>,
}

impl Log {
    fn fault(&self, on: bool) {
        self.fault.store(on, Ordering::SeqCst);
    }

    fn push(&self, what: String, status: u16, code: String) {
        self.answers.lock().unwrap().push(Answer {
            what,
            status,
            code,
            in_fault: self.fault.load(Ordering::SeqCst),
        });
    }

    /// Outside the faults: no 5xx and no missing answer at all. Inside: none but a 503 with
    /// one of `allowed` codes (and, if `lost_allowed`, no answer: the service was killed).
    fn assert_clean(&self, allowed: &[&str], lost_allowed: bool) {
        let answers = self.answers.lock().unwrap();
        let bad: Vec<String> = answers
            .iter()
            .filter(|a| a.status >= 500 || a.status == 0)
            .filter(|a| {
                !a.in_fault
                    || !((a.status == 503 && allowed.contains(&a.code.as_str()))
                        || (a.status == 0 && lost_allowed))
            })
            .map(|a| format!("{}: {} {}", a.what, a.status, a.code))
            .collect();
        assert!(bad.is_empty(), "server errors: {bad:#?}");
    }

    fn count(&self, status: u16, in_fault: bool) -> usize {
        let answers = self.answers.lock().unwrap();
        answers
            .iter()
            .filter(|a| a.status == status && a.in_fault == in_fault)
            .count()
    }
}

/// An answer with what the 503 checks read.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
    content_type: String,
    retry_after: Option<String>,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// A clear 503: problem+json, the dependency code, `Retry-After`.
    fn assert_unavailable(&self, what: &str) {
        assert_eq!(
            (self.status, self.code()),
            (503, UNAVAILABLE),
            "{what}: {self:?}"
        );
        assert_eq!(self.content_type, "application/problem+json", "{what}");
        assert!(
            self.retry_after.is_some(),
            "{what}: a 503 says when to retry"
        );
        let detail = self.body["detail"].as_str().unwrap_or("");
        assert!(
            detail.contains("cannot answer"),
            "{what}: the detail says what is wrong: {detail}"
        );
    }

    fn assert(&self, status: u16, code: &str, what: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "{what}: {self:?}"
        );
    }
}

/// Where the three services answer.
#[derive(Clone)]
struct Urls {
    users: String,
    concert: String,
    payment: String,
}

/// One fan: a caller (session, pass) of the three services, every answer logged.
struct Fan {
    name: String,
    me: Client,
    urls: Urls,
    log: Log,
}

impl Fan {
    async fn call(&self, base: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call_keyed(base, method, path, body, None).await
    }

    /// Sends one request (with an `Idempotency-Key` if given); panics if it hangs past
    /// [`REQUEST_TIMEOUT`]. A connection that fails is logged as status 0.
    async fn call_keyed(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Reply {
        let what = format!("{} {method} {path}", self.name);
        let mut req = self
            .me
            .at(base)
            .request(method, path)
            .timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let res = match req.send().await {
            Ok(res) => res,
            Err(e) => {
                assert!(!e.is_timeout(), "{what} hung past {REQUEST_TIMEOUT:?}");
                self.log.push(what, 0, e.to_string());
                return Reply {
                    status: 0,
                    body: Value::Null,
                    content_type: String::new(),
                    retry_after: None,
                };
            }
        };
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (status, content_type, retry_after) = (
            res.status().as_u16(),
            header("content-type").unwrap_or_default(),
            header("retry-after"),
        );
        let body = res.json().await.unwrap_or(Value::Null);
        let code = body["code"].as_str().unwrap_or("").to_owned();
        self.log.push(what, status, code);
        Reply {
            status,
            body,
            content_type,
            retry_after,
        }
    }

    fn password(&self) -> String {
        format!("{}-password", self.name)
    }

    async fn sign_up(name: &str, urls: &Urls, log: &Log) -> Self {
        let mut fan = Self {
            name: name.to_owned(),
            me: Client::new(&urls.users),
            urls: urls.clone(),
            log: log.clone(),
        };
        let r = fan
            .call(
                &urls.users,
                Method::POST,
                "/api/users",
                Some(json!({"username": name, "password": fan.password()})),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        fan.log_in().await;
        fan
    }

    /// POST /api/sessions, as is.
    async fn try_log_in(&self) -> Reply {
        self.call(
            &self.urls.users,
            Method::POST,
            "/api/sessions",
            Some(json!({"username": self.name, "password": self.password()})),
        )
        .await
    }

    async fn log_in(&mut self) {
        let r = self.try_log_in().await;
        assert_eq!(r.status, 201, "{} logs in: {r:?}", self.name);
        self.me.session = r.body["token"].as_str().map(str::to_owned);
    }

    async fn charge(&self, amount: i64) {
        let r = self
            .call_keyed(
                &self.urls.payment,
                Method::POST,
                "/api/wallet/charges",
                Some(json!({ "amount": amount })),
                Some(&format!("charge-{}", self.name)),
            )
            .await;
        assert_eq!(r.status, 201, "{} charges: {r:?}", self.name);
    }

    async fn me(&self) -> Reply {
        self.call(&self.urls.users, Method::GET, "/api/users/me", None)
            .await
    }

    async fn try_join(&self, concert: i64) -> Reply {
        self.call(
            &self.urls.users,
            Method::POST,
            "/api/queue/tokens",
            Some(json!({ "concert_id": concert })),
        )
        .await
    }

    /// Joins the line (a new token, 201) without waiting for admission.
    async fn join(&self, concert: i64) -> String {
        let r = self.try_join(concert).await;
        assert_eq!(r.status, 201, "{} joins: {r:?}", self.name);
        r.body["token"].as_str().expect("queue token").to_owned()
    }

    async fn token_status(&self, token: &str) -> Reply {
        self.call(
            &self.urls.users,
            Method::GET,
            &format!("/api/queue/tokens/{token}"),
            None,
        )
        .await
    }

    /// Polls (the heartbeat) until batch admits `token`; keeps it as the pass.
    async fn admitted(&mut self, token: String) {
        let what = format!("batch to admit {}", self.name);
        eventually(&what, WAIT, || async {
            let r = self.token_status(&token).await;
            assert!(r.status == 200, "{what}: {r:?}");
            (r.body["status"] == "ACTIVE").then_some(())
        })
        .await;
        self.me.pass = Some(token);
    }

    async fn try_hold(&self, schedule: i64, seat: i64) -> Reply {
        self.call(
            &self.urls.concert,
            Method::POST,
            "/api/reservations",
            Some(json!({"schedule_id": schedule, "seat_nos": [seat]})),
        )
        .await
    }

    /// Holds one seat; the reservation's id.
    async fn hold(&self, schedule: i64, seat: i64) -> i64 {
        let r = self.try_hold(schedule, seat).await;
        assert_eq!(r.status, 201, "{} holds seat {seat}: {r:?}", self.name);
        r.body["id"].as_i64().expect("reservation id")
    }

    /// Pays `reservation` with the key every retry of this payment shares.
    async fn try_pay(&self, reservation: i64) -> Reply {
        self.try_pay_at(&self.urls.payment, reservation).await
    }

    /// [`Fan::try_pay`] through `base` (a proxy in front of payment-api).
    async fn try_pay_at(&self, base: &str, reservation: i64) -> Reply {
        self.call_keyed(
            base,
            Method::POST,
            "/api/payments",
            Some(json!({ "reservation_id": reservation })),
            Some(&format!("pay-{reservation}")),
        )
        .await
    }

    async fn pay(&self, reservation: i64) {
        let r = self.try_pay(reservation).await;
        assert_eq!(
            (r.status, r.body["amount"].as_i64()),
            (201, Some(PRICE)),
            "{} pays: {r:?}",
            self.name
        );
    }

    async fn reservation(&self, reservation: i64) -> Reply {
        self.call(
            &self.urls.concert,
            Method::GET,
            &format!("/api/reservations/{reservation}"),
            None,
        )
        .await
    }

    async fn confirmed(&self, reservation: i64) {
        let what = format!("{}'s reservation {reservation} CONFIRMED", self.name);
        eventually(&what, WAIT, || async {
            let r = self.reservation(reservation).await;
            assert_eq!(r.status, 200, "{what}: {r:?}");
            (r.body["status"] == "CONFIRMED").then_some(())
        })
        .await;
    }
}

impl Fan {
    /// Waits until the fan's pass is retired (EXPIRED) after the purchase.
    async fn retired(&self) {
        let pass = self.me.pass.clone().expect("a pass");
        let what = format!("{}'s pass to be retired", self.name);
        eventually(&what, WAIT, || async {
            let r = self.token_status(&pass).await;
            assert_eq!(r.status, 200, "{what}: {r:?}");
            (r.body["status"] == "EXPIRED").then_some(())
        })
        .await;
    }
}

/// A platform selling one schedule of `seats` seats, batch admitting, and `seats` fans who
/// signed up, charged [`FUNDS`] and were admitted.
struct Sale {
    platform: Platform,
    batch: Process,
    urls: Urls,
    log: Log,
    concert: i64,
    schedule: i64,
    seats: i64,
    fans: Vec<Fan>,
}

impl Sale {
    async fn start(settings: &[(&'static str, &str)], seats: i64) -> Self {
        let platform = Platform::start_with(settings).await;
        let batch = platform
            .start_batch(&[("QUEUE_ADMIT_INTERVAL_MS", "100")])
            .await;
        let urls = Urls {
            users: platform.users.url.clone(),
            concert: platform.concert.url.clone(),
            payment: platform.payment.url.clone(),
        };
        let admin = platform.admin(&urls.users).await;
        let (concert, schedule) = admin
            .at(&urls.concert)
            .concert_on_sale("Faults", seats, PRICE)
            .await;
        let log = Log::default();
        let mut fans = Vec::new();
        for i in 0..seats {
            let fan = Fan::sign_up(&format!("fan{i}"), &urls, &log).await;
            fan.charge(FUNDS).await;
            fans.push(fan);
        }
        let tokens = futures_util::future::join_all(fans.iter().map(|f| f.join(concert))).await;
        futures_util::future::join_all(
            fans.iter_mut()
                .zip(tokens)
                .map(|(fan, token)| fan.admitted(token)),
        )
        .await;
        Self {
            platform,
            batch,
            urls,
            log,
            concert,
            schedule,
            seats,
            fans,
        }
    }

    /// The exact audit of the sale once every seat is sold: each seat in one CONFIRMED
    /// reservation, each of those paid by one COMPLETED payment with one ledger debit, and
    /// not one unit of money made or lost.
    async fn audit(&self) {
        let concert_db = PgPool::connect(&self.platform.concert_db.url)
            .await
            .unwrap();
        let payment_db = PgPool::connect(&self.platform.payment_db.url)
            .await
            .unwrap();

        let unsold: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM seats WHERE schedule_id = $1 AND status <> 'SOLD'",
        )
        .bind(self.schedule)
        .fetch_one(&concert_db)
        .await
        .unwrap();
        assert_eq!(unsold, 0, "every seat sold");
        let mut confirmed: Vec<(i64, Option<i64>, Vec<i32>, i64)> = sqlx::query_as(
            "SELECT id, payment_id, seat_nos, amount FROM reservations \
             WHERE status = 'CONFIRMED' ORDER BY id",
        )
        .fetch_all(&concert_db)
        .await
        .unwrap();
        let mut seats: Vec<i32> = confirmed.iter().flat_map(|r| r.2.clone()).collect();
        seats.sort_unstable();
        let all: Vec<i32> = (1..=self.seats as i32).collect();
        assert_eq!(seats, all, "each seat in exactly one CONFIRMED reservation");
        let sold_to_confirmed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM seats s JOIN reservations r ON r.id = s.reservation_id \
             WHERE s.schedule_id = $1 AND s.status = 'SOLD' AND r.status = 'CONFIRMED'",
        )
        .bind(self.schedule)
        .fetch_one(&concert_db)
        .await
        .unwrap();
        assert_eq!(
            sold_to_confirmed, self.seats,
            "each sold seat is a CONFIRMED one"
        );

        let mut payments: Vec<(i64, i64, String, i64)> =
            sqlx::query_as("SELECT id, reservation_id, status, amount FROM payments ORDER BY id")
                .fetch_all(&payment_db)
                .await
                .unwrap();
        assert!(
            payments.iter().all(|p| p.2 == "COMPLETED" && p.3 == PRICE),
            "{payments:?}"
        );
        // One payment per confirmed reservation, each naming the other.
        confirmed.sort_by_key(|r| r.0);
        payments.sort_by_key(|p| p.1);
        let paid: Vec<(i64, Option<i64>, i64)> =
            payments.iter().map(|p| (p.1, Some(p.0), p.3)).collect();
        let sold: Vec<(i64, Option<i64>, i64)> =
            confirmed.iter().map(|r| (r.0, r.1, r.3)).collect();
        assert_eq!(
            paid, sold,
            "payments (reservation, payment, amount) = confirmed reservations"
        );

        let money = Money::read(&payment_db).await;
        let ledger_payments: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ledger WHERE kind = 'PAYMENT'")
                .fetch_one(&payment_db)
                .await
                .unwrap();
        let fans = self.fans.len() as i64;
        assert_eq!(
            (money.charges, money.debits, money.refunds),
            (fans * FUNDS, self.seats * PRICE, 0),
            "charged, paid and refunded exactly"
        );
        assert_eq!(ledger_payments, self.seats, "one ledger debit per seat");
        money.assert_conserved();
        concert_db.close().await;
        payment_db.close().await;
    }
}

/// `host:port` of a `redis://[user@]host:port[/db]` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[tokio::test]
async fn redis_cut_answers_503_and_the_sale_goes_on() {
    // A single Redis of its own behind the proxy, whatever REDIS_URL names: a cluster's
    // clients would learn its nodes' own addresses and go round a proxy.
    let redis = PrivateRedis::start().await;
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", redis.port)).await;
    let via_proxy = format!("redis://{}", proxy.addr);
    let mut sale = Sale::start(&[("REDIS_URL", &via_proxy)], 6).await;
    let (concert, schedule) = (sale.concert, sale.schedule);

    // The sale in progress: fans 0 and 1 hold and pay, 2 and 3 hold, 4 and 5 are admitted.
    let mut held = Vec::new();
    for (i, fan) in sale.fans.iter().enumerate().take(4) {
        held.push(fan.hold(schedule, i as i64 + 1).await);
    }
    sale.fans[0].pay(held[0]).await;
    sale.fans[1].pay(held[1]).await;

    // First Redis stops answering in time (every chunk 5 s late): a 503 after the services'
    // own Redis timeout, not a hang.
    sale.log.fault(true);
    proxy.delay(5000).await;
    sale.fans[4]
        .me()
        .await
        .assert_unavailable("GET /api/users/me, Redis slow");
    sale.fans[4]
        .try_hold(schedule, 5)
        .await
        .assert_unavailable("hold, Redis slow");
    sale.fans[2]
        .try_pay(held[2])
        .await
        .assert_unavailable("pay, Redis slow");
    proxy.delay(0).await;

    // Then it is unreachable.
    let cut = proxy.command("cut").await;
    assert!(cut.starts_with("cut "), "{cut}");
    let fans = &sale.fans;
    // Everything that needs Redis answers a clear 503, at once and every time.
    for _ in 0..2 {
        fans[0].try_log_in().await.assert_unavailable("log-in");
        fans[4].me().await.assert_unavailable("GET /api/users/me");
        fans[4]
            .try_join(concert)
            .await
            .assert_unavailable("join the line");
        let pass = fans[4].me.pass.clone().unwrap();
        fans[4]
            .token_status(&pass)
            .await
            .assert_unavailable("queue token status");
        fans[4]
            .try_hold(schedule, 5)
            .await
            .assert_unavailable("hold with a queue pass");
        fans[2]
            .try_pay(held[2])
            .await
            .assert_unavailable("pay a hold");
        fans[2]
            .call(&sale.urls.payment, Method::GET, "/api/wallet", None)
            .await
            .assert_unavailable("the wallet");
        fans[2]
            .reservation(held[2])
            .await
            .assert_unavailable("a reservation");
        fans[4]
            .call(
                &sale.urls.concert,
                Method::GET,
                &format!("/api/schedules/{schedule}/seats"),
                None,
            )
            .await
            .assert_unavailable("the seat map");
        fans[4]
            .call(
                &sale.urls.users,
                Method::GET,
                &format!("/api/queue/tokens/{pass}/events"),
                None,
            )
            .await
            .assert_unavailable("the status stream");
        fans[5]
            .call(
                &sale.urls.payment,
                Method::POST,
                "/api/wallet/charges",
                Some(json!({"amount": 1})),
            )
            .await
            .assert_unavailable("a charge");
        // The catalogue reads through its cache: a Redis failure is a miss.
        let r = fans[5]
            .call(
                &sale.urls.concert,
                Method::GET,
                &format!("/api/concerts/{concert}/schedules"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "the catalogue goes on without Redis: {r:?}");
    }
    // Nothing was paid while Redis was away.
    let payment_db = PgPool::connect(&sale.platform.payment_db.url)
        .await
        .unwrap();
    let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&payment_db)
        .await
        .unwrap();
    assert_eq!(paid, 2, "only the two payments made before the cut");
    for service in [&sale.urls.users, &sale.urls.concert, &sale.urls.payment] {
        let ready = reqwest::get(format!("{service}/health/ready"))
            .await
            .unwrap();
        assert_eq!(ready.status(), 503, "{service} is not ready without Redis");
    }

    // Healed: the same processes serve again.
    proxy.heal().await;
    eventually("users-api to reach Redis again", WAIT, || async {
        (fans[4].me().await.status == 200).then_some(())
    })
    .await;
    eventually("concert-api to reach Redis again", WAIT, || async {
        (fans[2].reservation(held[2]).await.status == 200).then_some(())
    })
    .await;
    eventually("payment-api to reach Redis again", WAIT, || async {
        let r = fans[2]
            .call(&sale.urls.payment, Method::GET, "/api/wallet", None)
            .await;
        (r.status == 200).then_some(())
    })
    .await;
    sale.log.fault(false);
    let answered_503 = sale.log.count(503, true);
    assert!(
        answered_503 >= 25,
        "the faults were seen: {answered_503} 503s"
    );

    let again = fans[0].try_log_in().await;
    assert_eq!(again.status, 201, "log-in works again: {again:?}");
    for (i, fan) in fans.iter().enumerate().skip(4) {
        held.push(fan.hold(schedule, i as i64 + 1).await);
    }
    for (fan, reservation) in fans.iter().zip(&held).skip(2) {
        fan.pay(*reservation).await;
    }
    for (fan, reservation) in fans.iter().zip(&held) {
        fan.confirmed(*reservation).await;
    }
    // Every pass retired by its purchase, those confirmed while Redis was away too.
    for fan in fans {
        fan.retired().await;
    }
    assert!(sale.batch.is_running(), "batch outlived the cut");
    sale.log.assert_clean(&[UNAVAILABLE], false);
    sale.audit().await;
}

#[tokio::test]
async fn redis_restarted_empty_logs_fans_out_and_a_new_line_sells_the_rest() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url.clone();
    let mut sale = Sale::start(&[("REDIS_URL", &url)], 6).await;
    let (concert, schedule) = (sale.concert, sale.schedule);

    // Fans 0 and 1 have bought (CONFIRMED, passes retired), 2 and 3 hold, 4 and 5 are
    // admitted.
    let mut held = Vec::new();
    for (i, fan) in sale.fans.iter().enumerate().take(4) {
        held.push(fan.hold(schedule, i as i64 + 1).await);
    }
    for (fan, reservation) in sale.fans.iter().zip(&held).take(2) {
        fan.pay(*reservation).await;
        fan.confirmed(*reservation).await;
        fan.retired().await;
    }
    let old_passes: Vec<String> = sale
        .fans
        .iter()
        .map(|f| f.me.pass.clone().unwrap())
        .collect();

    // Redis dies and comes back empty: every session, token and line is gone.
    sale.log.fault(true);
    redis.restart_empty().await;
    {
        let fans = &sale.fans;
        eventually("users-api to reach the new Redis", WAIT, || async {
            (fans[4].me().await.status == 401).then_some(())
        })
        .await;
        eventually("concert-api to reach the new Redis", WAIT, || async {
            (fans[0].reservation(held[0]).await.status == 401).then_some(())
        })
        .await;
        eventually("payment-api to reach the new Redis", WAIT, || async {
            (fans[2].try_pay(held[2]).await.status == 401).then_some(())
        })
        .await;
    }
    sale.log.fault(false);

    // A clear 401 for every session, whichever service is asked.
    for fan in &sale.fans {
        fan.me()
            .await
            .assert(401, "UNAUTHENTICATED", "a session of the old Redis");
    }
    sale.fans[4].try_hold(schedule, 5).await.assert(
        401,
        "UNAUTHENTICATED",
        "a hold on an old session",
    );
    sale.fans[2].try_pay(held[2]).await.assert(
        401,
        "UNAUTHENTICATED",
        "a payment on an old session",
    );

    // Logged in again, the old passes are unknown: 404 to read, 401 to use.
    for fan in &mut sale.fans {
        fan.log_in().await;
    }
    let fans = &sale.fans;
    fans[4].token_status(&old_passes[4]).await.assert(
        404,
        "QUEUE_TOKEN_NOT_FOUND",
        "a pass of the old Redis",
    );
    fans[4]
        .try_hold(schedule, 5)
        .await
        .assert(401, "QUEUE_TOKEN_INVALID", "a hold on an old pass");
    fans[2]
        .try_pay(held[2])
        .await
        .assert(401, "QUEUE_TOKEN_INVALID", "a payment on an old pass");
    // What was bought before stays bought.
    for (fan, reservation) in fans.iter().zip(&held).take(2) {
        let r = fan.reservation(*reservation).await;
        assert_eq!(
            (r.status, r.body["status"].as_str()),
            (200, Some("CONFIRMED"))
        );
    }

    // A new line: the four who have not bought join again, batch admits them, they buy the
    // rest (2 and 3 pay their holds, 4 and 5 hold and pay).
    let tokens = futures_util::future::join_all(fans[2..].iter().map(|f| f.join(concert))).await;
    futures_util::future::join_all(
        sale.fans[2..]
            .iter_mut()
            .zip(tokens)
            .map(|(fan, token)| fan.admitted(token)),
    )
    .await;
    let fans = &sale.fans;
    for (i, fan) in fans.iter().enumerate().skip(4) {
        held.push(fan.hold(schedule, i as i64 + 1).await);
    }
    for (fan, reservation) in fans.iter().zip(&held).skip(2) {
        fan.pay(*reservation).await;
    }
    for (fan, reservation) in fans.iter().zip(&held).skip(2) {
        fan.confirmed(*reservation).await;
        fan.retired().await;
    }
    assert!(sale.batch.is_running(), "batch outlived Redis");
    sale.log.assert_clean(&[UNAVAILABLE], false);
    sale.audit().await;
}

#[tokio::test]
async fn kafka_restarted_mid_sale_loses_no_payment() {
    let broker = PrivateBroker::start().await;
    let brokers = broker.brokers.clone();
    // Only the broker may settle these payments: no re-publishing, no direct settlement
    // within the test's time.
    let sale = Sale::start(
        &[
            ("KAFKA_BROKERS", &brokers),
            ("PAYMENT_RECONCILE_AFTER_SECS", "3600"),
            ("PAYMENT_SETTLE_DIRECT_AFTER_SECS", "3600"),
        ],
        6,
    )
    .await;
    let fans = &sale.fans;
    let mut held = Vec::new();
    for (i, fan) in fans.iter().enumerate() {
        held.push(fan.hold(sale.schedule, i as i64 + 1).await);
    }

    // Three payments, and the broker killed under their events (SIGKILL: no clean
    // shutdown, whatever it had not yet flushed is its own business).
    for (fan, reservation) in fans.iter().zip(&held).take(3) {
        fan.pay(*reservation).await;
    }
    broker.kill().await;
    // Payments do not wait for the broker: three more while it is dead.
    for (fan, reservation) in fans.iter().zip(&held).skip(3) {
        fan.pay(*reservation).await;
    }
    broker.ensure_running().await;

    // Every payment ends CONFIRMED and every pass retired, through the broker.
    for (fan, reservation) in fans.iter().zip(&held) {
        fan.confirmed(*reservation).await;
        fan.retired().await;
    }
    sale.log.assert_clean(&[], false);
    sale.audit().await;
    let payment_db = PgPool::connect(&sale.platform.payment_db.url)
        .await
        .unwrap();
    let republished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payments WHERE republished_at IS NOT NULL")
            .fetch_one(&payment_db)
            .await
            .unwrap();
    assert_eq!(republished, 0, "each event went through the broker once");
    payment_db.close().await;
    delete_kafka_prefix(&brokers, &format!("{}.", sale.platform.id)).await;
}

#[tokio::test]
async fn a_service_killed_mid_payment_loses_nothing() {
    let mut sale = Sale::start(&[], 8).await;
    // payment-api's database behind one fault proxy, so that a payment can be caught in the
    // middle of its transaction; the fans' payments behind another, so that the answer of a
    // payment already committed can be lost with the crash.
    let db_url = sale.platform.payment_db.url.clone();
    let upstream = host_port(&db_url);
    let db_proxy = FaultProxy::start(&upstream).await;
    sale.platform
        .payment
        .restart_with(&[(
            "PAYMENT_DATABASE_URL",
            db_url.replacen(&upstream, &db_proxy.addr, 1),
        )])
        .await;
    let fans_proxy = FaultProxy::start(&host_port(&sale.urls.payment)).await;
    let via_proxy = format!("http://{}", fans_proxy.addr);
    let mut held = Vec::new();
    for (i, fan) in sale.fans.iter().enumerate() {
        held.push(fan.hold(sale.schedule, i as i64 + 1).await);
    }
    // Two payments answered before the crash (their retries must replay them).
    for (fan, reservation) in sale.fans.iter().zip(&held).take(2) {
        fan.pay(*reservation).await;
    }

    // The other six pay at once, every database statement 400 ms slower and every answer
    // 3 s late. Three of them find their wallet locked (here, by the test): a payment is one
    // call (`pay_at_once`), so those stop inside it, with their key and payment row written
    // and not committed. As soon as one of the other three has committed and the three are
    // waiting, the answers on their way are lost (the fans' proxy resets its connections)
    // and payment-api is killed (SIGKILL).
    let payment_db = PgPool::connect(&db_url).await.unwrap();
    let concert_db = PgPool::connect(&sale.platform.concert_db.url)
        .await
        .unwrap();
    let stopped: Vec<i64> =
        sqlx::query_scalar("SELECT user_id FROM reservations WHERE id = ANY($1) ORDER BY id")
            .bind(&held[2..5])
            .fetch_all(&concert_db)
            .await
            .unwrap();
    concert_db.close().await;
    let mut wallets_locked = payment_db.begin().await.unwrap();
    sqlx::query("SELECT user_id FROM wallets WHERE user_id = ANY($1) FOR UPDATE")
        .bind(&stopped)
        .execute(&mut *wallets_locked)
        .await
        .unwrap();
    db_proxy.delay(200).await;
    fans_proxy.delay(3000).await;
    sale.log.fault(true);
    let first = {
        let fans = &sale.fans;
        let payments = futures_util::future::join_all(
            fans.iter()
                .zip(&held)
                .skip(2)
                .map(|(fan, reservation)| fan.try_pay_at(&via_proxy, *reservation)),
        );
        let platform = &mut sale.platform;
        let kill = async {
            eventually(
                "a payment committed and three stopped mid-transaction",
                WAIT,
                || async {
                    let (paid, stopped): (i64, i64) = sqlx::query_as(
                        "SELECT (SELECT count(*) FROM payments), \
                           (SELECT count(*) FROM pg_stat_activity \
                            WHERE datname = current_database() AND wait_event_type = 'Lock' \
                              AND backend_xid IS NOT NULL)",
                    )
                    .fetch_one(&payment_db)
                    .await
                    .unwrap();
                    (paid > 2 && stopped == 3).then_some(())
                },
            )
            .await;
            fans_proxy.cut().await;
            platform.payment.crash();
        };
        let (replies, ()) = tokio::join!(payments, kill);
        replies
    };
    for r in &first {
        assert_eq!(r.status, 0, "every answer was lost with the crash: {r:?}");
    }
    // What the crash left: the payments committed (their answers lost), and those whose
    // transaction died with it: their wait for the wallets ends at payment-api's
    // `lock_timeout` (`IN_FLIGHT_WAIT`) with nobody left to go on, and PostgreSQL rolls them
    // back — before the test lets the wallets go.
    db_proxy.delay(0).await;
    eventually("the stopped payments to be rolled back", WAIT, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&payment_db)
        .await
        .unwrap();
        (waiting == 0).then_some(())
    })
    .await;
    wallets_locked.rollback().await.unwrap();
    sale.platform.payment.restart().await;
    sale.log.fault(false);
    let committed: Vec<(i64, i64)> = sqlx::query_as("SELECT reservation_id, id FROM payments")
        .fetch_all(&payment_db)
        .await
        .unwrap();
    assert!(committed.len() > 2, "{committed:?}");
    assert!(
        committed.iter().all(|(r, _)| !held[2..5].contains(r)),
        "the three stopped payments died with the process: {committed:?}"
    );

    // Each fan pays again with the same Idempotency-Key until answered 201: the first answer
    // replayed (the same payment), or the payment made now — never a second one. (While the
    // dead process's transaction is not yet rolled back, its key answers 409
    // IDEMPOTENCY_KEY_IN_USE.)
    let fans = &sale.fans;
    for (fan, reservation) in fans.iter().zip(&held) {
        let paid = eventually(&format!("{} to pay", fan.name), WAIT, || async {
            let r = fan.try_pay(*reservation).await;
            match (r.status, r.code()) {
                (201, _) => Some(r),
                (409, "IDEMPOTENCY_KEY_IN_USE") => None,
                _ => panic!("{} pays again: {r:?}", fan.name),
            }
        })
        .await;
        assert_eq!(paid.body["amount"].as_i64(), Some(PRICE), "{paid:?}");
        if let Some((_, id)) = committed.iter().find(|(r, _)| r == reservation) {
            assert_eq!(
                paid.body["id"].as_i64(),
                Some(*id),
                "replayed, not repeated"
            );
        }
    }
    for (fan, reservation) in fans.iter().zip(&held) {
        fan.confirmed(*reservation).await;
        fan.retired().await;
    }
    sale.log.assert_clean(&[], true);
    sale.audit().await;
    payment_db.close().await;
}
