//! With the platform running, batch's jobs do their work: admission at the configured rate
//! and never beyond the cap; unpaid holds swept after hold + grace; a lost payment event
//! found by reconciliation and the seat confirmed; cleanup removes only what is past its keeping
//! time. Time passes by moving batch's manual clock, not by sleeping.

use std::time::Duration;

use chrono::Utc;
use common::auth::{QueueKeys, Role, Session, SessionStore};
use common::clock::Clock;
use common::redis::RedisStore;
use common::testkit::{TestApp, eventually};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use users_api::domain::queue::WaitingRoom;

use crate::helpers::{World, figure, metrics};

async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap()
}

/// The figures of `batch`'s `/metrics` whose name and labels start with `series`, in order.
async fn figures(batch: &TestApp, series: &[&str]) -> Vec<Option<i64>> {
    let page = metrics(batch).await;
    series
        .iter()
        .map(|s| figure(&page, s).map(|v| v as i64))
        .collect()
}

#[tokio::test]
async fn admission_moves_the_line_at_the_configured_rate_and_never_past_the_cap() {
    let world = World::new().await;
    let env = world
        .env()
        .with("QUEUE_MAX_ACTIVE", "5")
        .with("QUEUE_ADMIT_PER_TICK", "2")
        .with("QUEUE_ADMIT_INTERVAL_MS", "300")
        .with("BATCH_LEASE_MS", "600");
    let config = batch::Config::from_env(&env).unwrap();
    let redis = RedisStore::connect(&config.redis).unwrap();
    let room = WaitingRoom::new(
        QueueKeys::new(redis.clone()),
        config.queue.clone(),
        config.clock.clone(),
    );
    for user in 0..12 {
        room.join(user, 7).await.unwrap();
    }
    let active_key = QueueKeys::new(redis.clone()).active(7);
    let batch = TestApp::start(batch::Application::build(config).await.unwrap());

    let mut samples = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let mut conn = redis.conn();
        let active: i64 = redis::cmd("ZCARD")
            .arg(&active_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        samples.push(active);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(
        samples.iter().all(|&a| a <= 5),
        "never past the cap: {samples:?}"
    );
    assert_eq!(*samples.last().unwrap(), 5, "the room fills: {samples:?}");
    let first_nonzero = samples.iter().copied().find(|&a| a > 0).unwrap();
    assert_eq!(
        first_nonzero, 2,
        "a tick admits at most QUEUE_ADMIT_PER_TICK: {samples:?}"
    );
    let steps: Vec<i64> = samples.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        steps.iter().all(|&d| d <= 2),
        "never more than one tick's worth at once: {samples:?}"
    );
    // The line as the admission ticks saw it, per concert.
    eventually("the line's figures", Duration::from_secs(10), || {
        let batch = &batch;
        async move {
            let f = figures(
                batch,
                &[
                    r#"sale_line{concert="7",state="active""#,
                    r#"sale_line{concert="7",state="waiting""#,
                    r#"sale_line_tokens_total{concert="7",event="admitted""#,
                ],
            )
            .await;
            (f == [Some(5), Some(7), Some(5)]).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn unpaid_holds_are_swept_and_a_lost_payment_is_reconciled_to_a_confirmed_seat() {
    let world = World::new().await;
    let rules = |env: common::config::Env| {
        env.with("QUEUE_ADMIT_INTERVAL_MS", "100")
            .with("BATCH_EXPIRE_INTERVAL_MS", "200")
            .with("BATCH_RECONCILE_INTERVAL_MS", "300")
            .with("PAYMENT_RECONCILE_AFTER_SECS", "1")
            .with("BATCH_SALE_FIGURES_INTERVAL_MS", "200")
            .with("BATCH_LEASE_MS", "600")
    };
    let concert = TestApp::start(
        concert_api::Application::build(
            concert_api::Config::from_env(&rules(world.env())).unwrap(),
        )
        .await
        .unwrap(),
    );
    let env = rules(world.env()).with("CONCERT_API_URL", concert.address.clone());
    let _payment = TestApp::start(
        payment_api::Application::build(payment_api::Config::from_env(&env).unwrap())
            .await
            .unwrap(),
    );
    let mut config = batch::Config::from_env(&env).unwrap();
    config.clock = Clock::manual();
    let clock = config.clock.clone();
    let hold_and_grace = config.reservation.hold + config.reservation.grace;
    let redis = RedisStore::connect(&config.redis).unwrap();
    let room = WaitingRoom::new(
        QueueKeys::new(redis.clone()),
        config.queue.clone(),
        clock.clone(),
    );
    let batch = TestApp::start(batch::Application::build(config).await.unwrap());

    let store = SessionStore::new(redis, Duration::from_secs(600));
    let (admin, _) = store
        .create(&Session {
            user_id: 1,
            username: "admin".into(),
            role: Role::Admin,
        })
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let created: Value = c
        .post(concert.url("/api/admin/concerts"))
        .bearer_auth(&admin)
        .json(&json!({"title": "Batch", "performer": "Jobs"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let concert_id = created["id"].as_i64().unwrap();
    let now = Utc::now();
    let schedule: Value = c
        .post(concert.url(&format!("/api/admin/concerts/{concert_id}/schedules")))
        .bearer_auth(&admin)
        .json(&json!({"starts_at": now + chrono::Duration::days(1), "booking_opens_at": now - chrono::Duration::minutes(1), "seat_count": 10, "price": 1000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schedule_id = schedule["id"].as_i64().unwrap();

    // Two fans join; batch admits them.
    let mut fans = Vec::new();
    for user_id in [501, 502] {
        let (session, _) = store
            .create(&Session {
                user_id,
                username: format!("f{user_id}"),
                role: Role::User,
            })
            .await
            .unwrap();
        let (status, _) = room.join(user_id, concert_id).await.unwrap();
        fans.push((user_id, session, status.token));
    }
    let hold = |i: usize, seat: i64| {
        let (c, url, fan) = (c.clone(), concert.url("/api/reservations"), fans[i].clone());
        async move {
            let res = c
                .post(url)
                .bearer_auth(&fan.1)
                .header("x-queue-token", &fan.2)
                .json(&json!({"schedule_id": schedule_id, "seat_nos": [seat]}))
                .send()
                .await
                .ok()?;
            (res.status() == 201).then_some(res.json::<Value>().await.ok()?["id"].as_i64()?)
        }
    };
    let unpaid = eventually(
        "batch to admit the first fan",
        Duration::from_secs(10),
        || hold(0, 1),
    )
    .await;
    let paid = eventually(
        "batch to admit the second fan",
        Duration::from_secs(10),
        || hold(1, 2),
    )
    .await;

    // The second fan's money was taken but payment.completed was lost.
    let payment_db = world.payment_db.connect().await;
    payment_db
        .execute_raw(Statement::from_string(
            payment_db.get_database_backend(),
            format!(
                "INSERT INTO payments (user_id, reservation_id, amount, status, created_at) \
                 VALUES (502, {paid}, 1000, 'COMPLETED', now() - interval '1 minute')"
            ),
        ))
        .await
        .unwrap();

    let concert_db = world.concert_db.connect().await;
    eventually("reconciliation to get the seat confirmed", Duration::from_secs(20), || {
        let db = concert_db.clone();
        async move {
            let sql = format!("SELECT count(*)::bigint AS n FROM reservations WHERE id = {paid} AND status = 'CONFIRMED'");
            (count(&db, &sql).await == 1).then_some(())
        }
    })
    .await;
    assert_eq!(
        count(&concert_db, &format!("SELECT count(*)::bigint AS n FROM reservations WHERE id = {unpaid} AND status = 'HELD'")).await,
        1,
        "the unpaid hold lives until its time is up"
    );
    // The sale as batch exports it: one seat held, one sold, eight left; one reservation of
    // each; the confirmed one's price taken.
    let c = concert_id.to_string();
    eventually("the sale's figures", Duration::from_secs(10), || {
        let (batch, c) = (&batch, &c);
        async move {
            let series = [
                format!(r#"sale_seats{{concert="{c}",status="available""#),
                format!(r#"sale_seats{{concert="{c}",status="held""#),
                format!(r#"sale_seats{{concert="{c}",status="sold""#),
                format!(r#"sale_reservations{{concert="{c}",status="held""#),
                format!(r#"sale_reservations{{concert="{c}",status="confirmed""#),
                format!(r#"sale_revenue{{concert="{c}","#),
            ];
            let series: Vec<&str> = series.iter().map(String::as_str).collect();
            let f = figures(batch, &series).await;
            (f == [Some(8), Some(1), Some(1), Some(1), Some(1), Some(1000)]).then_some(())
        }
    })
    .await;
    clock.advance(hold_and_grace + Duration::from_secs(1));
    eventually("the sweep to expire the unpaid hold after hold + grace", Duration::from_secs(20), || {
        let db = concert_db.clone();
        async move {
            let sql = format!("SELECT count(*)::bigint AS n FROM reservations WHERE id = {unpaid} AND status = 'EXPIRED'");
            (count(&db, &sql).await == 1).then_some(())
        }
    })
    .await;
    assert_eq!(
        count(
            &concert_db,
            "SELECT count(*)::bigint AS n FROM seats WHERE seat_no = 1 AND status = 'AVAILABLE'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &concert_db,
            "SELECT count(*)::bigint AS n FROM seats WHERE seat_no = 2 AND status = 'SOLD'"
        )
        .await,
        1,
        "a paid seat never comes back"
    );
}

#[tokio::test]
async fn cleanup_removes_only_what_is_past_its_keeping_time() {
    let world = World::new().await;
    let dbs = [
        world.users_db.connect().await,
        world.concert_db.connect().await,
        world.payment_db.connect().await,
    ];
    let exec = |db: &sea_orm::DatabaseConnection, sql: String| {
        let db = db.clone();
        async move {
            db.execute_unprepared(&sql).await.unwrap();
        }
    };
    for db in &dbs {
        exec(
            db,
            "INSERT INTO inbox (event_id, consumer, received_at) VALUES \
             (gen_random_uuid(), 'old', now() - interval '8 days'), \
             (gen_random_uuid(), 'recent', now() - interval '6 days')"
                .into(),
        )
        .await;
        exec(
            db,
            "INSERT INTO outbox (event_id, topic, key, payload, created_at, published_at) VALUES \
             (gen_random_uuid(), 't', 'old', '{}', now() - interval '9 days', now() - interval '8 days'), \
             (gen_random_uuid(), 't', 'recent', '{}', now() - interval '2 days', now() - interval '1 day'), \
             (gen_random_uuid(), 't', 'unpublished', '{}', now() - interval '9 days', NULL)"
                .into(),
        )
        .await;
    }
    exec(
        &dbs[2],
        "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at) VALUES \
         (1, 'old', 'h', now() - interval '25 hours'), (1, 'recent', 'h', now() - interval '23 hours')"
            .into(),
    )
    .await;
    // No unpublished row may be sent anywhere: the relay runs in the services, not here.
    let mut config =
        batch::Config::from_env(&world.env().with("BATCH_CLEANUP_INTERVAL_MS", "100")).unwrap();
    config.clock = Clock::manual();
    let clock = config.clock.clone();
    let _batch = TestApp::start(batch::Application::build(config).await.unwrap());

    for db in &dbs {
        eventually(
            "old inbox and outbox rows to go",
            Duration::from_secs(20),
            || async {
                let inbox =
                    count(db, "SELECT count(*) AS n FROM inbox WHERE consumer = 'old'").await;
                let outbox = count(db, "SELECT count(*) AS n FROM outbox WHERE key = 'old'").await;
                (inbox == 0 && outbox == 0).then_some(())
            },
        )
        .await;
        assert_eq!(
            count(
                db,
                "SELECT count(*) AS n FROM inbox WHERE consumer = 'recent'"
            )
            .await,
            1
        );
        assert_eq!(
            count(
                db,
                "SELECT count(*) AS n FROM outbox WHERE key IN ('recent', 'unpublished')"
            )
            .await,
            2,
            "recent and unpublished events stay"
        );
    }
    eventually(
        "the expired idempotency key to go",
        Duration::from_secs(20),
        || async {
            (count(
                &dbs[2],
                "SELECT count(*) AS n FROM idempotency_keys WHERE key = 'old'",
            )
            .await
                == 0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        count(
            &dbs[2],
            "SELECT count(*) AS n FROM idempotency_keys WHERE key = 'recent'"
        )
        .await,
        1
    );

    // Two days later by batch's clock, the 23-hour key and the 6-day inbox row are past their
    // keeping time too; the event published a day ago (now three) and the unpublished one stay.
    clock.advance(Duration::from_secs(2 * 86_400));
    eventually(
        "the rows that aged past their keeping time to go",
        Duration::from_secs(20),
        || async {
            let mut gone = count(&dbs[2], "SELECT count(*) AS n FROM idempotency_keys").await == 0;
            for db in &dbs {
                gone &= count(db, "SELECT count(*) AS n FROM inbox").await == 0;
            }
            gone.then_some(())
        },
    )
    .await;
    for db in &dbs {
        assert_eq!(
            count(
                db,
                "SELECT count(*) AS n FROM outbox WHERE key IN ('recent', 'unpublished')"
            )
            .await,
            2,
            "published three days ago, and never published: both stay"
        );
    }
}

/// Batch's admission job runs the rooms' live settings: a paused room admits nobody while the
/// ticks run, a resumed one fills to its own `max_active` (not the env's) with no restart, and
/// a pre-queue is drawn once when batch's clock passes `sale_opens_at`, the first of the
/// HMAC order admitted.
#[tokio::test]
async fn admission_runs_each_rooms_live_settings_and_draws_its_pre_queue() {
    use users_api::domain::queue::{RoomSettingsPatch, SettableState, lottery};

    let world = World::new().await;
    let env = world
        .env()
        .with("QUEUE_MAX_ACTIVE", "50")
        .with("QUEUE_ADMIT_PER_TICK", "100")
        .with("QUEUE_ADMIT_INTERVAL_MS", "100")
        .with("BATCH_LEASE_MS", "600");
    let mut config = batch::Config::from_env(&env).unwrap();
    config.clock = Clock::manual();
    let clock = config.clock.clone();
    let redis = RedisStore::connect(&config.redis).unwrap();
    let keys = QueueKeys::new(redis.clone());
    let room = WaitingRoom::new(keys.clone(), config.queue.clone(), clock.clone());
    let zcard = |key: String| {
        let redis = redis.clone();
        async move {
            let n: i64 = redis::cmd("ZCARD")
                .arg(key)
                .query_async(&mut redis.conn())
                .await
                .unwrap();
            n
        }
    };
    // Whether a tick has run since `rate` was deleted: a gated tick writes the rate 0.
    let ticked = |concert: i64| {
        let (redis, key) = (redis.clone(), keys.rate(concert));
        async move {
            let rate: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut redis.conn())
                .await
                .unwrap();
            rate.as_deref() == Some("0")
        }
    };

    // Concert 8: paused with 30 fans in line and its own capacity of 4.
    let paused = RoomSettingsPatch {
        state: Some(SettableState::Paused),
        max_active: Some(4),
        ..Default::default()
    };
    room.update_settings(8, &paused).await.unwrap();
    for user in 0..30 {
        room.join(user, 8).await.unwrap();
    }
    // Concert 9: a pre-queue opening in an hour, 40 fans in it.
    let opening = RoomSettingsPatch {
        max_active: Some(6),
        sale_opens_at: Some(Some(clock.now() + chrono::Duration::hours(1))),
        ..Default::default()
    };
    room.update_settings(9, &opening).await.unwrap();
    let mut pre_queued = Vec::new();
    for user in 100..140 {
        let (status, _) = room.join(user, 9).await.unwrap();
        assert!(status.pre_queue);
        pre_queued.push(status.token);
    }

    let batch = TestApp::start(batch::Application::build(config).await.unwrap());
    eventually("a paused tick", Duration::from_secs(10), || async {
        ticked(8).await.then_some(())
    })
    .await;
    for _ in 0..3 {
        // Three more ticks: the rate key is rewritten (deleted here, written again) by each.
        let _: () = redis::cmd("DEL")
            .arg(keys.rate(8))
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        eventually("another paused tick", Duration::from_secs(10), || async {
            ticked(8).await.then_some(())
        })
        .await;
    }
    assert_eq!(
        zcard(keys.active(8)).await,
        0,
        "a paused room admits nobody"
    );
    assert_eq!(zcard(keys.active(9)).await, 0, "nobody before the opening");
    assert_eq!(zcard(keys.waiting(8)).await, 30);
    let line_of_9 = [
        r#"sale_line{concert="9",state="pre_queued""#,
        r#"sale_line{concert="9",state="waiting""#,
    ];
    assert_eq!(
        figures(&batch, &line_of_9).await,
        [Some(40), Some(0)],
        "the pre-queue is counted apart from the line"
    );

    let resume = RoomSettingsPatch {
        state: Some(SettableState::Open),
        ..Default::default()
    };
    room.update_settings(8, &resume).await.unwrap();
    eventually(
        "the room fills to its own cap",
        Duration::from_secs(10),
        || async { (zcard(keys.active(8)).await == 4).then_some(()) },
    )
    .await;
    // The first four in join order.
    let mut conn = redis.conn();
    let active: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.active(8))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut first_four = Vec::new();
    for user in 0..4 {
        let (status, _) = room.join(user, 8).await.unwrap();
        first_four.push(status.token);
    }
    let (mut a, mut b) = (active.clone(), first_four.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "admitted in join order");

    // The sale opens by batch's clock: one draw, its first six admitted.
    clock.advance(Duration::from_secs(3601));
    eventually("the draw", Duration::from_secs(10), || async {
        (zcard(keys.active(9)).await == 6).then_some(())
    })
    .await;
    let view = room.view(9).await.unwrap();
    let seed = lottery::from_hex(view.public.lottery.seed.as_deref().unwrap()).unwrap();
    assert_eq!(
        lottery::commitment(&seed),
        view.public.lottery.commitment.unwrap()
    );
    let order = lottery::order(&seed, pre_queued.iter().map(String::as_str));
    let mut admitted: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.active(9))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut expected: Vec<String> = order[..6].iter().map(|t| t.to_string()).collect();
    admitted.sort();
    expected.sort();
    assert_eq!(admitted, expected, "the first six of the HMAC order");
    assert_eq!((view.active, view.public.waiting), (6, 34));
    eventually(
        "the drawn pre-queue counted as the line",
        Duration::from_secs(10),
        || async { (figures(&batch, &line_of_9).await == [Some(0), Some(34)]).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn the_consumer_groups_backlog_and_the_dead_letters_are_read_from_the_broker() {
    use common::events::{ALL_TOPICS, PAYMENT_COMPLETED};
    use common::kafka::KafkaClient;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::message::OwnedHeaders;

    let world = World::new().await;
    let env = world
        .env()
        .with("BATCH_CONSUMER_GROUPS_INTERVAL_MS", "100")
        .with("BATCH_LEASE_MS", "600");
    let config = batch::Config::from_env(&env).unwrap();
    let kafka = KafkaClient::new(&config.kafka).unwrap();
    kafka.ensure_topics(&ALL_TOPICS).await.unwrap();
    let send = async |topic: &str, n: usize| {
        for i in 0..n {
            kafka
                .send(
                    &kafka.topic(topic),
                    &format!("k{i}"),
                    b"{}",
                    OwnedHeaders::new(),
                )
                .await
                .unwrap();
        }
    };
    // Five payments announced, and two events parked in their dead-letter topic.
    send(PAYMENT_COMPLETED, 5).await;
    send("payment.completed.dlq", 2).await;
    // concert-api's group handled three, and has no member alive now.
    let group = kafka.topic("concert-api");
    let member: BaseConsumer = common::kafka::client_config(&config.kafka)
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut handled = rdkafka::TopicPartitionList::new();
    handled
        .add_partition_offset(
            &kafka.topic(PAYMENT_COMPLETED),
            0,
            rdkafka::Offset::Offset(3),
        )
        .unwrap();
    member.commit(&handled, CommitMode::Sync).unwrap();
    drop(member);

    let batch = TestApp::start(batch::Application::build(config).await.unwrap());
    let series = [
        format!(r#"kafka_group_backlog{{group="{group}",topic="payment.completed""#),
        format!(r#"kafka_group_committed_offsets{{group="{group}",topic="payment.completed""#),
        r#"kafka_dlq_depth{topic="payment.completed.dlq""#.to_owned(),
        r#"kafka_dlq_depth{topic="reservation.rejected.dlq""#.to_owned(),
        format!(
            r#"kafka_group_backlog{{group="{}",topic="reservation.rejected""#,
            kafka.topic("payment-api")
        ),
    ];
    let series: Vec<&str> = series.iter().map(String::as_str).collect();
    eventually(
        "the groups' figures from the broker",
        Duration::from_secs(20),
        || async {
            (figures(&batch, &series).await == [Some(2), Some(3), Some(2), Some(0), Some(0)])
                .then_some(())
        },
    )
    .await;
}

/// The sale figures job counts every reservation of a concert; a concert whose seats have not
/// moved since its last read, with no hold or sale in that read's last minute, is not read
/// again until a minute has passed (`SaleWatch`).
#[tokio::test]
async fn a_quiet_concerts_sale_figures_are_read_again_only_after_its_seats_move_or_a_minute() {
    use batch::jobs::SaleWatch;
    use concert_api::Inventory;
    use concert_api::store::inventory::Change;

    let world = World::new().await;
    let db = world.concert_db.connect().await;
    let config = batch::Config::from_env(&world.env()).unwrap();
    let inventory = Inventory::new(RedisStore::connect(&config.redis).unwrap());
    let clock = Clock::manual();
    let exec = |sql: String| {
        let db = db.clone();
        async move {
            db.execute_unprepared(&sql).await.unwrap();
        }
    };
    exec("INSERT INTO concerts (id, title, performer) VALUES (7, 'Quiet', 'Band')".into()).await;
    exec(
        "INSERT INTO schedules (id, concert_id, starts_at, booking_opens_at, seat_count, price) \
         VALUES (70, 7, now() + interval '1 day', now() - interval '1 day', 10, 1000)"
            .into(),
    )
    .await;
    // A reservation written straight to the table: no seat count moves.
    let reservation = |id: i64, status: &str, age: &str| {
        format!(
            "INSERT INTO reservations (id, user_id, schedule_id, concert_id, seat_nos, amount, \
             status, held_until, created_at, updated_at) VALUES ({id}, {id}, 70, 7, '{{{id}}}', \
             1000, '{status}', now() + interval '5 minutes', now() - interval '{age}', \
             now() - interval '{age}')"
        )
    };
    let watch = SaleWatch::default();
    let read = || async {
        watch
            .figures(&db, &inventory, &clock, 7)
            .await
            .unwrap()
            .expect("the concert exists")
    };
    exec(reservation(1, "CONFIRMED", "10 minutes")).await;
    // No sequence yet (concert-api never counted it): read every time.
    assert_eq!(read().await.confirmed, 1);
    exec(reservation(2, "CONFIRMED", "10 minutes")).await;
    assert_eq!(read().await.confirmed, 2);

    // A seat of it moves: the sequence exists and is kept with the read.
    inventory.apply(Change::sold(7, 70, 1)).await;
    assert_eq!(read().await.confirmed, 2);
    exec(reservation(3, "CONFIRMED", "10 minutes")).await;
    assert_eq!(
        read().await.confirmed,
        2,
        "nothing moved: the last read stands"
    );
    inventory.apply(Change::sold(7, 70, 1)).await;
    assert_eq!(read().await.confirmed, 3, "a seat moved: read again");

    exec(reservation(4, "CONFIRMED", "10 minutes")).await;
    clock.advance(Duration::from_secs(59));
    assert_eq!(read().await.confirmed, 3);
    clock.advance(Duration::from_secs(1));
    assert_eq!(read().await.confirmed, 4, "a minute passed: read again");

    // A concert whose line is gone is forgotten, and read afresh when it has one again.
    exec(reservation(5, "CONFIRMED", "10 minutes")).await;
    assert_eq!(read().await.confirmed, 4);
    watch.keep_only([]).await;
    assert_eq!(read().await.confirmed, 5);

    // A read that saw a hold in the last minute is not kept: that count falls with time.
    exec(reservation(6, "HELD", "1 second")).await;
    inventory.apply(Change::held(7, 70, 1)).await;
    let busy = read().await;
    assert_eq!((busy.held, busy.holds_last_minute), (1, 1));
    exec(reservation(7, "HELD", "1 second")).await;
    assert_eq!(read().await.held, 2);
}
