//! `POST /internal/settlements`, payment-api's backstop when the broker has not delivered
//! `payment.completed`: the same settlement as the consumer's, under the same inbox, so
//! asking twice, concurrently, or after the consumer has one effect and one verdict.

use std::time::Duration;

use common::events::PaymentCompleted;
use common::kafka::Envelope;
use serde_json::{Value, json};

use crate::helpers::{Spawned, spawn_app};

async fn settle(s: &Spawned, event: &impl serde::Serialize) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(s.url("/internal/settlements"))
        .header("x-internal-token", common::testkit::INTERNAL_TEST_TOKEN)
        .json(event)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn outbox_count(s: &Spawned, topic: &str) -> i64 {
    s.count(&format!(
        "SELECT count(*)::bigint AS n FROM outbox WHERE topic = '{topic}'"
    ))
    .await
}

async fn rejection_event_id(s: &Spawned) -> Value {
    use sea_orm::{ConnectionTrait, Statement};
    let row =
        s.db.query_one_raw(Statement::from_string(
            s.db.get_database_backend(),
            "SELECT event_id::text AS id FROM outbox WHERE topic = 'reservation.rejected'",
        ))
        .await
        .unwrap()
        .unwrap();
    json!(row.try_get::<String>("", "id").unwrap())
}

/// A held seat and the `payment.completed` event paying for it.
async fn paid(s: &Spawned, seat: i64) -> (crate::helpers::Buyer, i64, Envelope<PaymentCompleted>) {
    let (concert, schedule) = s.concert_with_schedule(10, -60, 3600).await;
    let buyer = s.buyers(1, concert).await.remove(0);
    let (_, held) = s.hold(&buyer, schedule, &[seat]).await;
    let id = held["id"].as_i64().unwrap();
    let event = s.payment(&buyer, id, 90 + seat, s.clock.now());
    (buyer, id, event)
}

#[tokio::test]
async fn settling_directly_again_and_at_once_confirms_once_with_one_verdict() {
    let s = spawn_app().await;
    let (buyer, id, event) = paid(&s, 3).await;
    let answers = futures_util::future::join_all((0..4).map(|_| settle(&s, &event))).await;
    for answer in &answers {
        assert_eq!(answer, &(200, json!({"verdict": "CONFIRMED"})));
    }
    assert_eq!(
        settle(&s, &event).await,
        (200, json!({"verdict": "CONFIRMED"}))
    );
    let r = s.reservation(&buyer, id).await;
    assert_eq!(
        (r["status"].as_str(), r["payment_id"].as_i64()),
        (Some("CONFIRMED"), Some(93))
    );
    assert_eq!(
        outbox_count(&s, "reservation.confirmed").await,
        1,
        "confirmed once"
    );
    assert_eq!(
        s.count(&format!(
            "SELECT count(*)::bigint AS n FROM inbox WHERE event_id = '{}' AND consumer = 'concert-api.settle-payment'",
            event.id
        ))
        .await,
        1,
        "recorded in the consumer's inbox"
    );

    // The same event through the broker afterwards: a duplicate.
    s.deliver_payment(&event).await;
    s.payments_consumed().await;
    assert_eq!(outbox_count(&s, "reservation.confirmed").await, 1);
    assert_eq!(outbox_count(&s, "reservation.rejected").await, 0);
    // Six settlements asked for, five directly and one by the broker: one happened.
    for (series, value) in [
        (
            r#"settlements_total{outcome="confirmed",path="direct""#,
            Some(1.0),
        ),
        (
            r#"settlements_total{outcome="confirmed",path="event""#,
            None,
        ),
        ("payment_confirm_lag_seconds_count{", Some(1.0)),
    ] {
        assert_eq!(s.figure(series).await, value, "{series}");
    }
}

#[tokio::test]
async fn a_rejection_is_written_once_and_answered_with_its_event_every_time() {
    let s = spawn_app().await;
    let (buyer, id, event) = paid(&s, 5).await;
    concert_api::expire_holds(
        &s.db,
        &s.inventory(),
        s.clock.now() + chrono::Duration::hours(1),
        Duration::from_secs(30),
    )
    .await
    .unwrap();

    let (status, first) = settle(&s, &event).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["verdict"], "REJECTED");
    assert_eq!(first["reason"], "RESERVATION_EXPIRED");
    assert_eq!(first["rejection_event_id"], rejection_event_id(&s).await);
    assert_eq!(
        settle(&s, &event).await,
        (200, first.clone()),
        "the same verdict"
    );
    assert_eq!(
        outbox_count(&s, "reservation.rejected").await,
        1,
        "written once"
    );
    assert_eq!(s.reservation(&buyer, id).await["status"], "EXPIRED");
}

#[tokio::test]
async fn after_the_consumer_rejected_a_payment_the_endpoint_answers_that_rejection() {
    let s = spawn_app().await;
    let (_, _, event) = paid(&s, 7).await;
    concert_api::expire_holds(
        &s.db,
        &s.inventory(),
        s.clock.now() + chrono::Duration::hours(1),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    s.deliver_payment(&event).await;
    s.payments_consumed().await;
    assert_eq!(outbox_count(&s, "reservation.rejected").await, 1);

    let (status, verdict) = settle(&s, &event).await;
    assert_eq!(status, 200);
    assert_eq!(
        verdict,
        json!({
            "verdict": "REJECTED",
            "reason": "RESERVATION_EXPIRED",
            "rejection_event_id": rejection_event_id(&s).await,
        })
    );
    assert_eq!(
        outbox_count(&s, "reservation.rejected").await,
        1,
        "nothing new"
    );
}

#[tokio::test]
async fn only_a_payment_completed_event_is_settled() {
    let s = spawn_app().await;
    let (_, _, mut event) = paid(&s, 9).await;
    event.kind = "payment.refunded".into();
    let (status, problem) = settle(&s, &event).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["code"], "INVALID_REQUEST");
    let (status, problem) = settle(&s, &json!({"id": "not-a-uuid"})).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(outbox_count(&s, "reservation.confirmed").await, 0);
}
