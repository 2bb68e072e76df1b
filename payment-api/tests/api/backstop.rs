//! The broker-independent backstop (DESIGN §6): with concert-api's consumer cut off from the
//! broker, reconciliation settles a paid hold over HTTP — confirmed, or rejected and refunded
//! — and when the broker path delivers the same events later, they change nothing.
//!
//! "Cut off": concert-api runs on a topic prefix of its own, so it listens where nobody
//! publishes and publishes where nobody listens — a stuck consumer group and a lost topic at
//! once, with its HTTP endpoints working. (A `TcpProxy` in front of Kafka cannot cut it: the
//! broker hands clients its advertised address, and they connect there directly.) "Later":
//! a second concert-api on payment-api's prefix, and a second payment-api on concert-api's,
//! over the same databases.

use std::time::Duration;

use chrono::Utc;
use common::config::Env;
use common::testkit::{StubCatalogue, TestApp, eventually};
use payment_api::domain::settle::UnsettledByAge;
use payment_api::events::completed_event_id;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sea_orm::prelude::Uuid;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::json;

use crate::helpers::{Buyer, Platform, count, spawn_platform_with_concert};

const DETACHED: &str = "detached.";

/// concert-api on a topic prefix nobody else uses.
fn detach(env: Env) -> Env {
    let prefix = env.raw("KAFKA_TOPIC_PREFIX").unwrap_or_default();
    env.with("KAFKA_TOPIC_PREFIX", format!("{prefix}{DETACHED}"))
}

fn client(p: &Platform) -> payment_api::concerts::ConcertClient {
    payment_api::concerts::ConcertClient::new(
        &p.concert.address,
        Duration::from_secs(5),
        &p.payment_config.payment.internal_token,
    )
}

async fn reconcile_at(
    p: &Platform,
    client: &payment_api::concerts::ConcertClient,
    later: chrono::Duration,
) -> payment_api::domain::Reconciliation {
    payment_api::reconcile(
        &p.payment_db,
        client,
        &p.payment_config.payment,
        p.payment_clock().now() + later,
    )
    .await
    .unwrap()
}

async fn uuids(db: &DatabaseConnection, sql: &str) -> Vec<Uuid> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("", "id").unwrap())
        .collect()
}

/// A buyer with 10,000 in the wallet who paid for a held seat; returns (reservation, payment).
async fn paid_hold(p: &Platform, seat: i64) -> (Buyer, i64, i64) {
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let b = p.buyers(1, concert).await.remove(0);
    p.charge(&b, json!(10_000), None).await;
    let id = p.hold(&b, schedule, vec![seat]).await["id"]
        .as_i64()
        .unwrap();
    let (status, payment) = p.pay(&b, json!({"reservation_id": id}), None).await;
    assert_eq!(status, 201, "{payment}");
    (b, id, payment["id"].as_i64().unwrap())
}

