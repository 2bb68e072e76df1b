//! Archival of finished shows (DESIGN §4 "Archive") on real PostgreSQL, with concert-api and
//! payment-api answering the history over HTTP: a show over by `ARCHIVE_AFTER_DAYS` leaves
//! the hot tables for the archive ones and every answer stays the same; shows to come, shows
//! just played and shows still settling stay; an interrupted pass is finished by the next;
//! the ledger keeps every row in its monthly partitions; the invariants hold throughout.
//! Archival runs at an instant the test chooses (the library's `now`), not by waiting.

use std::time::Duration;

use batch::archive::{self, Budget, Rows};
use chrono::{DateTime, Datelike, Months, NaiveDate, SubsecRound, TimeDelta, Utc};
use common::auth::{QueueKeys, Role, Session, SessionStore};
use common::clock::Clock;
use common::config::Env;
use common::redis::RedisStore;
use common::testkit::{INTERNAL_TEST_TOKEN, StubCatalogue, TestApp, TestDatabase, eventually};
use payment_api::store::ledger::partition_name;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait};
use sea_orm_migration::MigratorTrait;
use serde_json::{Value, json};
use users_api::domain::queue::WaitingRoom;

use crate::helpers::{World, figure, metrics};

const DAY: TimeDelta = TimeDelta::days(1);
/// The archive age the passes here run with.
const AFTER: TimeDelta = TimeDelta::days(30);

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap()
}

/// The rows `sql` selects, as one JSON array (`sql` is a SELECT; the order is its own).
async fn rows(db: &DatabaseConnection, sql: &str) -> Value {
    let wrapped = format!("SELECT coalesce(json_agg(t), '[]')::text AS j FROM ({sql}) t");
    let text: String = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), wrapped))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "j")
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(list: &[i64]) -> String {
    format!(
        "'{{{}}}'::bigint[]",
        list.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    )
}

const RESERVATION_COLUMNS: &str = "id, user_id, schedule_id, concert_id, seat_nos, amount, status, held_until, payment_id, created_at, updated_at";
const SEAT_COLUMNS: &str = "id, schedule_id, seat_no, price, status, reservation_id, held_until";
const PAYMENT_COLUMNS: &str = "id, user_id, reservation_id, amount, status, created_at, refunded_at, confirmed_at, republished_at";

/// Every row of a schedule in `schema` (`public` or `archive`) of the concert DB, and of its
/// reservations' payments in the same schema of the payment DB: four arrays of rows.
async fn rows_of(stage: &Stage, schema: &str, schedule: i64, reservations: &[i64]) -> Value {
    let rs = ids(reservations);
    [
        rows(
            &stage.concert_db,
            &format!("SELECT {SEAT_COLUMNS} FROM {schema}.seats WHERE schedule_id = {schedule} ORDER BY id"),
        )
        .await,
        rows(
            &stage.concert_db,
            &format!(
                "SELECT reservation_id, seat_id, active FROM {schema}.reservation_seats \
                 WHERE reservation_id = ANY({rs}) ORDER BY reservation_id, seat_id"
            ),
        )
        .await,
        rows(
            &stage.concert_db,
            &format!("SELECT {RESERVATION_COLUMNS} FROM {schema}.reservations WHERE schedule_id = {schedule} ORDER BY id"),
        )
        .await,
        rows(
            &stage.payment_db,
            &format!("SELECT {PAYMENT_COLUMNS} FROM {schema}.payments WHERE reservation_id = ANY({rs}) ORDER BY id"),
        )
        .await,
    ]
    .into_iter()
    .collect()
}

#[derive(Clone, Debug)]
struct Buyer {
    user_id: i64,
    session: String,
    pass: String,
}

/// concert-api and payment-api on the world's databases (system clocks), with an admin, fans
/// and the calls a fan makes.
struct Stage {
    /// Keeps the databases alive: dropping it drops them.
    _world: World,
    concert: TestApp,
    payment: TestApp,
    concert_db: DatabaseConnection,
    payment_db: DatabaseConnection,
    redis: RedisStore,
    sessions: SessionStore,
    room: WaitingRoom,
    admin: String,
    http: reqwest::Client,
}

static NEXT_USER: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(7000);

