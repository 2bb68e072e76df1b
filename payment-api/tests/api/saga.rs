//! The saga through the real broker: payment → seat confirmed → queue token retired; a
//! rejection → refund once; a lost event → reconciliation; a broker outage → delay, no loss.

use std::time::Duration;

use chrono::Utc;
use common::events::{RESERVATION_REJECTED, ReservationRejected};
use common::kafka::{Envelope, KafkaClient};
use common::testkit::{PrivateBroker, eventually};
use serde_json::json;

use crate::helpers::{Platform, count, spawn_platform, spawn_saga};

async fn confirmed(p: &Platform, b: &crate::helpers::Buyer, id: i64) {
    eventually(
        "the reservation to be confirmed",
        Duration::from_secs(30),
        || async move { (p.reservation(b, id).await["status"] == "CONFIRMED").then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn paying_confirms_the_seat_and_retires_the_queue_token() {
    let p = spawn_saga(|e| e).await;
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let b = p.buyers(1, concert).await.remove(0);
    p.charge(&b, json!(10_000), None).await;
    let id = p.hold(&b, schedule, vec![4]).await["id"].as_i64().unwrap();
    let (status, payment) = p.pay(&b, json!({"reservation_id": id}), None).await;
    assert_eq!(status, 201);
    confirmed(&p, &b, id).await;
    assert_eq!(p.reservation(&b, id).await["payment_id"], payment["id"]);

    let users = p.users.as_ref().unwrap();
    let c = reqwest::Client::new();
    eventually(
        "the queue token to be retired",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            let url = users.url(&format!("/api/queue/tokens/{}", b.pass));
            let session = b.session.clone();
            async move {
                let v: serde_json::Value = c
                    .get(url)
                    .bearer_auth(session)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (v["status"] == "EXPIRED").then_some(())
            }
        },
    )
    .await;
    eventually(
        "payment-api to record the confirmation",
        Duration::from_secs(30),
        || async {
            (count(
                &p.payment_db,
                "SELECT count(*)::bigint AS n FROM payments WHERE confirmed_at IS NOT NULL",
            )
            .await
                == 1)
                .then_some(())
        },
    )
    .await;
    let seat_status = count(
        &p.concert_db,
        "SELECT count(*)::bigint AS n FROM seats WHERE seat_no = 4 AND status = 'SOLD'",
    )
    .await;
    assert_eq!(seat_status, 1);
    p.assert_money_invariants().await;
}

#[tokio::test]
async fn a_rejected_reservation_is_refunded_exactly_once() {
    let p = spawn_platform(|e| e).await;
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let b = p.buyers(1, concert).await.remove(0);
    p.charge(&b, json!(10_000), None).await;
    let id = p.hold(&b, schedule, vec![1]).await["id"].as_i64().unwrap();
    let (_, payment) = p.pay(&b, json!({"reservation_id": id}), None).await;
    let payment_id = payment["id"].as_i64().unwrap();
    confirmed(&p, &b, id).await;

    // Suppose concert-api had lost the seat: two rejections (distinct events) arrive.
    let kafka = KafkaClient::new(&p.payment_config.kafka).unwrap();
    let mut rejections = Vec::new();
    for _ in 0..2 {
        let event = Envelope::new(
            RESERVATION_REJECTED,
            ReservationRejected {
                reservation_id: id,
                payment_id,
                user_id: b.user_id,
                reason: "SEATS_NO_LONGER_HELD".into(),
            },
            Utc::now(),
        );
        rejections.push(format!("'{}'", event.id));
        let payload = serde_json::to_vec(&event).unwrap();
        kafka
            .send(
                &kafka.topic(RESERVATION_REJECTED),
                &id.to_string(),
                &payload,
                rdkafka::message::OwnedHeaders::new(),
            )
            .await
            .unwrap();
    }
    eventually("the refund", Duration::from_secs(30), || async {
        (count(
            &p.payment_db,
            "SELECT count(*)::bigint AS n FROM payments WHERE status = 'REFUNDED'",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    // Both rejections handled (each recorded in the consumer's inbox), one refund.
    let handled = format!(
        "SELECT count(*)::bigint AS n FROM inbox WHERE event_id IN ({})",
        rejections.join(", ")
    );
    eventually(
        "both rejections handled",
        Duration::from_secs(30),
        || async { (count(&p.payment_db, &handled).await == 2).then_some(()) },
    )
    .await;
    assert_eq!(
        count(
            &p.payment_db,
            "SELECT count(*)::bigint AS n FROM ledger WHERE kind = 'REFUND'"
        )
        .await,
        1
    );
    assert_eq!(p.balance(&b).await, 10_000);
    assert_eq!(
        count(
            &p.payment_db,
            "SELECT count(*)::bigint AS n FROM outbox WHERE topic = 'payment.refunded'"
        )
        .await,
        1
    );
    assert_eq!(p.figure("refunds_total{").await, Some(1.0));
    p.assert_money_invariants().await;
}

#[tokio::test]
async fn a_lost_payment_event_is_found_by_reconciliation_and_the_seat_confirmed() {
    let p = spawn_platform(|e| e).await;
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let b = p.buyers(1, concert).await.remove(0);
    let id = p.hold(&b, schedule, vec![2]).await["id"].as_i64().unwrap();
    // Money taken, but payment.completed never reached the broker: a payment row, its debit,
    // and no outbox row — what deleting the event from the outbox after commit leaves.
    p.charge(&b, json!(5000), None).await;
    {
        use sea_orm::{ConnectionTrait, Statement};
        let sql = format!(
            "WITH pay AS (INSERT INTO payments (user_id, reservation_id, amount, status, created_at) \
                VALUES ({u}, {id}, 1000, 'COMPLETED', now() - interval '1 minute') RETURNING id), \
             w AS (UPDATE wallets SET balance = balance - 1000 WHERE user_id = {u} RETURNING balance) \
             INSERT INTO ledger (user_id, kind, amount, balance_after, ref) \
             SELECT {u}, 'PAYMENT', 1000, w.balance, 'payment:' || pay.id FROM pay, w",
            u = b.user_id
        );
        p.payment_db
            .execute_raw(Statement::from_string(
                p.payment_db.get_database_backend(),
                sql,
            ))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        p.reservation(&b, id).await["status"],
        "HELD",
        "nothing told concert-api"
    );

    let client = payment_api::concerts::ConcertClient::new(
        &p.concert.address,
        Duration::from_secs(2),
        &p.payment_config.payment.internal_token,
    );
    let report = payment_api::reconcile(
        &p.payment_db,
        &client,
        &p.payment_config.payment,
        p.payment_clock().now(),
    )
    .await
    .unwrap();
    assert_eq!((report.checked, report.republished), (1, 1));
    confirmed(&p, &b, id).await;

    // Once confirmed (and the confirmation seen), reconciliation leaves it alone.
    eventually(
        "the confirmation to be recorded",
        Duration::from_secs(30),
        || async {
            (count(
                &p.payment_db,
                "SELECT count(*)::bigint AS n FROM payments WHERE confirmed_at IS NOT NULL",
            )
            .await
                == 1)
                .then_some(())
        },
    )
    .await;
    p.payment_clock().advance(Duration::from_secs(300));
    let later = p.payment_clock().now();
    let again = payment_api::reconcile(&p.payment_db, &client, &p.payment_config.payment, later)
        .await
        .unwrap();
    assert_eq!(again.checked, 0);
    p.assert_money_invariants().await;
}

#[tokio::test]
async fn payments_succeed_while_the_broker_is_down_and_confirm_when_it_returns() {
    let broker = PrivateBroker::start().await;
    let brokers = broker.brokers.clone();
    let p = spawn_platform(move |e| e.with("KAFKA_BROKERS", brokers.clone())).await;
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let buyers = p.buyers(3, concert).await;
    let mut ids = Vec::new();
    for (i, b) in buyers.iter().enumerate() {
        p.charge(b, json!(5000), None).await;
        ids.push(
            p.hold(b, schedule, vec![i as i64 + 1]).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    // Let the consumers settle into their groups before the outage.
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.pause();
    for (b, id) in buyers.iter().zip(&ids) {
        let (status, body) = p.pay(b, json!({"reservation_id": id}), None).await;
        assert_eq!(status, 201, "payments do not wait for the broker: {body}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        p.reservation(&buyers[0], ids[0]).await["status"],
        "HELD",
        "nothing confirmed while the broker is down"
    );
    broker.resume();
    let p = &p;
    for (b, id) in buyers.iter().zip(&ids) {
        eventually(
            "confirmation after the broker returns",
            Duration::from_secs(90),
            || async move { (p.reservation(b, *id).await["status"] == "CONFIRMED").then_some(()) },
        )
        .await;
    }
    assert_eq!(
        count(
            &p.payment_db,
            "SELECT count(*)::bigint AS n FROM ledger WHERE kind = 'PAYMENT'"
        )
        .await,
        3,
        "nothing doubled"
    );
    assert_eq!(
        count(
            &p.concert_db,
            "SELECT count(*)::bigint AS n FROM outbox WHERE topic = 'reservation.confirmed'"
        )
        .await,
        3
    );
    p.assert_money_invariants().await;
}

/// `reservation.confirmed` is recorded in one statement with its inbox row: of fifty
/// deliveries of one event at once exactly one is the first and dates the confirmation; a
/// later event for the same payment (another id) is recorded but does not move the date.
#[tokio::test]
async fn fifty_deliveries_of_one_confirmation_record_it_once() {
    use common::testkit::TestDatabase;
    use payment_api::events::CONSUMER;
    use payment_api::store::payments::{insert_paid, mark_confirmed_once};
    use sea_orm::prelude::Uuid;
    use sea_orm_migration::MigratorTrait;

    let test_db = TestDatabase::create().await;
    let db = test_db.connect().await;
    payment_api::store::migration::Migrator::up(&db, None)
        .await
        .unwrap();
    // No wallet: the payment row stays undebited, which is all this needs.
    let (payment, _) = insert_paid(&db, 3, 11, 1000, Utc::now())
        .await
        .unwrap()
        .unwrap();
    let event = Uuid::new_v4();
    let first_at = Utc::now();
    let firsts = futures_util::future::join_all((0..50).map(|i| {
        let db = db.clone();
        async move {
            let at = first_at + chrono::TimeDelta::milliseconds(i);
            mark_confirmed_once(&db, event, CONSUMER, payment.id, at).await
        }
    }))
    .await;
    let firsts: Vec<bool> = firsts.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        firsts.iter().filter(|first| **first).count(),
        1,
        "{firsts:?}"
    );
    let confirmed_at = "SELECT count(*)::bigint AS n FROM payments WHERE confirmed_at IS NOT NULL";
    assert_eq!(count(&db, confirmed_at).await, 1);
    let inbox = "SELECT count(*)::bigint AS n FROM inbox";
    assert_eq!(count(&db, inbox).await, 1);

    let later = first_at + chrono::TimeDelta::hours(1);
    assert!(
        mark_confirmed_once(&db, Uuid::new_v4(), CONSUMER, payment.id, later)
            .await
            .unwrap()
    );
    assert_eq!(count(&db, inbox).await, 2);
    let moved = format!(
        "SELECT count(*)::bigint AS n FROM payments WHERE confirmed_at >= '{}'",
        later.to_rfc3339()
    );
    assert_eq!(count(&db, &moved).await, 0, "the first date stays");
}

/// A batch of `reservation.confirmed` events is recorded in one statement, each event once:
/// forty batches that overlap (and repeat events inside themselves) and single deliveries of
/// the same events, all at once, record each of 200 confirmations exactly once.
#[tokio::test]
async fn overlapping_batches_of_confirmations_record_each_once() {
    use common::testkit::TestDatabase;
    use payment_api::events::CONSUMER;
    use payment_api::store::payments::{
        insert_paid, mark_confirmed_once, mark_each_confirmed_once,
    };
    use sea_orm::prelude::Uuid;
    use sea_orm_migration::MigratorTrait;

    let test_db = TestDatabase::create().await;
    let db = test_db.connect().await;
    payment_api::store::migration::Migrator::up(&db, None)
        .await
        .unwrap();
    let mut confirmations = Vec::new();
    for n in 0..200 {
        let (payment, _) = insert_paid(&db, 3, 1000 + n, 1000, Utc::now())
            .await
            .unwrap()
            .unwrap();
        confirmations.push((Uuid::new_v4(), payment.id));
    }
    let at = Utc::now();
    let batches = (0..40).map(|b| {
        let (db, all) = (db.clone(), confirmations.clone());
        async move {
            // 20 events from a place that moves by 5, the first of them twice.
            let start = (b * 5) % 181;
            let mut batch: Vec<(Uuid, i64)> = all[start..start + 20].to_vec();
            batch.push(batch[0]);
            mark_each_confirmed_once(&db, CONSUMER, &batch, at).await
        }
    });
    let singles = (0..200).step_by(7).map(|i| {
        let (db, (event, payment)) = (db.clone(), confirmations[i]);
        async move {
            mark_confirmed_once(&db, event, CONSUMER, payment, at)
                .await
                .map(i64::from)
        }
    });
    let (batched, single) = futures_util::future::join(
        futures_util::future::join_all(batches),
        futures_util::future::join_all(singles),
    )
    .await;
    let firsts: i64 = batched
        .into_iter()
        .chain(single)
        .map(|r| r.expect("no statement fails, none deadlocks"))
        .sum();
    assert_eq!(firsts, 200, "each event first exactly once");
    assert_eq!(
        count(&db, "SELECT count(*)::bigint AS n FROM inbox").await,
        200
    );
    let confirmed = "SELECT count(*)::bigint AS n FROM payments WHERE confirmed_at IS NOT NULL";
    assert_eq!(count(&db, confirmed).await, 200);

    // Every one again, and new events for confirmed payments: nothing first the second
    // time, the new ones recorded, and no date moves.
    assert_eq!(
        mark_each_confirmed_once(&db, CONSUMER, &confirmations, at)
            .await
            .unwrap(),
        0
    );
    let later = at + chrono::TimeDelta::hours(1);
    let again: Vec<(Uuid, i64)> = confirmations
        .iter()
        .map(|(_, payment)| (Uuid::new_v4(), *payment))
        .collect();
    assert_eq!(
        mark_each_confirmed_once(&db, CONSUMER, &again, later)
            .await
            .unwrap(),
        200
    );
    let moved = format!(
        "SELECT count(*)::bigint AS n FROM payments WHERE confirmed_at >= '{}'",
        later.to_rfc3339()
    );
    assert_eq!(count(&db, &moved).await, 0, "the first date stays");
}
