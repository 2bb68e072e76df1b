//! Payments against real concert-api: exactly one per reservation, never an overdraft, the
//! reservation's amount only, and refusals that change nothing.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::{count, spawn_platform};

#[tokio::test]
async fn fifty_concurrent_payments_of_one_reservation_debit_once() {
    let p = spawn_platform(|e| e).await;
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let b = p.buyers(1, concert).await.remove(0);
    p.charge(&b, json!(100_000), None).await;
    let r1 = p.hold(&b, schedule, vec![1, 2]).await["id"]
        .as_i64()
        .unwrap();
    let r2 = p.hold(&b, schedule, vec![3]).await["id"].as_i64().unwrap();

    let plain = join_all((0..50).map(|_| p.pay(&b, json!({"reservation_id": r1}), None))).await;
    assert_eq!(plain.iter().filter(|(s, _)| *s == 201).count(), 1);
    assert!(
        plain
            .iter()
            .filter(|(s, _)| *s != 201)
            .all(|(s, b)| *s == 409 && b["code"] == "ALREADY_PAID"),
        "{plain:?}"
    );

    let keyed =
        join_all((0..50).map(|_| p.pay(&b, json!({"reservation_id": r2}), Some("pay-r2")))).await;
    assert!(
        keyed.iter().all(|r| r.0 == 201 && r == &keyed[0]),
        "one payment, replayed: {keyed:?}"
    );

    assert_eq!(
        count(&p.payment_db, "SELECT count(*)::bigint AS n FROM payments").await,
        2
    );
    assert_eq!(
        count(
            &p.payment_db,
            "SELECT count(*)::bigint AS n FROM ledger WHERE kind = 'PAYMENT'"
        )
        .await,
        2
    );
    assert_eq!(p.balance(&b).await, 100_000 - 2000 - 1000);
    p.assert_money_invariants().await;
    // Replays are not counted again: two payments, 49 refusals, the money of two.
    for (series, value) in [
        (r#"payments_total{outcome="completed""#, 2.0),
        (r#"payments_total{outcome="already_paid""#, 49.0),
        ("payments_amount_total{", 3000.0),
    ] {
        assert_eq!(p.figure(series).await, Some(value), "{series}");
    }
}

#[tokio::test]
async fn a_balance_for_five_of_twenty_holds_pays_exactly_five() {
    // Twenty holds: the most one buyer may have of a concert (`max_tickets_per_user` ≤ 20).
    let p = spawn_platform(|e| e).await;
    let (concert, schedule) = p.concert_with_schedule(20).await;
    let b = p.buyers(1, concert).await.remove(0);
    p.charge(&b, json!(5000), None).await;
    let mut reservations = Vec::new();
    for seat in 1..=20 {
        reservations.push(
            p.hold(&b, schedule, vec![seat]).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let results = join_all(
        reservations
            .iter()
            .map(|r| p.pay(&b, json!({"reservation_id": r}), None)),
    )
    .await;
    assert_eq!(results.iter().filter(|(s, _)| *s == 201).count(), 5);
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s != 201)
            .all(|(s, b)| *s == 402 && b["code"] == "INSUFFICIENT_BALANCE")
    );
    assert_eq!(p.balance(&b).await, 0);
    assert_eq!(
        count(&p.payment_db, "SELECT count(*)::bigint AS n FROM payments").await,
        5
    );
    p.assert_money_invariants().await;
    for (series, value) in [
        (r#"payments_total{outcome="completed""#, 5.0),
        (r#"payments_total{outcome="insufficient_balance""#, 15.0),
    ] {
        assert_eq!(p.figure(series).await, Some(value), "{series}");
    }
}

#[tokio::test]
async fn refusals_change_nothing_and_the_amount_is_the_reservations() {
    let p = spawn_platform(|e| {
        e.with("RESERVATION_HOLD_SECS", "12")
            .with("PAYMENT_CUTOFF_SECS", "10")
    })
    .await;
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let buyers = p.buyers(2, concert).await;
    let (ann, bob) = (&buyers[0], &buyers[1]);
    let held = p.hold(ann, schedule, vec![1, 2]).await;
    let id = held["id"].as_i64().unwrap();

    // Not enough money: 402, nothing changes, the hold stays.
    p.charge(ann, json!(1500), None).await;
    let (status, body) = p
        .pay(ann, json!({"reservation_id": id, "amount": 1}), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (402, Some("INSUFFICIENT_BALANCE"))
    );
    assert_eq!(p.balance(ann).await, 1500);
    assert_eq!(p.reservation(ann, id).await["status"], "HELD");

    // Someone else's reservation: 404, as if it did not exist.
    p.charge(bob, json!(10_000), None).await;
    let (status, body) = p.pay(bob, json!({"reservation_id": id}), None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));
    assert_eq!(p.balance(bob).await, 10_000);

    // The client's amount is ignored: the reservation's 2,000 is charged.
    p.charge(ann, json!(10_000), None).await;
    let (status, payment) = p
        .pay(ann, json!({"reservation_id": id, "amount": 1}), None)
        .await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["amount"], 2000);
    assert_eq!(payment["status"], "COMPLETED");
    assert_eq!(p.balance(ann).await, 11_500 - 2000);

    // A hold inside the cutoff (as payment-api's clock sees it): 409 HOLD_EXPIRED, nothing
    // debited.
    let late = p.hold(ann, schedule, vec![5]).await["id"].as_i64().unwrap();
    p.payment_clock().advance(std::time::Duration::from_secs(3));
    let before = p.balance(ann).await;
    let (status, body) = p.pay(ann, json!({"reservation_id": late}), None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("HOLD_EXPIRED")));
    assert_eq!(p.balance(ann).await, before);

    for body in [
        json!({}),
        json!({"reservation_id": "x"}),
        json!({"reservation_id": 0}),
        json!({"reservation_id": 1e40}),
    ] {
        assert_eq!(p.pay(ann, body.clone(), None).await.0, 400, "{body}");
    }
    assert_eq!(
        p.pay(ann, json!({"reservation_id": 999_999}), None).await.0,
        404
    );
    p.assert_money_invariants().await;
}

#[tokio::test]
async fn a_hold_on_the_board_is_paid_without_concert_api_and_a_cancelled_one_is_not() {
    let mut p = spawn_platform(|e| e).await;
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let b = p.buyers(1, concert).await.remove(0);
    p.charge(&b, json!(100_000), None).await;
    let hold = async |seat| {
        p.hold(&b, schedule, vec![seat]).await["id"]
            .as_i64()
            .unwrap()
    };
    let (pinned, cancelled, unpinned) = (hold(1).await, hold(2).await, hold(3).await);
    let board = common::held::HoldBoard::new(p.redis());
    let noted = board
        .read(pinned)
        .await
        .unwrap()
        .expect("concert-api pins each hold");
    assert_eq!((noted.user_id, noted.concert_id), (b.user_id, concert));

    // A cancel takes the note down before it commits: payment-api asks concert-api, which
    // says cancelled.
    let res = reqwest::Client::new()
        .delete(p.concert.url(&format!("/api/reservations/{cancelled}")))
        .bearer_auth(&b.session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(board.read(cancelled).await.unwrap(), None);
    let (status, body) = p.pay(&b, json!({"reservation_id": cancelled}), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("RESERVATION_NOT_PAYABLE"))
    );

    // With concert-api gone, a hold on the board is still paid; one without a note (as
    // after Redis lost it) cannot be checked: 503, nothing charged.
    board.take_down(unpinned).await.unwrap();
    p.concert.trigger_stop();
    common::testkit::eventually("concert-api to stop", Duration::from_secs(30), || async {
        reqwest::get(p.concert.url("/health/live"))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let before = p.balance(&b).await;
    let (status, body) = p.pay(&b, json!({"reservation_id": unpinned}), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("DEPENDENCY_UNAVAILABLE")),
        "{body}"
    );
    assert_eq!(p.balance(&b).await, before);
    let (status, payment) = p.pay(&b, json!({"reservation_id": pinned}), None).await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["amount"].as_i64(), Some(noted.amount));
    assert_eq!(p.balance(&b).await, before - noted.amount);
    p.assert_money_invariants().await;
}

/// The common payment is made in one call (`pay_at_once`), which fills the payment's id into
/// an answer and an event prepared before the database numbered it: both must be exactly what
/// the general path writes from the stored payment.
#[tokio::test]
async fn a_payment_made_at_once_keeps_the_answer_and_event_of_the_stored_payment() {
    use payment_api::domain::payment::PaymentView;
    use payment_api::events::{completed_event, completed_event_id};
    use payment_api::store::payments;
    use sea_orm::{ConnectionTrait, Statement};

    let p = spawn_platform(|e| e).await;
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let b = p.buyers(1, concert).await.remove(0);
    p.charge(&b, json!(10_000), None).await;
    let reservation = p.hold(&b, schedule, vec![4]).await["id"].as_i64().unwrap();
    let (status, answer) = p
        .pay(&b, json!({"reservation_id": reservation}), Some("at-once"))
        .await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["id"].as_i64().unwrap();

    let stored = payments::find(&p.payment_db, id).await.unwrap().unwrap();
    assert_eq!(
        answer,
        serde_json::to_value(PaymentView::from(stored.clone())).unwrap()
    );
    let replay = p
        .pay(&b, json!({"reservation_id": reservation}), Some("at-once"))
        .await;
    assert_eq!(
        replay,
        (201, answer.clone()),
        "the key replays the first answer"
    );

    let row = p
        .payment_db
        .query_one_raw(Statement::from_sql_and_values(
            p.payment_db.get_database_backend(),
            "SELECT event_id, key, payload FROM outbox WHERE topic = 'payment.completed'",
            [],
        ))
        .await
        .unwrap()
        .unwrap();
    let event_id: sea_orm::prelude::Uuid = row.try_get("", "event_id").unwrap();
    let key: String = row.try_get("", "key").unwrap();
    let payload: serde_json::Value = row.try_get("", "payload").unwrap();
    assert_eq!(event_id, completed_event_id(id));
    assert_eq!(key, reservation.to_string());
    assert_eq!(
        payload,
        serde_json::to_value(completed_event(&stored)).unwrap()
    );
    assert_eq!(p.balance(&b).await, 9000);
    p.assert_money_invariants().await;

    // The key's row was written once, its answer in it: inserted, never updated (the
    // database's own counts, which reach pg_stat_user_tables shortly after the commit).
    let writes = || async {
        let row = p
            .payment_db
            .query_one_raw(Statement::from_string(
                p.payment_db.get_database_backend(),
                "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'idempotency_keys'",
            ))
            .await
            .unwrap()
            .unwrap();
        let counts: (i64, i64) = (
            row.try_get("", "n_tup_ins").unwrap(),
            row.try_get("", "n_tup_upd").unwrap(),
        );
        (counts.0 > 0).then_some(counts)
    };
    let (inserted, updated) = common::testkit::eventually(
        "the key's row in the statistics",
        Duration::from_secs(20),
        writes,
    )
    .await;
    assert_eq!((inserted, updated), (1, 0));
}
