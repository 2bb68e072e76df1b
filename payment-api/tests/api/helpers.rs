//! `spawn_platform`: payment-api and concert-api (and, for the saga, users-api) on port 0,
//! each with its own database, sharing one Redis prefix and one topic prefix — the same
//! wiring as the real stack, inside the test process. payment-api runs on a manual clock
//! (`Platform::payment_clock`): a test moves it ahead instead of sleeping.

use std::time::Duration;

use chrono::Utc;
use common::auth::{QueueKeys, Role, Session, SessionStore};
use common::clock::Clock;
use common::config::Env;
use common::redis::RedisStore;
use common::testkit::{Isolation, TestApp, TestDatabase};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use users_api::domain::queue::WaitingRoom;

pub struct Platform {
    pub payment: TestApp,
    pub concert: TestApp,
    pub users: Option<TestApp>,
    pub payment_config: payment_api::Config,
    pub concert_config: concert_api::Config,
    pub payment_db: DatabaseConnection,
    pub concert_db: DatabaseConnection,
    pub admin: String,
    /// Keep the databases alive: dropping them drops the databases.
    _iso: Isolation,
    _concert_db: TestDatabase,
    _users_db: Option<TestDatabase>,
}

#[derive(Clone, Debug)]
pub struct Buyer {
    pub user_id: i64,
    pub session: String,
    pub pass: String,
}

static NEXT_USER: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(5000);

pub async fn spawn_platform(tweak: impl Fn(Env) -> Env) -> Platform {
    spawn(tweak, |e| e, false).await
}

/// Like [`spawn_platform`], with concert-api's environment changed further by `concert`.
pub async fn spawn_platform_with_concert(
    tweak: impl Fn(Env) -> Env,
    concert: impl Fn(Env) -> Env,
) -> Platform {
    spawn(tweak, concert, false).await
}

/// With users-api too: the whole saga, including retiring the buyer's queue token.
pub async fn spawn_saga(tweak: impl Fn(Env) -> Env) -> Platform {
    spawn(tweak, |e| e, true).await
}

async fn spawn(
    tweak: impl Fn(Env) -> Env,
    concert_tweak: impl Fn(Env) -> Env,
    with_users: bool,
) -> Platform {
    let iso = Isolation::new().await;
    let concert_db = TestDatabase::create().await;
    let concert_env = concert_tweak(tweak(
        iso.env("UNUSED")
            .with("CONCERT_DATABASE_URL", concert_db.url.clone()),
    ));
    let concert_config = concert_api::Config::from_env(&concert_env).unwrap();
    let concert = TestApp::start(
        concert_api::Application::build(concert_config.clone())
            .await
            .unwrap(),
    );

    let payment_env = tweak(
        iso.env("PAYMENT_DATABASE_URL")
            .with("CONCERT_API_URL", concert.address.clone()),
    );
    let mut payment_config = payment_api::Config::from_env(&payment_env).unwrap();
    // Runs with the system's until a test moves it; `payment_config` keeps a clone.
    payment_config.clock = Clock::manual();
    let payment = TestApp::start(
        payment_api::Application::build(payment_config.clone())
            .await
            .unwrap(),
    );

    let (users, users_db) = if with_users {
        let db = TestDatabase::create().await;
        let env = tweak(
            iso.env("UNUSED")
                .with("USERS_DATABASE_URL", db.url.clone())
                .with("CONCERT_API_URL", concert.address.clone()),
        );
        let config = users_api::Config::from_env(&env).unwrap();
        (
            Some(TestApp::start(
                users_api::Application::build(config).await.unwrap(),
            )),
            Some(db),
        )
    } else {
        (None, None)
    };

    let store = SessionStore::new(
        RedisStore::connect(&payment_config.redis).unwrap(),
        Duration::from_secs(600),
    );
    let (admin, _) = store
        .create(&Session {
            user_id: 1,
            username: "admin".into(),
            role: Role::Admin,
        })
        .await
        .unwrap();
    let payment_db = iso.db.connect().await;
    let concert_db_conn = concert_db.connect().await;
    Platform {
        payment,
        concert,
        users,
        payment_config,
        concert_config,
        payment_db,
        concert_db: concert_db_conn,
        admin,
        _iso: iso,
        _concert_db: concert_db,
        _users_db: users_db,
    }
}

pub async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap()
}

impl Platform {
    /// payment-api's clock (manual): `advance` it to let time pass for payment-api alone.
    pub fn payment_clock(&self) -> &Clock {
        &self.payment_config.clock
    }

    pub fn redis(&self) -> RedisStore {
        RedisStore::connect(&self.payment_config.redis).unwrap()
    }