/// Whether `group` has committed past every message of `topic` (one partition in tests): the
/// consumer handled them all, since offsets are committed only after the handler.
async fn caught_up(brokers: &str, group: String, topic: String) -> Option<()> {
    let brokers = brokers.to_owned();
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

/// concert-api's consumer as it was meant to be wired (payment-api's prefix), over the same
/// database; waits until it has handled every `payment.completed` there is.
async fn concert_consumer_returns(p: &Platform) -> TestApp {
    let mut config = p.concert_config.clone();
    config.kafka.topic_prefix = p.payment_config.kafka.topic_prefix.clone();
    let kafka = config.kafka.clone();
    let app = TestApp::start(concert_api::Application::build(config).await.unwrap());
    eventually(
        "concert-api's consumer to handle payment.completed",
        Duration::from_secs(60),
        || {
            caught_up(
                &kafka.brokers,
                kafka.topic("concert-api"),
                kafka.topic(common::events::PAYMENT_COMPLETED),
            )
        },
    )
    .await;
    app
}

#[tokio::test]
async fn a_paid_hold_nobody_consumed_is_confirmed_over_http_and_the_late_event_is_a_duplicate() {
    let p = spawn_platform_with_concert(|e| e, detach).await;
    let (b, id, payment_id) = paid_hold(&p, 1).await;
    let event_id = completed_event_id(payment_id);
    let published = "SELECT event_id AS id FROM outbox \
                     WHERE topic = 'payment.completed' AND published_at IS NOT NULL";
    eventually(
        "payment.completed to reach the broker",
        Duration::from_secs(30),
        || async { (uuids(&p.payment_db, published).await == vec![event_id]).then_some(()) },
    )
    .await;
    assert_eq!(
        p.reservation(&b, id).await["status"],
        "HELD",
        "nobody consumed it"
    );

    // concert-api unreachable: nothing settles, and the gauge says how old it is.
    let dead = payment_api::concerts::ConcertClient::new(
        &StubCatalogue::unreachable_url(),
        Duration::from_millis(200),
        &p.payment_config.payment.internal_token,
    );
    let report = reconcile_at(&p, &dead, chrono::Duration::minutes(3)).await;
    assert_eq!((report.checked, report.unreachable), (1, 1));
    assert_eq!(report.unsettled, UnsettledByAge([1, 1, 0]));

    // Past PAYMENT_RECONCILE_AFTER_SECS: re-published, under the same event id.
    let c = client(&p);
    let report = reconcile_at(&p, &c, chrono::Duration::seconds(60)).await;
    assert_eq!(
        (report.republished, report.settled_directly),
        (1, 0),
        "{report:?}"
    );
    let all = "SELECT event_id AS id FROM outbox WHERE topic = 'payment.completed'";
    assert_eq!(uuids(&p.payment_db, all).await, vec![event_id]);

    // Past PAYMENT_SETTLE_DIRECT_AFTER_SECS: settled over HTTP.
    let report = reconcile_at(&p, &c, chrono::Duration::minutes(10)).await;
    assert_eq!(
        (report.settled_directly, report.confirmed, report.refunded),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(report.unsettled, UnsettledByAge([0, 0, 0]));
    let r = p.reservation(&b, id).await;
    assert_eq!(
        (r["status"].as_str(), r["payment_id"].as_i64()),
        (Some("CONFIRMED"), Some(payment_id))
    );
    assert_eq!(
        count(
            &p.payment_db,
            &format!("SELECT count(*)::bigint AS n FROM payments WHERE id = {payment_id} AND confirmed_at IS NOT NULL AND status = 'COMPLETED'")
        )
        .await,
        1
    );
    let again = reconcile_at(&p, &c, chrono::Duration::minutes(20)).await;
    assert_eq!(again.checked, 0, "settled payments are left alone");

    // The broker path delivers both copies (first and re-published) later: duplicates.
    let _late = concert_consumer_returns(&p).await;
    assert_eq!(
        count(
            &p.concert_db,
            "SELECT count(*)::bigint AS n FROM outbox WHERE topic = 'reservation.confirmed'"
        )
        .await,
        1,
        "confirmed once"
    );
    assert_eq!(
        count(
            &p.concert_db,
            "SELECT count(*)::bigint AS n FROM outbox WHERE topic = 'reservation.rejected'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &p.concert_db,
            "SELECT count(*)::bigint AS n FROM seats WHERE status = 'SOLD'"
        )
        .await,
        1
    );
    p.assert_money_invariants().await;
}

#[tokio::test]
async fn a_payment_for_an_expired_hold_is_refunded_over_http_once_whatever_arrives_later() {
    let p = spawn_platform_with_concert(|e| e, detach).await;
    let (b, id, payment_id) = paid_hold(&p, 2).await;
    assert_eq!(p.balance(&b).await, 9_000);
    // The hold dies before anything settles it.
    let sweep = concert_api::expire_holds(
        &p.concert_db,
        &concert_api::Inventory::new(p.redis()),
        Utc::now() + chrono::Duration::hours(1),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(sweep.reservations_expired, 1);

    let report = reconcile_at(&p, &client(&p), chrono::Duration::minutes(10)).await;
    assert_eq!(
        (report.settled_directly, report.refunded, report.confirmed),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(p.reservation(&b, id).await["status"], "EXPIRED");
    assert_eq!(p.balance(&b).await, 10_000, "the money is back");
    let refunds = "SELECT count(*)::bigint AS n FROM ledger WHERE kind = 'REFUND'";
    assert_eq!(count(&p.payment_db, refunds).await, 1);
    let rejection = uuids(
        &p.concert_db,
        "SELECT event_id AS id FROM outbox WHERE topic = 'reservation.rejected'",
    )
    .await;
    assert_eq!(rejection.len(), 1);
    let recorded = uuids(
        &p.payment_db,
        "SELECT event_id AS id FROM inbox WHERE consumer = 'payment-api.settlement'",
    )
    .await;
    assert_eq!(
        recorded, rejection,
        "refunded under the rejection's event id"
    );
    assert_eq!(
        count(
            &p.payment_db,
            &format!("SELECT count(*)::bigint AS n FROM payments WHERE id = {payment_id} AND status = 'REFUNDED'")
        )
        .await,
        1
    );

    // Later, the broker path: concert-api consumes payment.completed, and payment-api
    // consumes the reservation.rejected concert-api published. Both are duplicates.
    let _late_concert = concert_consumer_returns(&p).await;
    let mut config = p.payment_config.clone();
    config.kafka.topic_prefix = p.concert_config.kafka.topic_prefix.clone();
    let kafka = config.kafka.clone();
    let _late_payment = TestApp::start(payment_api::Application::build(config).await.unwrap());
    eventually(
        "payment-api's consumer to handle reservation.rejected",
        Duration::from_secs(60),
        || {
            caught_up(
                &kafka.brokers,
                kafka.topic("payment-api"),
                kafka.topic(common::events::RESERVATION_REJECTED),
            )
        },
    )
    .await;
    assert_eq!(count(&p.payment_db, refunds).await, 1, "still one refund");
    assert_eq!(p.balance(&b).await, 10_000);
    assert_eq!(
        count(
            &p.payment_db,
            "SELECT count(*)::bigint AS n FROM outbox WHERE topic = 'payment.refunded'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &p.concert_db,
            "SELECT count(*)::bigint AS n FROM outbox WHERE topic = 'reservation.rejected'"
        )
        .await,
        1,
        "rejected once"
    );
    let again = reconcile_at(&p, &client(&p), chrono::Duration::minutes(20)).await;
    assert_eq!(again.checked, 0);
    p.assert_money_invariants().await;
}
