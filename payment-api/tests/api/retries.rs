//! Retries are safe (DESIGN §9.7): the same `Idempotency-Key` and body replay the first answer
//! byte for byte — after the purchase retired the queue pass too — a paid reservation is 409
//! `ALREADY_PAID` whatever the pass, and a key still in use is waited for, then 409 with
//! `Retry-After`.

use std::time::Duration;

use chrono::Utc;
use common::auth::{ActiveQueuePass, QueueKeys};
use common::testkit::eventually;
use futures_util::future::join_all;
use sea_orm::{ConnectionTrait, DatabaseTransaction, Statement, TransactionTrait};
use serde_json::{Value, json};

use crate::helpers::{Buyer, Platform, count, spawn_platform, spawn_saga};

/// What a client sees of one answer: status, `Retry-After`, and the body's exact bytes.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    fn code(&self) -> Value {
        serde_json::from_str::<Value>(&self.body).unwrap()["code"].clone()
    }
}

/// A POST as `b`, with `pass` as `X-Queue-Token` (none if `None`) and `key` as
/// `Idempotency-Key`; the helpers' `pay`/`charge` parse the body, these tests need its bytes.
async fn post(
    p: &Platform,
    b: &Buyer,
    path: &str,
    body: Value,
    key: Option<&str>,
    pass: Option<&str>,
) -> Answer {
    let mut req = reqwest::Client::new()
        .post(p.payment.url(path))
        .bearer_auth(&b.session)
        .json(&body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(t) = pass {
        req = req.header("x-queue-token", t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    Answer {
        status,
        retry_after,
        body: res.text().await.unwrap(),
    }
}

async fn pay(p: &Platform, b: &Buyer, reservation: i64, key: Option<&str>) -> Answer {
    let body = json!({"reservation_id": reservation});
    post(p, b, "/api/payments", body, key, Some(&b.pass)).await
}

async fn payments_and_debits(p: &Platform) -> (i64, i64) {
    (
        count(&p.payment_db, "SELECT count(*)::bigint AS n FROM payments").await,
        count(
            &p.payment_db,
            "SELECT count(*)::bigint AS n FROM ledger WHERE kind = 'PAYMENT'",
        )
        .await,
    )
}

fn assert_all_the_same(answers: &[Answer], status: u16) {
    assert_eq!(answers[0].status, status, "{:?}", answers[0]);
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "every answer is the first, byte for byte: {answers:?}"
    );
}

#[tokio::test]
async fn retries_replay_the_201_after_the_pass_is_retired_and_a_new_key_is_already_paid() {
    let p = spawn_saga(|e| e).await;
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let b = p.buyers(1, concert).await.remove(0);
    p.charge(&b, json!(10_000), None).await;
    let id = p.hold(&b, schedule, vec![3]).await["id"].as_i64().unwrap();

    let first = join_all((0..50).map(|_| pay(&p, &b, id, Some("buy-3")))).await;
    assert_all_the_same(&first, 201);
    assert_eq!(payments_and_debits(&p).await, (1, 1));
    assert_eq!(p.balance(&b).await, 9000);

    // The purchase settles: the seat is confirmed and users-api retires the queue pass.
    eventually(
        "the reservation to be confirmed",
        Duration::from_secs(30),
        || async { (p.reservation(&b, id).await["status"] == "CONFIRMED").then_some(()) },
    )
    .await;
    let keys = QueueKeys::new(p.redis());
    eventually(
        "the queue pass to be retired",
        Duration::from_secs(30),
        || async {
            ActiveQueuePass::check(&keys, b.user_id, &b.pass, Utc::now())
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;

    let again = join_all((0..50).map(|_| pay(&p, &b, id, Some("buy-3")))).await;
    assert_all_the_same(&again, 201);
    assert_eq!(
        again[0], first[0],
        "the replay is the first 201, byte for byte"
    );

    // Paying it again with another key: ALREADY_PAID, not 401, with the retired pass or none.
    let retired = pay(&p, &b, id, Some("buy-3-again")).await;
    let body = json!({"reservation_id": id});
    let no_pass = post(
        &p,
        &b,
        "/api/payments",
        body.clone(),
        Some("buy-3-other"),
        None,
    )
    .await;
    let no_key = post(&p, &b, "/api/payments", body, None, None).await;
    for a in [&retired, &no_pass, &no_key] {
        assert_eq!((a.status, a.code()), (409, json!("ALREADY_PAID")), "{a:?}");
    }
    assert_eq!(payments_and_debits(&p).await, (1, 1));
    assert_eq!(p.balance(&b).await, 9000);
    p.assert_money_invariants().await;
}

#[tokio::test]
async fn a_key_with_another_body_is_refused_and_a_refusal_is_replayed() {
    let p = spawn_platform(|e| e).await;
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let b = p.buyers(1, concert).await.remove(0);
    p.charge(&b, json!(1500), None).await;
    let r1 = p.hold(&b, schedule, vec![1]).await["id"].as_i64().unwrap();
    let r2 = p.hold(&b, schedule, vec![2]).await["id"].as_i64().unwrap();

    let paid = pay(&p, &b, r1, Some("k1")).await;
    assert_eq!(paid.status, 201, "{paid:?}");
    // An unpaid reservation still needs the pass; that 401 is not the key's answer.
    let body = json!({"reservation_id": r2});
    let no_pass = post(&p, &b, "/api/payments", body, Some("k2"), None).await;
    assert_eq!(
        (no_pass.status, no_pass.code()),
        (401, json!("QUEUE_TOKEN_INVALID"))
    );
    assert!(
        no_pass.body.contains("missing X-Queue-Token"),
        "{no_pass:?}"
    );
    let short = pay(&p, &b, r2, Some("k2")).await;
    assert_eq!(
        (short.status, short.code()),
        (402, json!("INSUFFICIENT_BALANCE"))
    );

    // The first answer stands, even once the wallet could pay.
    p.charge(&b, json!(10_000), None).await;
    assert_eq!(pay(&p, &b, r2, Some("k2")).await, short);

    let reused = pay(&p, &b, r2, Some("k1")).await;
    assert_eq!(
        (reused.status, reused.code()),
        (422, json!("IDEMPOTENCY_KEY_REUSED"))
    );
    assert_eq!(pay(&p, &b, r1, Some("k1")).await, paid);
    assert_eq!(p.reservation(&b, r2).await["status"], "HELD");
    assert_eq!(payments_and_debits(&p).await, (1, 1));
    assert_eq!(p.balance(&b).await, 10_500);
    p.assert_money_invariants().await;
}

#[tokio::test]
async fn fifty_concurrent_charges_with_one_key_credit_once() {
    let p = spawn_platform(|e| e).await;
    let b = p.buyers(1, 1).await.remove(0);
    let charge = || {
        let body = json!({"amount": 7000});
        post(&p, &b, "/api/wallet/charges", body, Some("top-up"), None)
    };
    let answers = join_all((0..50).map(|_| charge())).await;
    assert_all_the_same(&answers, 201);
    assert_eq!(
        count(
            &p.payment_db,
            "SELECT count(*)::bigint AS n FROM ledger WHERE kind = 'CHARGE'"
        )
        .await,
        1
    );
    assert_eq!(p.balance(&b).await, 7000);
    p.assert_money_invariants().await;
}

/// Plays a first request with `key` that is still running: its idempotency row, uncommitted.
async fn first_request_running(
    p: &Platform,
    b: &Buyer,
    key: &str,
    hash: &str,
) -> DatabaseTransaction {
    let txn = p.payment_db.begin().await.unwrap();
    txn.execute_raw(Statement::from_sql_and_values(
        txn.get_database_backend(),
        "INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ($1, $2, $3)",
        [b.user_id.into(), key.into(), hash.into()],
    ))
    .await
    .unwrap();
    txn
}

/// Until a request is waiting for the key's row: a payment's first try (`pay_at_once`, whose
/// own statement waits inside it) or the general path's claim.
async fn a_retry_waits(p: &Platform) {
    eventually(
        "a retry to wait for the key",
        Duration::from_secs(30),
        || async {
            (count(
                &p.payment_db,
                "SELECT count(*)::bigint AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
               AND (query LIKE 'INSERT INTO idempotency_keys%' \
                    OR query LIKE 'SELECT pay_at_once(%')",
            )
            .await
                > 0)
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_key_still_in_use_is_waited_for_then_409_with_retry_after() {
    let p = spawn_platform(|e| e).await;
    let (concert, schedule) = p.concert_with_schedule(10).await;
    let b = p.buyers(1, concert).await.remove(0);
    p.charge(&b, json!(10_000), None).await;
    let id = p.hold(&b, schedule, vec![1]).await["id"].as_i64().unwrap();

    // Past the wait, both keyed routes answer 409 with Retry-After and change nothing.
    let paying = first_request_running(&p, &b, "pay-1", &format!("payment:{id}")).await;
    let charging = first_request_running(&p, &b, "charge-1", "charge:500").await;
    let (paid, charged) = tokio::join!(
        pay(&p, &b, id, Some("pay-1")),
        post(
            &p,
            &b,
            "/api/wallet/charges",
            json!({"amount": 500}),
            Some("charge-1"),
            None
        ),
    );
    for a in [&paid, &charged] {
        assert_eq!(
            (a.status, a.code()),
            (409, json!("IDEMPOTENCY_KEY_IN_USE")),
            "{a:?}"
        );
        assert!(a.retry_after.is_some(), "{a:?}");
    }
    assert_eq!(payments_and_debits(&p).await, (0, 0));
    assert_eq!(p.balance(&b).await, 10_000);

    // A retry waiting when the first request answers gets that answer.
    let answer = json!({"type": "about:blank", "title": "Payment Required", "status": 402,
        "detail": "the wallet does not hold 1000", "code": "INSUFFICIENT_BALANCE"});
    let (replayed, ()) = tokio::join!(pay(&p, &b, id, Some("pay-1")), async {
        a_retry_waits(&p).await;
        paying
            .execute_raw(Statement::from_sql_and_values(
                paying.get_database_backend(),
                "UPDATE idempotency_keys SET status_code = 402, response_body = $1 WHERE key = 'pay-1'",
                [answer.clone().into()],
            ))
            .await
            .unwrap();
        paying.commit().await.unwrap();
    });
    assert_eq!(replayed.status, 402);
    assert_eq!(
        serde_json::from_str::<Value>(&replayed.body).unwrap(),
        answer
    );

    // A retry waiting when the first request fails without an answer does the work itself.
    let (charged, ()) = tokio::join!(
        post(
            &p,
            &b,
            "/api/wallet/charges",
            json!({"amount": 500}),
            Some("charge-1"),
            None
        ),
        async {
            a_retry_waits(&p).await;
            charging.rollback().await.unwrap();
        }
    );
    assert_eq!(charged.status, 201, "{charged:?}");
    let again = post(
        &p,
        &b,
        "/api/wallet/charges",
        json!({"amount": 500}),
        Some("charge-1"),
        None,
    )
    .await;
    assert_eq!(again, charged);
    assert_eq!(p.balance(&b).await, 10_500);
    assert_eq!(payments_and_debits(&p).await, (0, 0));
    p.assert_money_invariants().await;
}