    /// A concert with one open schedule of `seats` seats at 1,000 each.
    pub async fn concert_with_schedule(&self, seats: i64) -> (i64, i64) {
        let c = reqwest::Client::new();
        let concert: Value = c
            .post(self.concert.url("/api/admin/concerts"))
            .bearer_auth(&self.admin)
            // The most a buyer may own (the tests' buyers hold many seats each).
            .json(&json!({"title": "Saga", "performer": "Band", "max_tickets_per_user": 20}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = concert["id"].as_i64().unwrap();
        let now = Utc::now();
        let schedule: Value = c
            .post(
                self.concert
                    .url(&format!("/api/admin/concerts/{id}/schedules")),
            )
            .bearer_auth(&self.admin)
            .json(&json!({
                "starts_at": now + chrono::Duration::days(1),
                "booking_opens_at": now - chrono::Duration::minutes(1),
                "seat_count": seats,
                "price": 1000,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (id, schedule["id"].as_i64().unwrap())
    }

    /// Users with sessions, joined and admitted to `concert`'s line as users-api does it.
    pub async fn buyers(&self, n: usize, concert: i64) -> Vec<Buyer> {
        let redis = self.redis();
        let store = SessionStore::new(redis.clone(), Duration::from_secs(600));
        let env = Env::from_pairs([
            ("QUEUE_MAX_ACTIVE", "100000"),
            ("QUEUE_ADMIT_PER_TICK", "100000"),
        ]);
        let room = WaitingRoom::new(
            QueueKeys::new(redis),
            users_api::config::QueueConfig::from_env(&env).unwrap(),
            Clock::system(),
        );
        let mut out = Vec::new();
        for _ in 0..n {
            let user_id = NEXT_USER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (session, _) = store
                .create(&Session {
                    user_id,
                    username: format!("u{user_id}"),
                    role: Role::User,
                })
                .await
                .unwrap();
            let (status, _) = room.join(user_id, concert).await.unwrap();
            out.push(Buyer {
                user_id,
                session,
                pass: status.token,
            });
        }
        room.admit(concert, Utc::now()).await.unwrap();
        out
    }

    pub async fn hold(&self, b: &Buyer, schedule: i64, seats: Vec<i64>) -> Value {
        let res = reqwest::Client::new()
            .post(self.concert.url("/api/reservations"))
            .bearer_auth(&b.session)
            .header("x-queue-token", &b.pass)
            .json(&json!({"schedule_id": schedule, "seat_nos": seats}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.json().await.unwrap()
    }

    pub async fn charge(&self, b: &Buyer, amount: Value, key: Option<&str>) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(self.payment.url("/api/wallet/charges"))
            .bearer_auth(&b.session)
            .json(&json!({"amount": amount}));
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    pub async fn pay(&self, b: &Buyer, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(self.payment.url("/api/payments"))
            .bearer_auth(&b.session)
            .header("x-queue-token", &b.pass)
            .json(&body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    /// The value of the first sample on payment-api's `/metrics` whose name and labels start
    /// with `series` (e.g. `payments_total{outcome="completed"`); `None` if none.
    pub async fn figure(&self, series: &str) -> Option<f64> {
        common::testkit::metric(&self.payment.url("/metrics"), series).await
    }

    pub async fn balance(&self, b: &Buyer) -> i64 {
        let v: Value = reqwest::Client::new()
            .get(self.payment.url("/api/wallet"))
            .bearer_auth(&b.session)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["balance"].as_i64().unwrap()
    }

    pub async fn reservation(&self, b: &Buyer, id: i64) -> Value {
        reqwest::Client::new()
            .get(self.concert.url(&format!("/api/reservations/{id}")))
            .bearer_auth(&b.session)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// DESIGN §9.2 and §9.3: every wallet equals its ledger, none is negative, and
    /// charges − payments + refunds = the sum of balances.
    pub async fn assert_money_invariants(&self) {
        let db = &self.payment_db;
        assert_eq!(
            count(
                db,
                "SELECT count(*)::bigint AS n FROM wallets WHERE balance < 0"
            )
            .await,
            0
        );
        assert_eq!(
            count(
                db,
                "SELECT count(*)::bigint AS n FROM wallets w WHERE w.balance <> COALESCE((SELECT sum(CASE kind WHEN 'PAYMENT' THEN -amount ELSE amount END) FROM ledger l WHERE l.user_id = w.user_id), 0)"
            )
            .await,
            0,
            "every balance equals its ledger"
        );
        assert_eq!(
            count(db, "SELECT (COALESCE((SELECT sum(CASE kind WHEN 'PAYMENT' THEN -amount ELSE amount END) FROM ledger), 0) - COALESCE((SELECT sum(balance) FROM wallets), 0))::bigint AS n").await,
            0,
            "money is conserved"
        );
        assert_eq!(
            count(db, "SELECT count(*)::bigint AS n FROM payments p WHERE (SELECT count(*) FROM ledger l WHERE l.ref = 'payment:' || p.id) <> 1").await,
            0,
            "every payment debited exactly once"
        );
    }
}