impl Stage {
    async fn new() -> Self {
        let world = World::new().await;
        let concert = TestApp::start(
            concert_api::Application::build(concert_api::Config::from_env(&world.env()).unwrap())
                .await
                .unwrap(),
        );
        let env = world.env().with("CONCERT_API_URL", concert.address.clone());
        let payment = TestApp::start(
            payment_api::Application::build(payment_api::Config::from_env(&env).unwrap())
                .await
                .unwrap(),
        );
        let config = batch::Config::from_env(&env).unwrap();
        let redis = RedisStore::connect(&config.redis).unwrap();
        let sessions = SessionStore::new(redis.clone(), Duration::from_secs(600));
        let room = WaitingRoom::new(
            QueueKeys::new(redis.clone()),
            users_api::config::QueueConfig::from_env(&Env::from_pairs([
                ("QUEUE_MAX_ACTIVE", "100000"),
                ("QUEUE_ADMIT_PER_TICK", "100000"),
            ]))
            .unwrap(),
            Clock::system(),
        );
        let (admin, _) = sessions
            .create(&Session {
                user_id: 1,
                username: "admin".into(),
                role: Role::Admin,
            })
            .await
            .unwrap();
        Self {
            concert_db: world.concert_db.connect().await,
            payment_db: world.payment_db.connect().await,
            _world: world,
            concert,
            payment,
            redis,
            sessions,
            room,
            admin,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn new_concert(&self, max_tickets_per_user: i64) -> i64 {
        let (status, body) = self
            .send(
                self.http
                    .post(self.concert.url("/api/admin/concerts"))
                    .bearer_auth(&self.admin)
                    .json(&json!({"title": "Farewell", "performer": "The Archivists",
                                  "max_tickets_per_user": max_tickets_per_user})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// A date of `concert` starting `starts_in` from now (booking open since a minute ago).
    async fn new_schedule(&self, concert: i64, starts_in: TimeDelta, seats: i64) -> i64 {
        let now = Utc::now();
        let (status, body) = self
            .send(
                self.http
                    .post(
                        self.concert
                            .url(&format!("/api/admin/concerts/{concert}/schedules")),
                    )
                    .bearer_auth(&self.admin)
                    .json(&json!({
                        "starts_at": now + starts_in,
                        "booking_opens_at": now - TimeDelta::minutes(1),
                        "seat_count": seats,
                        "price": 1000,
                    })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// A fan with a session, admitted to `concert`'s line, with 100,000 in the wallet.
    async fn fan(&self, concert: i64) -> Buyer {
        let user_id = NEXT_USER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (session, _) = self
            .sessions
            .create(&Session {
                user_id,
                username: format!("fan{user_id}"),
                role: Role::User,
            })
            .await
            .unwrap();
        let (status, _) = self.room.join(user_id, concert).await.unwrap();
        self.room.admit(concert, Utc::now()).await.unwrap();
        let fan = Buyer {
            user_id,
            session,
            pass: status.token,
        };
        let (status, body) = self
            .send(
                self.http
                    .post(self.payment.url("/api/wallet/charges"))
                    .bearer_auth(&fan.session)
                    .json(&json!({"amount": 100_000})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        fan
    }

    async fn try_hold(&self, fan: &Buyer, schedule: i64, seats: &[i64]) -> (u16, Value) {
        self.send(
            self.http
                .post(self.concert.url("/api/reservations"))
                .bearer_auth(&fan.session)
                .header("x-queue-token", &fan.pass)
                .json(&json!({"schedule_id": schedule, "seat_nos": seats})),
        )
        .await
    }

    async fn hold(&self, fan: &Buyer, schedule: i64, seats: &[i64]) -> i64 {
        let (status, body) = self.try_hold(fan, schedule, seats).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().unwrap()
    }

    async fn cancel(&self, fan: &Buyer, reservation: i64) {
        let (status, body) = self
            .send(
                self.http
                    .delete(
                        self.concert
                            .url(&format!("/api/reservations/{reservation}")),
                    )
                    .bearer_auth(&fan.session),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Pays `reservation` and waits for the whole saga: the seat confirmed by concert-api and
    /// the confirmation seen by payment-api. Answers the payment's id.
    async fn pay(&self, fan: &Buyer, reservation: i64) -> i64 {
        let (status, body) = self
            .send(
                self.http
                    .post(self.payment.url("/api/payments"))
                    .bearer_auth(&fan.session)
                    .header("x-queue-token", &fan.pass)
                    .json(&json!({"reservation_id": reservation})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let payment = body["id"].as_i64().unwrap();
        eventually(
            "the payment confirmed on both sides",
            Duration::from_secs(30),
            || async {
                let confirmed = count(
                    &self.concert_db,
                    &format!(
                        "SELECT count(*) AS n FROM reservations \
                         WHERE id = {reservation} AND status = 'CONFIRMED'"
                    ),
                )
                .await;
                let seen = count(
                    &self.payment_db,
                    &format!(
                        "SELECT count(*) AS n FROM payments \
                         WHERE id = {payment} AND confirmed_at IS NOT NULL"
                    ),
                )
                .await;
                (confirmed == 1 && seen == 1).then_some(())
            },
        )
        .await;
        payment
    }

    async fn get(&self, app: &TestApp, path: &str, session: &str) -> Value {
        let (status, body) = self
            .send(self.http.get(app.url(path)).bearer_auth(session))
            .await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Everything a fan (and payment-api, internally) reads of their history.
    async fn history(&self, fans: &[&Buyer], reservations: &[i64], payments: &[i64]) -> Value {
        let mut seen = serde_json::Map::new();
        for (i, fan) in fans.iter().enumerate() {
            seen.insert(
                format!("fan {i} reservations"),
                self.get(&self.concert, "/api/reservations", &fan.session)
                    .await,
            );
            seen.insert(
                format!("fan {i} payments"),
                self.get(&self.payment, "/api/payments", &fan.session).await,
            );
            // Every one asked by every fan: their own answer 200, the others' 404.
            let asked = reservations
                .iter()
                .map(|id| (&self.concert, "reservation", "reservations", id))
                .chain(
                    payments
                        .iter()
                        .map(|id| (&self.payment, "payment", "payments", id)),
                );
            for (app, what, path, id) in asked {
                let (status, body) = self
                    .send(
                        self.http
                            .get(app.url(&format!("/api/{path}/{id}")))
                            .bearer_auth(&fan.session),
                    )
                    .await;
                seen.insert(format!("fan {i} {what} {id}"), json!([status, body]));
            }
        }
        for id in reservations {
            let (status, body) = self
                .send(
                    self.http
                        .get(self.concert.url(&format!("/internal/reservations/{id}")))
                        .header("x-internal-token", INTERNAL_TEST_TOKEN),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            seen.insert(format!("internal reservation {id}"), body);
        }
        Value::Object(seen)
    }

    /// The organiser's and the public's views of `concert`: the sale (without its
    /// last-minute rates, which move with the clock), the dates, and `schedule`'s seat map.
    async fn views(&self, concert: i64, schedule: i64, fan: &Buyer) -> Value {
        let mut sale = self
            .get(
                &self.concert,
                &format!("/api/admin/concerts/{concert}/sale"),
                &self.admin,
            )
            .await;
        let sale_map = sale.as_object_mut().unwrap();
        sale_map.remove("holds_per_minute");
        sale_map.remove("sold_per_minute");
        let (status, seats) = self
            .send(
                self.http
                    .get(
                        self.concert
                            .url(&format!("/api/schedules/{schedule}/seats")),
                    )
                    .bearer_auth(&fan.session)
                    .header("x-queue-token", &fan.pass),
            )
            .await;
        assert_eq!(status, 200, "{seats}");
        json!({
            "sale": sale,
            "schedules": self
                .get(&self.concert, &format!("/api/concerts/{concert}/schedules"), &self.admin)
                .await,
            "seat map": seats,
        })
    }

    /// The reservation ids of `schedule`, hot or archived.
    async fn reservations_of(&self, schedule: i64) -> Vec<i64> {
        let list = rows(
            &self.concert_db,
            &format!(
                "SELECT id FROM reservations WHERE schedule_id = {schedule} \
                 UNION ALL SELECT id FROM archive.reservations WHERE schedule_id = {schedule} \
                 ORDER BY id"
            ),
        )
        .await;
        list.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    }

    async fn archived_at(&self, schedule: i64) -> Option<DateTime<Utc>> {
        self.concert_db
            .query_one_raw(Statement::from_string(
                self.concert_db.get_database_backend(),
                format!("SELECT archived_at FROM schedules WHERE id = {schedule}"),
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "archived_at")
            .unwrap()
    }

    /// The watchdog's four figures (batch's `invariants` job reads the same functions):
    /// money discrepancy, wallets off their ledger, broken seats (shows from a day before
    /// `at` on), payments unsettled for more than two minutes at `at`.
    async fn invariants(&self, at: DateTime<Utc>) -> [i64; 4] {
        let money = payment_api::store::invariants::money_totals(&self.payment_db)
            .await
            .unwrap();
        let wallets =
            payment_api::store::invariants::wallets_off_their_ledger(&self.payment_db, 100_000)
                .await
                .unwrap();
        let seats = concert_api::store::invariants::seat_violations(
            &self.concert_db,
            at - DAY,
            concert_api::store::invariants::SeatScope::Every,
        )
        .await
        .unwrap()
        .violations;
        let [unsettled] = payment_api::store::reconciliation::unsettled_before(
            &self.payment_db,
            [at - TimeDelta::minutes(2)],
        )
        .await
        .unwrap();
        [money.discrepancy(), wallets, seats.total(), unsettled]
    }

    /// Every ledger row.
    async fn ledger(&self) -> Value {
        rows(
            &self.payment_db,
            "SELECT id, user_id, kind, amount, balance_after, ref, created_at FROM ledger ORDER BY id",
        )
        .await
    }
}

#[tokio::test]
async fn a_finished_show_moves_to_the_archive_and_every_answer_stays_the_same() {
    let s = Stage::new().await;
    let t0 = Utc::now();
    let concert = s.new_concert(4).await;
    // By the archival instant below (t0 + 40 days, archive age 30 days): over by 39 days;
    // over by 20 days; still to come; and two over by 38 days that are not ready.
    let finished = s.new_schedule(concert, DAY, 10).await;
    let recent = s.new_schedule(concert, DAY * 20, 10).await;
    let coming = s.new_schedule(concert, DAY * 60, 10).await;
    let held = s.new_schedule(concert, DAY * 2, 10).await;
    let settling = s.new_schedule(concert, DAY * 2, 10).await;
    let (ann, bob, cat, dan) = (
        s.fan(concert).await,
        s.fan(concert).await,
        s.fan(concert).await,
        s.fan(concert).await,
    );

    // The finished show: Ann buys two seats; Bob cancels a hold, then buys that seat again
    // (two reservation_seats rows for seat 3, one inactive); Cat's hold expires unpaid.
    let ann_finished = s.hold(&ann, finished, &[1, 2]).await;
    let ann_paid = s.pay(&ann, ann_finished).await;
    let bob_cancelled = s.hold(&bob, finished, &[3]).await;
    s.cancel(&bob, bob_cancelled).await;
    let bob_finished = s.hold(&bob, finished, &[3]).await;
    let bob_paid = s.pay(&bob, bob_finished).await;
    let cat_expired = s.hold(&cat, finished, &[5]).await;
    let inventory = concert_api::Inventory::new(s.redis.clone());
    let swept = concert_api::expire_holds(
        &s.concert_db,
        &inventory,
        Utc::now() + TimeDelta::hours(1),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(swept.reservations_expired, 1);
    // Ann also holds a seat to come; Bob one of the show just played.
    let ann_coming = s.hold(&ann, coming, &[1]).await;
    let ann_coming_paid = s.pay(&ann, ann_coming).await;
    let bob_recent = s.hold(&bob, recent, &[1]).await;
    let bob_recent_paid = s.pay(&bob, bob_recent).await;
    // Not ready: Cat's hold on one show is still HELD (the sweep has not seen it end); Dan's
    // payment for the other is confirmed, but payment-api has not seen the confirmation yet.
    let cat_held = s.hold(&cat, held, &[1]).await;
    let dan_settling = s.hold(&dan, settling, &[1]).await;
    let dan_paid = s.pay(&dan, dan_settling).await;
    s.payment_db
        .execute_unprepared(&format!(
            "UPDATE payments SET confirmed_at = NULL WHERE id = {dan_paid}"
        ))
        .await
        .unwrap();

    let reservations = [
        ann_finished,
        bob_cancelled,
        bob_finished,
        cat_expired,
        ann_coming,
        bob_recent,
        cat_held,
        dan_settling,
    ];
    let payments = [
        ann_paid,
        bob_paid,
        ann_coming_paid,
        bob_recent_paid,
        dan_paid,
    ];
    let fans = [&ann, &bob, &cat, &dan];
    let finished_reservations = s.reservations_of(finished).await;
    assert_eq!(
        finished_reservations,
        [ann_finished, bob_cancelled, bob_finished, cat_expired]
    );
    let before_history = s.history(&fans, &reservations, &payments).await;
    let before_views = s.views(concert, finished, &ann).await;
    let before_finished = rows_of(&s, "public", finished, &finished_reservations).await;
    let mut before_others = Vec::new();
    for schedule in [recent, coming, held, settling] {
        let r = s.reservations_of(schedule).await;
        before_others.push(rows_of(&s, "public", schedule, &r).await);
    }
    let before_ledger = s.ledger().await;
    let at = (t0 + DAY * 40).trunc_subsecs(0);
    assert_eq!(s.invariants(Utc::now()).await, [0, 0, 0, 0]);
    assert_eq!(
        s.invariants(at).await,
        [0, 0, 0, 1],
        "seen from the archival instant, Dan's payment is long unsettled"
    );

    let pass = archive::run_pass(&s.concert_db, &s.payment_db, at, AFTER, Budget::JOB).await;
    assert_eq!(pass.failed, None);
    assert_eq!(pass.archived, 1, "{pass:?}");
    assert_eq!(
        pass.rows,
        Rows {
            seats: 10,
            reservation_seats: 5,
            reservations: 4,
            payments: 2
        }
    );
    assert_eq!(
        (pass.waiting_for_hold, pass.waiting_for_payment),
        (1, 1),
        "the held show and the settling one wait"
    );

    // The hot tables hold nothing of the finished show; the archive holds exactly its rows.
    assert_eq!(
        rows_of(&s, "public", finished, &finished_reservations).await,
        json!([[], [], [], []])
    );
    assert_eq!(
        rows_of(&s, "archive", finished, &finished_reservations).await,
        before_finished
    );
    assert_eq!(
        count(
            &s.concert_db,
            "SELECT (SELECT count(*) FROM archive.seats) + (SELECT count(*) FROM archive.reservations) \
             + (SELECT count(*) FROM archive.reservation_seats) AS n"
        )
        .await,
        10 + 4 + 5,
        "and nothing else"
    );
    assert_eq!(
        count(&s.payment_db, "SELECT count(*) AS n FROM archive.payments").await,
        2
    );
    assert_eq!(s.archived_at(finished).await, Some(at));
    assert_eq!(
        count(
            &s.concert_db,
            &format!(
                "SELECT count(*) AS n FROM archive.reservations WHERE archived_at = '{}'",
                at.to_rfc3339()
            )
        )
        .await,
        4
    );
    // The rest is untouched.
    for (i, schedule) in [recent, coming, held, settling].into_iter().enumerate() {
        let r = s.reservations_of(schedule).await;
        assert_eq!(rows_of(&s, "public", schedule, &r).await, before_others[i]);
        assert_eq!(s.archived_at(schedule).await, None);
    }
    // The catalogue stays.
    assert_eq!(
        count(
            &s.concert_db,
            &format!("SELECT count(*) AS n FROM schedules WHERE concert_id = {concert}")
        )
        .await,
        5
    );

    // Every answer is the same, byte for byte as JSON: the history (hot and archived rows
    // merged, newest first), the sale (seat counts recounted from the database, archive
    // included), the dates and the archived date's seat map.
    assert_eq!(
        s.history(&fans, &reservations, &payments).await,
        before_history
    );
    assert!(
        concert_api::resync_inventory(&s.concert_db, &s.redis, concert)
            .await
            .unwrap()
    );
    assert_eq!(s.views(concert, finished, &ann).await, before_views);
    assert_eq!(
        s.ledger().await,
        before_ledger,
        "the ledger keeps every row"
    );
    assert_eq!(s.invariants(Utc::now()).await, [0, 0, 0, 0]);
    assert_eq!(s.invariants(at).await, [0, 0, 0, 1]);

    // Running again archives nothing more.
    let again = archive::run_pass(&s.concert_db, &s.payment_db, at, AFTER, Budget::JOB).await;
    assert_eq!(
        (again.failed, again.archived, again.rows),
        (None, 0, Rows::default())
    );
    assert_eq!(
        rows_of(&s, "archive", finished, &finished_reservations).await,
        before_finished
    );

    // A payment event for an archived reservation (redelivered after its inbox entry was
    // cleaned up, say) is judged against the archive: already confirmed by it, nothing
    // changes and nothing is rejected.
    let late = common::kafka::Envelope::new(
        common::events::PAYMENT_COMPLETED,
        common::events::PaymentCompleted {
            payment_id: ann_paid,
            reservation_id: ann_finished,
            user_id: ann.user_id,
            amount: 2000,
            paid_at: t0,
        },
        Utc::now(),
    );
    let (status, verdict) = s
        .send(
            s.http
                .post(s.concert.url("/internal/settlements"))
                .header("x-internal-token", INTERNAL_TEST_TOKEN)
                .json(&late),
        )
        .await;
    assert_eq!((status, verdict), (200, json!({"verdict": "CONFIRMED"})));
    assert_eq!(
        rows_of(&s, "archive", finished, &finished_reservations).await,
        before_finished
    );
    assert_eq!(
        count(
            &s.concert_db,
            "SELECT count(*) AS n FROM outbox WHERE topic = 'reservation.rejected'"
        )
        .await,
        0
    );

    // The ledger's months around the archival instant exist, and nothing is in DEFAULT.
    let ledger = pass.ledger.expect("ledger upkeep ran");
    assert_eq!(ledger.default_rows, 0);
    for months_on in 0..=2 {
        let name = partition_name(first_day(at) + Months::new(months_on));
        assert_eq!(
            count(
                &s.payment_db,
                &format!(
                    "SELECT count(*) AS n FROM pg_inherits WHERE inhrelid = to_regclass('{name}')"
                )
            )
            .await,
            1,
            "{name}"
        );
    }

    // Ann's seats of the archived show still count toward the concert's limit of 4: she owns
    // 3, so two more are refused and one is not.
    let (status, body) = s.try_hold(&ann, coming, &[2, 3]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("PURCHASE_LIMIT")),
        "{body}"
    );
    assert_eq!(body["remaining"], 1, "{body}");
    s.hold(&ann, coming, &[2]).await;

    // Once ready, the waiting shows go too: Cat's hold is swept, Dan's confirmation seen.
    concert_api::expire_holds(
        &s.concert_db,
        &inventory,
        Utc::now() + TimeDelta::hours(1),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    s.payment_db
        .execute_unprepared(&format!(
            "UPDATE payments SET confirmed_at = now() WHERE id = {dan_paid}"
        ))
        .await
        .unwrap();
    let last = archive::run_pass(&s.concert_db, &s.payment_db, at, AFTER, Budget::JOB).await;
    assert_eq!((last.failed.clone(), last.archived), (None, 2), "{last:?}");
    assert_eq!((last.waiting_for_hold, last.waiting_for_payment), (0, 0));
    assert!(s.archived_at(held).await.is_some() && s.archived_at(settling).await.is_some());
    assert_eq!(s.archived_at(recent).await, None);
    assert_eq!(s.invariants(Utc::now()).await, [0, 0, 0, 0]);
    assert_eq!(s.invariants(at).await, [0, 0, 0, 0]);
}

#[tokio::test]
async fn a_pass_interrupted_after_the_payment_step_is_finished_by_the_next() {
    let s = Stage::new().await;
    let concert = s.new_concert(4).await;
    let show = s.new_schedule(concert, DAY, 5).await;
    let (ann, bob) = (s.fan(concert).await, s.fan(concert).await);
    let ann_show = s.hold(&ann, show, &[1, 2]).await;
    let ann_paid = s.pay(&ann, ann_show).await;
    let at = (Utc::now() + DAY * 40).trunc_subsecs(0);
    let before = s.history(&[&ann], &[ann_show], &[ann_paid]).await;

    // Steps 1 and 2 only, as a pass that died before the concert step would leave them.
    let read = concert_api::schedule_reservations(&s.concert_db, &[show])
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!((read[0].ids.clone(), read[0].held), (vec![ann_show], 0));
    let shows = [read[0].ids.clone()];
    assert_eq!(
        payment_api::archive_payments(&s.payment_db, &shows, at)
            .await
            .unwrap(),
        payment_api::PaymentArchival {
            moved: 1,
            unsettled: vec![0]
        }
    );
    assert_eq!(
        payment_api::archive_payments(&s.payment_db, &shows, at)
            .await
            .unwrap(),
        payment_api::PaymentArchival {
            moved: 0,
            unsettled: vec![0]
        },
        "asking again moves nothing more"
    );
    // In between: the payment is archived, the show is not — and nothing notices.
    assert_eq!(
        count(
            &s.payment_db,
            &format!("SELECT count(*) AS n FROM payments WHERE id = {ann_paid}")
        )
        .await,
        0
    );
    assert_eq!(s.archived_at(show).await, None);
    assert_eq!(
        count(
            &s.concert_db,
            &format!("SELECT count(*) AS n FROM reservations WHERE id = {ann_show}")
        )
        .await,
        1
    );
    assert_eq!(s.history(&[&ann], &[ann_show], &[ann_paid]).await, before);
    assert_eq!(s.invariants(Utc::now()).await, [0, 0, 0, 0]);
    assert_eq!(s.invariants(at).await, [0, 0, 0, 0]);

    // A reservation added since step 1 (Bob's, cancelled: final) sends the concert step back:
    // its payments were not looked at.
    let bob_cancelled = s.hold(&bob, show, &[3]).await;
    s.cancel(&bob, bob_cancelled).await;
    assert_eq!(
        concert_api::archive_schedules(&s.concert_db, &read, at)
            .await
            .unwrap()
            .schedules,
        [(show, concert_api::ScheduleArchival::Changed)]
    );
    assert_eq!(s.archived_at(show).await, None);

    // The next pass finishes it.
    let pass = archive::run_pass(&s.concert_db, &s.payment_db, at, AFTER, Budget::JOB).await;
    assert_eq!((pass.failed.clone(), pass.archived), (None, 1), "{pass:?}");
    assert_eq!(
        pass.rows,
        Rows {
            seats: 5,
            reservation_seats: 3,
            reservations: 2,
            payments: 0
        },
        "the payment had moved already"
    );
    assert_eq!(s.archived_at(show).await, Some(at));
    assert_eq!(
        count(
            &s.concert_db,
            &format!("SELECT count(*) AS n FROM seats WHERE schedule_id = {show}")
        )
        .await,
        0
    );
    assert_eq!(
        concert_api::archive_schedules(&s.concert_db, &read, at)
            .await
            .unwrap(),
        concert_api::Archival {
            schedules: vec![(show, concert_api::ScheduleArchival::AlreadyArchived)],
            moved: Default::default()
        }
    );
    assert_eq!(s.history(&[&ann], &[ann_show], &[ann_paid]).await, before);
    let again = archive::run_pass(&s.concert_db, &s.payment_db, at, AFTER, Budget::JOB).await;
    assert_eq!((again.archived, again.rows), (0, Rows::default()));
    assert_eq!(s.invariants(at).await, [0, 0, 0, 0]);
}

/// The first day of `at`'s month (UTC).
fn first_day(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive().with_day(1).unwrap()
}

/// A new payment database, migrated.
async fn payment_db() -> (TestDatabase, DatabaseConnection) {
    let test_db = TestDatabase::create().await;
    let db = test_db.connect().await;
    payment_api::store::migration::Migrator::up(&db, None)
        .await
        .unwrap();
    (test_db, db)
}

/// The payment database migrated up to (not including) the ledger's partitioning.
async fn payment_db_before_partitioning() -> (TestDatabase, DatabaseConnection) {
    let db = TestDatabase::create().await;
    let conn = db.connect().await;
    let partitioning = payment_api::store::migration::Migrator::migrations()
        .iter()
        .position(|m| m.name() == "m20261203_000002_ledger_by_month")
        .unwrap();
    payment_api::store::migration::Migrator::up(&conn, Some(partitioning as u32))
        .await
        .unwrap();
    (db, conn)
}

#[tokio::test]
async fn the_ledger_keeps_every_row_in_monthly_partitions() {
    use payment_api::store::wallet::{LedgerKind, credit, debit};

    // Rows written before the migration, in three months, keep their ids in their months.
    let (_db, db) = payment_db_before_partitioning().await;
    let now = Utc::now();
    let earlier = now - TimeDelta::days(70);
    for (user, at) in [(1, earlier), (2, now - TimeDelta::days(35)), (1, now)] {
        let txn = db.begin().await.unwrap();
        credit(&txn, user, 1000, i64::MAX, LedgerKind::Charge, "charge", at)
            .await
            .unwrap()
            .unwrap();
        txn.commit().await.unwrap();
    }
    let old_rows = rows(
        &db,
        "SELECT id, user_id, kind, amount, balance_after, ref, created_at FROM ledger ORDER BY id",
    )
    .await;
    payment_api::store::migration::Migrator::up(&db, None)
        .await
        .unwrap();
    assert_eq!(
        rows(
            &db,
            "SELECT id, user_id, kind, amount, balance_after, ref, created_at FROM ledger ORDER BY id"
        )
        .await,
        old_rows
    );
    let month_of = |at: DateTime<Utc>| partition_name(first_day(at));
    assert_eq!(
        rows(
            &db,
            "SELECT tableoid::regclass::text AS part FROM ledger ORDER BY id"
        )
        .await,
        json!([
            {"part": month_of(earlier)},
            {"part": month_of(now - TimeDelta::days(35))},
            {"part": month_of(now)}
        ]),
        "each row in its month's partition"
    );

    // New rows continue the ids; a row whose month has no partition yet lands in DEFAULT
    // (the insert never fails), and the upkeep gives that month its partition and the row.
    let far = now + TimeDelta::days(150);
    let txn = db.begin().await.unwrap();
    credit(&txn, 1, 500, i64::MAX, LedgerKind::Charge, "charge", now)
        .await
        .unwrap()
        .unwrap();
    debit(&txn, 1, 300, "payment:1", far)
        .await
        .unwrap()
        .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) AS n FROM ledger_default").await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT (max(id) = 5 AND count(*) = 5)::int::bigint AS n FROM ledger"
        )
        .await,
        1,
        "ids go on from the sequence"
    );
    let before = rows(
        &db,
        "SELECT id, user_id, kind, amount, balance_after, ref, created_at FROM ledger ORDER BY id",
    )
    .await;
    // A long read of the DEFAULT partition (the watchdog's, when it holds millions of rows)
    // keeps the attach waiting: the month waits for the next pass, and that is no failure.
    let reader = db.begin().await.unwrap();
    reader
        .execute_unprepared("SELECT count(*) FROM ledger_default")
        .await
        .unwrap();
    let blocked = payment_api::keep_ledger_months(&db, now)
        .await
        .unwrap()
        .unwrap();
    assert!(blocked.waiting.contains(&month_of(far)), "{blocked:?}");
    assert!(
        blocked.created.is_empty(),
        "an attach locks DEFAULT: {blocked:?}"
    );
    assert_eq!(blocked.default_rows, 1);
    reader.rollback().await.unwrap();
    let kept = payment_api::keep_ledger_months(&db, now)
        .await
        .unwrap()
        .unwrap();
    assert!(kept.waiting.is_empty(), "{kept:?}");
    assert_eq!(kept.rows_moved, 1);
    assert_eq!(kept.default_rows, 0);
    assert!(kept.created.contains(&month_of(far)), "{kept:?}");
    assert!(
        kept.created
            .contains(&partition_name(first_day(now) + Months::new(2))),
        "two months ahead: {kept:?}"
    );
    assert_eq!(
        rows(
            &db,
            "SELECT id, user_id, kind, amount, balance_after, ref, created_at FROM ledger ORDER BY id"
        )
        .await,
        before,
        "every row is still there"
    );
    assert_eq!(
        rows(
            &db,
            "SELECT tableoid::regclass::text AS part FROM ledger WHERE ref = 'payment:1'"
        )
        .await,
        json!([{"part": month_of(far)}])
    );
    let again = payment_api::keep_ledger_months(&db, now)
        .await
        .unwrap()
        .unwrap();
    assert!(again.created.is_empty(), "idempotent: {again:?}");

    // The wallet invariant holds, through the checks batch's watchdog runs.
    let money = payment_api::store::invariants::money_totals(&db)
        .await
        .unwrap();
    assert_eq!(money.discrepancy(), 0);
    assert_eq!(
        (money.charged, money.paid, money.balances),
        (3500, 300, 3200)
    );
    assert_eq!(
        payment_api::store::invariants::wallets_off_their_ledger(&db, 1000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        payment_api::store::wallet::entries(&db, 1, i64::MAX, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.id, e.balance_after))
            .collect::<Vec<_>>(),
        [(5, 2200), (4, 2500), (3, 2000), (1, 1000)],
        "a user's ledger page, newest first, across partitions"
    );
}

/// A month over for a day is closed by the upkeep: its totals, and each wallet's, are kept
/// (the watchdog reads them beside the open months only, and finds what it found before),
/// and its rows can no longer be added to, changed or deleted. A tampered closed total is
/// found by the watchdog's checks.
#[tokio::test]
async fn a_month_over_is_closed_and_the_watchdog_counts_it_once() {
    use payment_api::store::invariants::{money_totals, wallets_off_their_ledger};
    use payment_api::store::wallet::{LedgerKind, credit, debit};

    let (_test_db, db) = payment_db().await;
    let now = Utc::now();
    let write = |user: i64, amount: i64, at: DateTime<Utc>| {
        let db = db.clone();
        async move {
            let txn = db.begin().await?;
            if amount > 0 {
                credit(
                    &txn,
                    user,
                    amount,
                    i64::MAX,
                    LedgerKind::Charge,
                    "charge",
                    at,
                )
                .await?;
            } else {
                debit(&txn, user, -amount, "payment:1", at).await?;
            }
            txn.commit().await
        }
    };
    // Rows in two past months (one with no partition yet: DEFAULT) and in this one.
    for (user, amount, at) in [
        (1, 1000, now - TimeDelta::days(70)),
        (2, 500, now - TimeDelta::days(40)),
        (1, -300, now - TimeDelta::days(40)),
        (3, 200, now),
    ] {
        write(user, amount, at).await.unwrap();
    }
    let before = money_totals(&db).await.unwrap();
    assert_eq!(
        (before.charged, before.paid, before.balances),
        (1700, 300, 1400)
    );

    let kept = payment_api::keep_ledger_months(&db, now)
        .await
        .unwrap()
        .unwrap();
    let closed = kept.closed.expect("the past months close");
    let boundary = payment_api::domain::archive::close_months_before(now);
    assert_eq!(
        (closed.before, closed.rows, closed.wallets),
        (boundary, 3, 2)
    );
    assert!(
        closed
            .partitions
            .contains(&partition_name(first_day(now - TimeDelta::days(70)))),
        "{closed:?}"
    );
    assert_eq!(
        rows(
            &db,
            "SELECT user_id, total, balance_after FROM ledger_closed_wallets ORDER BY user_id"
        )
        .await,
        json!([
            {"user_id": 1, "total": 700, "balance_after": 700},
            {"user_id": 2, "total": 500, "balance_after": 500}
        ])
    );
    assert_eq!(money_totals(&db).await.unwrap(), before, "counted once");
    assert_eq!(wallets_off_their_ledger(&db, 1000).await.unwrap(), 0);
    let again = payment_api::keep_ledger_months(&db, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.closed, None, "closed once");

    // A closed month takes no new row, in its partition or (a month without one) in
    // DEFAULT, and its rows do not change.
    for at in [now - TimeDelta::days(40), now - TimeDelta::days(400)] {
        let refused = write(2, 100, at).await.unwrap_err().to_string();
        assert!(refused.contains("closed month"), "{at}: {refused}");
    }
    for change in [
        "UPDATE ledger SET amount = amount + 1 WHERE user_id = 2",
        "DELETE FROM ledger WHERE user_id = 2",
    ] {
        let refused = db.execute_unprepared(change).await.unwrap_err().to_string();
        assert!(refused.contains("closed month"), "{change}: {refused}");
    }

    // The open months go on; a month later this one closes too, and nothing is counted twice.
    write(1, -200, now).await.unwrap();
    write(3, 50, now + TimeDelta::days(40)).await.unwrap();
    let later = now + TimeDelta::days(40);
    let closed = payment_api::keep_ledger_months(&db, later)
        .await
        .unwrap()
        .unwrap()
        .closed
        .expect("this month closes");
    assert_eq!((closed.rows, closed.wallets), (2, 2));
    let totals = money_totals(&db).await.unwrap();
    assert_eq!(
        (
            totals.charged,
            totals.paid,
            totals.balances,
            totals.discrepancy()
        ),
        (1750, 500, 1250, 0)
    );
    assert_eq!(wallets_off_their_ledger(&db, 1000).await.unwrap(), 0);

    // The watchdog trusts the closed totals: a closed total off by one is found.
    db.execute_unprepared("UPDATE ledger_closed_wallets SET total = total + 1 WHERE user_id = 2")
        .await
        .unwrap();
    assert_eq!(wallets_off_their_ledger(&db, 1000).await.unwrap(), 1);
    db.execute_unprepared("UPDATE ledger_closed SET paid = paid - 1")
        .await
        .unwrap();
    assert_eq!(money_totals(&db).await.unwrap().discrepancy(), 1);
}

/// Archivers at once (the leader's job beside `batch archive`) never trip over each other
/// creating the ledger's months: each month is created once, by one of them, and none fails.
#[tokio::test]
async fn archivers_at_once_create_each_ledger_month_once() {
    let (_test_db, db) = payment_db().await;
    let later = Utc::now() + TimeDelta::days(3 * 365);
    let mut upkeeps = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let db = db.clone();
        upkeeps.spawn(async move { payment_api::keep_ledger_months(&db, later).await });
    }
    let mut created: Vec<String> = Vec::new();
    for upkeep in upkeeps.join_all().await {
        // None: another was keeping them at the time.
        if let Some(kept) = upkeep.expect("no archiver fails") {
            created.extend(kept.created);
        }
    }
    // If every one found another at it, a later one does it: every month wanted, once.
    let again = payment_api::keep_ledger_months(&db, later)
        .await
        .unwrap()
        .unwrap();
    created.extend(again.created);
    created.sort();
    let wanted: Vec<String> = payment_api::domain::archive::months_wanted(later, &[])
        .into_iter()
        .map(partition_name)
        .collect();
    assert_eq!(created, wanted);
}

#[tokio::test]
async fn the_archive_job_runs_on_the_leader_and_exports_what_it_moved() {
    let world = World::new().await;
    let concert_db = world.concert_db.connect().await;
    let payment_db = world.payment_db.connect().await;
    // Two shows that started three days ago, one seat sold in each; the second's payment is
    // still settling.
    concert_db
        .execute_unprepared(
            "INSERT INTO concerts (id, title, performer) VALUES (1, 'Gone', 'Band'); \
             INSERT INTO schedules (id, concert_id, starts_at, booking_opens_at, seat_count, price) VALUES \
               (1, 1, now() - interval '3 days', now() - interval '9 days', 3, 1000), \
               (2, 1, now() - interval '3 days', now() - interval '9 days', 3, 1000); \
             INSERT INTO seats (schedule_id, seat_no, price) \
               SELECT s, n, 1000 FROM generate_series(1, 2) s, generate_series(1, 3) n; \
             INSERT INTO reservations (id, user_id, schedule_id, concert_id, seat_nos, amount, status, held_until, payment_id) VALUES \
               (10, 5, 1, 1, '{1}', 1000, 'CONFIRMED', now() - interval '4 days', 100), \
               (20, 6, 2, 1, '{1}', 1000, 'CONFIRMED', now() - interval '4 days', 200); \
             UPDATE seats SET status = 'SOLD', reservation_id = schedule_id * 10 WHERE seat_no = 1; \
             INSERT INTO reservation_seats (reservation_id, seat_id) \
               SELECT reservation_id, id FROM seats WHERE seat_no = 1",
        )
        .await
        .unwrap();
    payment_db
        .execute_unprepared(
            "INSERT INTO payments (id, user_id, reservation_id, amount, status, created_at, confirmed_at) VALUES \
               (100, 5, 10, 1000, 'COMPLETED', now() - interval '4 days', now() - interval '4 days'), \
               (200, 6, 20, 1000, 'COMPLETED', now() - interval '4 days', NULL)",
        )
        .await
        .unwrap();
    let env = world
        .env()
        .with("CONCERT_API_URL", StubCatalogue::unreachable_url())
        .with("CONCERT_API_TIMEOUT_MS", "200")
        .with("ARCHIVE_AFTER_DAYS", "1")
        .with("BATCH_ARCHIVE_INTERVAL_MS", "100")
        .with("BATCH_LEASE_MS", "600");
    let batch = TestApp::start(
        batch::Application::build(batch::Config::from_env(&env).unwrap())
            .await
            .unwrap(),
    );
    eventually("the archive job's figures", Duration::from_secs(30), || {
        let batch = &batch;
        async move {
            let page = metrics(batch).await;
            let f = |series: &str| figure(&page, series).map(|v| v as i64);
            ([
                f("archive_schedules_total"),
                f(r#"archive_rows_total{table="seats""#),
                f(r#"archive_rows_total{table="reservation_seats""#),
                f(r#"archive_rows_total{table="reservations""#),
                f(r#"archive_rows_total{table="payments""#),
                f(r#"archive_schedules_waiting{reason="unsettled""#),
                f(r#"archive_schedules_waiting{reason="held""#),
                f("ledger_default_partition_rows"),
            ] == [
                Some(1),
                Some(3),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(0),
                Some(0),
            ] && f(r#"batch_job_runs_total{job="archive",outcome="ok""#) >= Some(2))
            .then_some(())
        }
    })
    .await;
    assert_eq!(
        count(
            &concert_db,
            "SELECT count(*) AS n FROM schedules WHERE archived_at IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &payment_db,
            "SELECT count(*) AS n FROM payments WHERE id = 200"
        )
        .await,
        1,
        "the settling one waits"
    );
    let page = metrics(&batch).await;
    assert_eq!(
        figure(
            &page,
            r#"batch_job_runs_total{job="archive",outcome="failed""#
        ),
        None
    );
}

/// A pass archives at most its share (`SCHEDULES_PER_PASS`), oldest first, and the next
/// one the rest; a show nobody booked moves too (its seats alone).
#[tokio::test]
async fn a_pass_archives_at_most_its_share_and_the_next_one_the_rest() {
    let world = World::new().await;
    let concert_db = world.concert_db.connect().await;
    let payment_db = world.payment_db.connect().await;
    let extra = 5;
    let dates = archive::SCHEDULES_PER_PASS as i64 + extra;
    past_dates(&concert_db, dates).await;
    let now = Utc::now();
    let first = archive::run_pass(&concert_db, &payment_db, now, AFTER, Budget::JOB).await;
    assert_eq!(
        (first.failed.clone(), first.archived, first.rows.seats),
        (
            None,
            archive::SCHEDULES_PER_PASS,
            2 * archive::SCHEDULES_PER_PASS
        )
    );
    assert_eq!(
        count(
            &concert_db,
            "SELECT count(*) AS n FROM schedules WHERE archived_at IS NULL \
             AND starts_at < (SELECT min(starts_at) FROM schedules WHERE archived_at IS NOT NULL)"
        )
        .await,
        0,
        "oldest first"
    );
    let second = archive::run_pass(&concert_db, &payment_db, now, AFTER, Budget::JOB).await;
    assert_eq!((second.failed, second.archived), (None, extra as u64));
    assert_eq!(
        count(&concert_db, "SELECT count(*) AS n FROM seats").await,
        0
    );
    assert_eq!(
        count(&concert_db, "SELECT count(*) AS n FROM archive.seats").await,
        2 * dates
    );
}

/// Dates are archived in batches, one transaction per database for all of them; a date whose
/// rows stay locked past the wait (here a seat, by a transaction left open) fails its batch,
/// and the batch is tried again a date at a time: that date waits for the next pass, and no
/// other does.
#[tokio::test]
async fn a_date_that_cannot_be_locked_holds_up_no_other_in_its_batch() {
    let world = World::new().await;
    let concert_db = world.concert_db.connect().await;
    let payment_db = world.payment_db.connect().await;
    let dates = 6;
    past_dates(&concert_db, dates).await;
    let stuck = count(
        &concert_db,
        "SELECT id AS n FROM schedules ORDER BY starts_at OFFSET 2 LIMIT 1",
    )
    .await;
    let blocker = concert_db.begin().await.unwrap();
    blocker
        .execute_unprepared(&format!(
            "SELECT id FROM seats WHERE schedule_id = {stuck} AND seat_no = 2 FOR UPDATE"
        ))
        .await
        .unwrap();

    let now = Utc::now();
    let pass = archive::run_pass(&concert_db, &payment_db, now, AFTER, Budget::JOB).await;
    let failed = pass.failed.clone().unwrap_or_default();
    assert!(failed.contains(&format!("schedule {stuck}")), "{pass:?}");
    assert_eq!(
        (pass.archived, pass.rows.seats),
        (dates as u64 - 1, 2 * (dates as u64 - 1))
    );
    let unarchived = || {
        count(
            &concert_db,
            "SELECT coalesce(max(id), 0) * count(*) AS n FROM schedules WHERE archived_at IS NULL",
        )
    };
    assert_eq!(unarchived().await, stuck, "the locked date alone is left");

    blocker.rollback().await.unwrap();
    let next = archive::run_pass(&concert_db, &payment_db, now, AFTER, Budget::JOB).await;
    assert_eq!((next.failed, next.archived), (None, 1));
    assert_eq!(unarchived().await, 0);
    assert_eq!(
        count(&concert_db, "SELECT count(*) AS n FROM archive.seats").await,
        2 * dates
    );
}

#[test]
fn the_archive_age_is_days_from_one_to_ten_years_thirty_by_default() {
    let env = |v: Option<&str>| {
        let e = Env::from_pairs([("INTERNAL_API_TOKEN", INTERNAL_TEST_TOKEN)]);
        match v {
            Some(v) => e.with("ARCHIVE_AFTER_DAYS", v),
            None => e,
        }
    };
    let after = |v| batch::Config::from_env(&env(v)).map(|c| c.archive.after);
    assert_eq!(after(None).unwrap(), TimeDelta::days(30));
    assert_eq!(after(Some("")).unwrap(), TimeDelta::days(30));
    assert_eq!(after(Some("7")).unwrap(), TimeDelta::days(7));
    assert_eq!(after(Some("3650")).unwrap(), TimeDelta::days(3650));
    for bad in ["0", "3651", "-1", "seven"] {
        let err = after(Some(bad)).unwrap_err();
        assert_eq!(err.var, "ARCHIVE_AFTER_DAYS", "{bad}");
    }
}

/// The ledger's upkeep holds its lock on one connection while it works on another: batch
/// refuses a pool of one, naming the variable, rather than wait for itself.
#[test]
fn batch_refuses_a_database_pool_of_one() {
    let env = |size: &str| {
        Env::from_pairs([("INTERNAL_API_TOKEN", INTERNAL_TEST_TOKEN)])
            .with("DATABASE_POOL_SIZE", size)
    };
    let err = batch::Config::from_env(&env("1")).unwrap_err();
    assert_eq!(
        (err.var.as_str(), err.value.as_str()),
        ("DATABASE_POOL_SIZE", "1")
    );
    assert_eq!(
        batch::Config::from_env(&env("2"))
            .unwrap()
            .payment_db
            .pool_size,
        2
    );
}

/// `dates` dates of one concert, each of two unsold seats, whose shows were 40 days ago and
/// earlier, an hour apart.
async fn past_dates(concert_db: &DatabaseConnection, dates: i64) {
    concert_db
        .execute_unprepared(&format!(
            "INSERT INTO concerts (id, title, performer) VALUES (1, 'Tour', 'Band'); \
             INSERT INTO schedules (concert_id, starts_at, booking_opens_at, seat_count, price) \
               SELECT 1, now() - interval '40 days' - g * interval '1 hour', \
                      now() - interval '50 days', 2, 1000 FROM generate_series(1, {dates}) g; \
             INSERT INTO seats (schedule_id, seat_no, price) \
               SELECT s.id, n, 1000 FROM schedules s, generate_series(1, 2) n"
        ))
        .await
        .unwrap();
}

/// `batch archive` works off a backlog larger than the job's share in passes of its own,
/// one JSON line each, and stops at the first pass with nothing left.
#[tokio::test]
async fn the_archive_command_works_off_the_whole_backlog() {
    let world = World::new().await;
    let concert_db = world.concert_db.connect().await;
    let dates = 3 * archive::SCHEDULES_PER_PASS as i64;
    past_dates(&concert_db, dates).await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_batch"))
        .arg("archive")
        .env_clear()
        .env("RUST_LOG", "info")
        .envs(world.vars(&[]))
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let vacuum = lines.pop().unwrap();
    let archived: Vec<i64> = lines
        .iter()
        .map(|p| p["archived"].as_i64().unwrap())
        .collect();
    assert_eq!(archived, [dates, 0], "{lines:?}");
    assert_eq!(lines[0]["rows"]["seats"], 2 * dates);
    assert_eq!(vacuum["archived_so_far"], dates, "{vacuum}");
    assert_eq!(
        vacuum["vacuumed"].as_array().unwrap().len(),
        8,
        "the six concert tables and the two payment ones: {vacuum}"
    );
    assert_eq!(
        count(
            &concert_db,
            "SELECT count(*) AS n FROM schedules WHERE archived_at IS NULL"
        )
        .await,
        0
    );
}

/// The watchdog's wallet sample is a run of wallets from a random place in the id order,
/// wrapping round: every wallet, the first and the last included, is in some draw, and a
/// draw never checks more than the sample.
#[tokio::test]
async fn the_wallet_sample_reaches_every_wallet_in_some_draw() {
    use payment_api::store::invariants::wallets_off_their_ledger;
    use payment_api::store::wallet::{LedgerKind, credit};

    let (_test_db, db) = payment_db().await;
    for user in 1..=10 {
        let txn = db.begin().await.unwrap();
        credit(
            &txn,
            user,
            100,
            i64::MAX,
            LedgerKind::Charge,
            "charge",
            Utc::now(),
        )
        .await
        .unwrap();
        txn.commit().await.unwrap();
    }
    assert_eq!(wallets_off_their_ledger(&db, 3).await.unwrap(), 0);
    for user in [1, 10] {
        db.execute_unprepared(&format!(
            "UPDATE wallets SET balance = balance + 1 WHERE user_id = {user}"
        ))
        .await
        .unwrap();
        // One draw of 3 in 10 misses it with a chance of about 3 in 4: 200 all miss with
        // one of about 10^27.
        let mut found = Vec::new();
        for _ in 0..200 {
            found.push(wallets_off_their_ledger(&db, 3).await.unwrap());
        }
        assert!(found.contains(&1), "wallet {user} is never drawn");
        db.execute_unprepared(&format!(
            "UPDATE wallets SET balance = balance - 1 WHERE user_id = {user}"
        ))
        .await
        .unwrap();
    }
    // Both off at once: a draw of 3 holds both only across the wrap (10, 1, 2).
    db.execute_unprepared("UPDATE wallets SET balance = balance + 1 WHERE user_id IN (1, 10)")
        .await
        .unwrap();
    let mut found = Vec::new();
    for _ in 0..200 {
        found.push(wallets_off_their_ledger(&db, 3).await.unwrap());
    }
    assert!(found.contains(&2), "a draw wraps round: {found:?}");
    for _ in 0..50 {
        assert!(wallets_off_their_ledger(&db, 1).await.unwrap() <= 1);
    }
    assert_eq!(wallets_off_their_ledger(&db, 10).await.unwrap(), 2);
}
