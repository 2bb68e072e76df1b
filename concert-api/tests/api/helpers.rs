//! `spawn_app`: concert-api on port 0 with its own database, Redis prefix and topic prefix,
//! and a manual clock, plus the sessions and queue passes its callers need — written by
//! users-api's own code.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::auth::{QueueKeys, Role, Session, SessionStore};
use common::clock::Clock;
use common::config::Env;
use common::kafka::KafkaClient;
use common::redis::RedisStore;
use common::testkit::{Isolation, TestApp, eventually};
use concert_api::{Application, Config};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use users_api::domain::queue::WaitingRoom;

pub struct Spawned {
    pub app: TestApp,
    pub config: Config,
    /// The service's clock: move it ahead instead of sleeping until a hold dies.
    pub clock: Clock,
    pub admin: String,
    pub db: DatabaseConnection,
    /// Keeps the test database alive: dropping it drops the database.
    _iso: Isolation,
}

/// Every buyer a test creates is a different user.
static NEXT_USER: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1000);

/// A buyer: session token and an ACTIVE queue token for one concert.
#[derive(Clone, Debug)]
pub struct Buyer {
    pub user_id: i64,
    pub session: String,
    pub pass: String,
}

pub async fn spawn_app() -> Spawned {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with its configuration changed by `tune` first.
pub async fn spawn_app_with(tune: impl FnOnce(&mut Config)) -> Spawned {
    let iso = Isolation::new().await;
    let env = iso.env("CONCERT_DATABASE_URL");
    let mut config = Config::from_env(&env).expect("test config");
    config.clock = Clock::manual();
    tune(&mut config);
    let service = Application::build(config.clone())
        .await
        .expect("build concert-api");
    let app = TestApp::start(service);
    let db = iso.db.connect().await;
    let store = SessionStore::new(
        RedisStore::connect(&config.redis).unwrap(),
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
    Spawned {
        app,
        clock: config.clock.clone(),
        config,
        admin,
        db,
        _iso: iso,
    }
}

impl Spawned {
    pub fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    pub fn redis(&self) -> RedisStore {
        RedisStore::connect(&self.config.redis).unwrap()
    }

    /// The service's inventory hashes (same Redis, same prefix).
    pub fn inventory(&self) -> concert_api::Inventory {
        concert_api::Inventory::new(self.redis())
    }

    /// Creates a concert and one schedule; returns (concert_id, schedule_id).
    pub async fn concert_with_schedule(
        &self,
        seats: i64,
        opens_in: i64,
        starts_in: i64,
    ) -> (i64, i64) {
        let c = reqwest::Client::new();
        let concert: Value = c
            .post(self.url("/api/admin/concerts"))
            .bearer_auth(&self.admin)
            .json(&json!({"title": "Flash", "performer": "The Rush"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let concert_id = concert["id"].as_i64().unwrap();
        let schedule_id = self.schedule(concert_id, seats, opens_in, starts_in).await["id"]
            .as_i64()
            .unwrap();
        (concert_id, schedule_id)
    }

    pub async fn schedule(
        &self,
        concert_id: i64,
        seats: i64,
        opens_in: i64,
        starts_in: i64,
    ) -> Value {
        let now = self.clock.now();
        let res = reqwest::Client::new()
            .post(self.url(&format!("/api/admin/concerts/{concert_id}/schedules")))
            .bearer_auth(&self.admin)
            .json(&json!({
                "starts_at": now + chrono::Duration::seconds(starts_in),
                "booking_opens_at": now + chrono::Duration::seconds(opens_in),
                "seat_count": seats,
                "price": 1000,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.json().await.unwrap()
    }

    /// `n` users with sessions, each joined to `concert_id`'s line and admitted, exactly as
    /// users-api does it.
    pub async fn buyers(&self, n: usize, concert_id: i64) -> Vec<Buyer> {
        let redis = self.redis();
        let store = SessionStore::new(redis.clone(), Duration::from_secs(600));
        let queue_env = Env::from_pairs([
            ("QUEUE_MAX_ACTIVE", "100000"),
            ("QUEUE_ADMIT_PER_TICK", "100000"),
        ]);
        let room = WaitingRoom::new(
            QueueKeys::new(redis),
            users_api::config::QueueConfig::from_env(&queue_env).unwrap(),
            self.clock.clone(),
        );
        let mut buyers = Vec::with_capacity(n);
        for i in 0..n {
            let user_id = NEXT_USER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (session, _) = store
                .create(&Session {
                    user_id,
                    username: format!("u{i}"),
                    role: Role::User,
                })
                .await
                .unwrap();
            let (status, _) = room.join(user_id, concert_id).await.unwrap();
            buyers.push(Buyer {
                user_id,
                session,
                pass: status.token,
            });
        }
        // Admission lets in no more fans than seats are left (it reads the inventory hash);
        // these tests want every buyer in, so the concert is "unknown" while they are
        // admitted, and counted again right after.
        let inventory = self.inventory();
        self.forget(&[inventory.concert_key(concert_id)]).await;
        assert_eq!(
            room.admit(concert_id, self.clock.now())
                .await
                .unwrap()
                .admitted as usize,
            n
        );
        assert!(inventory.resync(&self.db, concert_id).await.unwrap());
        buyers
    }

    pub async fn hold(
        &self,
        buyer: &Buyer,
        schedule_id: i64,
        seats: impl AsRef<[i64]>,
    ) -> (u16, Value) {
        let seats = seats.as_ref();
        let res = reqwest::Client::new()
            .post(self.url("/api/reservations"))
            .bearer_auth(&buyer.session)
            .header("x-queue-token", &buyer.pass)
            .json(&json!({"schedule_id": schedule_id, "seat_nos": seats}))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    /// A hold sent with an `Idempotency-Key`; the answer's status, body, and raw body bytes.
    pub async fn hold_keyed(
        &self,
        buyer: &Buyer,
        key: &str,
        schedule_id: i64,
        seats: impl AsRef<[i64]>,
    ) -> (u16, Value) {
        let res = reqwest::Client::new()
            .post(self.url("/api/reservations"))
            .bearer_auth(&buyer.session)
            .header("x-queue-token", &buyer.pass)
            .header("idempotency-key", key)
            .json(&json!({"schedule_id": schedule_id, "seat_nos": seats.as_ref()}))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    pub async fn cancel(&self, buyer: &Buyer, id: i64) -> u16 {
        reqwest::Client::new()
            .delete(self.url(&format!("/api/reservations/{id}")))
            .bearer_auth(&buyer.session)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Settles a payment over `POST /internal/settlements`; the verdict.
    pub async fn settle(
        &self,
        event: &common::kafka::Envelope<common::events::PaymentCompleted>,
    ) -> Value {
        let res = reqwest::Client::new()
            .post(self.url("/internal/settlements"))
            .header("x-internal-token", common::testkit::INTERNAL_TEST_TOKEN)
            .json(event)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    /// A new concert (with `extra` fields in the body); its JSON.
    pub async fn concert(&self, extra: Value) -> Value {
        let mut body = json!({"title": "On sale", "performer": "The Levers"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let res = reqwest::Client::new()
            .post(self.url("/api/admin/concerts"))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.json().await.unwrap()
    }

    /// `(total, available, held, sold)` of a concert's seats, counted in the database.
    pub async fn counted(&self, concert_id: i64) -> [i64; 4] {
        let n = |status: &str| {
            format!(
                "SELECT count(*)::bigint AS n FROM seats se JOIN schedules sc ON sc.id = se.schedule_id \
                 WHERE sc.concert_id = {concert_id} {status}"
            )
        };
        [
            self.count(&n("")).await,
            self.count(&n("AND se.status = 'AVAILABLE'")).await,
            self.count(&n("AND se.status = 'HELD'")).await,
            self.count(&n("AND se.status = 'SOLD'")).await,
        ]
    }

    /// `(total, available, held, sold)` of a Redis inventory hash (`None` if it does not exist).
    /// Deletes `keys` from the service's Redis (as if Redis had lost them).
    pub async fn forget(&self, keys: &[String]) {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut self.redis().conn())
            .await
            .unwrap();
    }

    pub async fn hash(&self, key: &str) -> Option<[i64; 4]> {
        let v: Vec<Option<i64>> = redis::cmd("HMGET")
            .arg(key)
            .arg(&["total", "available", "held", "sold"])
            .query_async(&mut self.redis().conn())
            .await
            .unwrap();
        if v.iter().all(Option::is_none) {
            return None;
        }
        Some([0, 1, 2, 3].map(|i| v[i].unwrap_or(i64::MIN)))
    }

    pub async fn reservation(&self, buyer: &Buyer, id: i64) -> Value {
        reqwest::Client::new()
            .get(self.url(&format!("/api/reservations/{id}")))
            .bearer_auth(&buyer.session)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db
            .query_one_raw(Statement::from_string(self.db.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "n")
            .unwrap()
    }

    pub fn kafka(&self) -> KafkaClient {
        KafkaClient::new(&self.config.kafka).unwrap()
    }

    /// Publishes `payment.completed` for a reservation, as payment-api's relay would.
    pub async fn deliver_payment(
        &self,
        event: &common::kafka::Envelope<common::events::PaymentCompleted>,
    ) {
        let kafka = self.kafka();
        let payload = serde_json::to_vec(event).unwrap();
        kafka
            .send(
                &kafka.topic(common::events::PAYMENT_COMPLETED),
                &event.data.reservation_id.to_string(),
                &payload,
                rdkafka::message::OwnedHeaders::new(),
            )
            .await
            .unwrap();
    }

    pub fn payment(
        &self,
        buyer: &Buyer,
        reservation_id: i64,
        payment_id: i64,
        paid_at: DateTime<Utc>,
    ) -> common::kafka::Envelope<common::events::PaymentCompleted> {
        common::kafka::Envelope::new(
            common::events::PAYMENT_COMPLETED,
            common::events::PaymentCompleted {
                payment_id,
                reservation_id,
                user_id: buyer.user_id,
                amount: 1000,
                paid_at,
            },
            self.clock.now(),
        )
    }

    /// The settlement consumer's own count of events handled (effect committed, or skipped as
    /// a duplicate), read from `/metrics`.
    pub async fn payments_handled(&self) -> u64 {
        self.figure("kafka_consumer_handled_total{")
            .await
            .map_or(0, |n| n as u64)
    }

    /// The value of the first sample on `/metrics` whose name and labels start with
    /// `series` (e.g. `settlements_total{outcome="confirmed",path="event"`); `None` if none.
    pub async fn figure(&self, series: &str) -> Option<f64> {
        common::testkit::metric(&self.url("/metrics"), series).await
    }

    /// Waits until the settlement consumer has handled `n` deliveries.
    pub async fn until_payments_handled(&self, n: u64) {
        eventually(
            &format!("the consumer to handle {n} deliveries"),
            Duration::from_secs(30),
            || async move { (self.payments_handled().await >= n).then_some(()) },
        )
        .await
    }

    /// Waits until concert-api's consumer group has committed past every `payment.completed`
    /// sent so far (one partition in tests): offsets are committed only after the handler's
    /// transaction, so every delivery has had its effect.
    pub async fn payments_consumed(&self) {
        let kafka = self.config.kafka.clone();
        eventually(
            "the consumer to handle every payment.completed",
            Duration::from_secs(30),
            || consumed(&kafka),
        )
        .await
    }
}

async fn consumed(kafka: &common::config::KafkaConfig) -> Option<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let (brokers, group, topic) = (
        kafka.brokers.clone(),
        kafka.topic("concert-api"),
        kafka.topic(common::events::PAYMENT_COMPLETED),
    );
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .ok()?;
        let (_, high) = consumer
            .fetch_watermarks(&topic, 0, Duration::from_secs(5))
            .ok()?;
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition(&topic, 0);
        let committed = consumer
            .committed_offsets(partitions, Duration::from_secs(5))
            .ok()?;
        let offset = committed.find_partition(&topic, 0)?.offset();
        (high > 0 && matches!(offset, Offset::Offset(n) if n >= high)).then_some(())
    })
    .await
    .unwrap()
}
