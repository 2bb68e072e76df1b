//! Charges: exact under concurrency, idempotent, bounded, and every change in the ledger.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{count, spawn_platform};

#[tokio::test]
async fn a_hundred_concurrent_charges_add_up_exactly() {
    let p = spawn_platform(|e| e).await;
    let b = p.buyers(1, 1).await.remove(0);
    assert_eq!(p.balance(&b).await, 0, "a new wallet holds 0");
    let results = join_all((0..100).map(|_| p.charge(&b, json!(1000), None))).await;
    assert!(results.iter().all(|(s, _)| *s == 201), "{results:?}");
    assert_eq!(p.balance(&b).await, 100_000);
    assert_eq!(
        count(
            &p.payment_db,
            "SELECT count(*)::bigint AS n FROM ledger WHERE kind = 'CHARGE'"
        )
        .await,
        100
    );
    let page: Value = reqwest::Client::new()
        .get(p.payment.url("/api/wallet/transactions?limit=30"))
        .bearer_auth(&b.session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 30);
    assert_eq!(page["items"][0]["balance_after"], 100_000, "newest first");
    assert!(page["next_cursor"].is_string());
    p.assert_money_invariants().await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    let p = spawn_platform(|e| e).await;
    let b = p.buyers(1, 1).await.remove(0);
    let results = join_all((0..20).map(|_| p.charge(&b, json!(5000), Some("top-up-1")))).await;
    assert!(
        results.iter().all(|r| r == &results[0]),
        "every replay is the first answer"
    );
    assert_eq!(results[0].0, 201);
    assert_eq!(p.balance(&b).await, 5000, "charged once");
    let (status, body) = p.charge(&b, json!(6000), Some("top-up-1")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    let (status, _) = p.charge(&b, json!(5000), Some(&"k".repeat(65))).await;
    assert_eq!(status, 400);
    assert_eq!(p.balance(&b).await, 5000);
    p.assert_money_invariants().await;
}

#[tokio::test]
async fn bad_amounts_are_400_naming_the_field_and_change_nothing() {
    let p = spawn_platform(|e| e.with("WALLET_MAX_BALANCE", "10000")).await;
    let b = p.buyers(1, 1).await.remove(0);
    for amount in [
        json!(0),
        json!(-5),
        json!(1_000_001),
        json!(1.5),
        json!("100"),
        json!(1e30),
        json!(9223372036854775808u64),
        json!(null),
    ] {
        let (status, body) = p.charge(&b, amount.clone(), None).await;
        assert_eq!(status, 400, "{amount}");
        assert!(
            body["detail"].as_str().unwrap().contains("amount"),
            "{amount}: {body}"
        );
    }
    assert_eq!(
        count(&p.payment_db, "SELECT count(*)::bigint AS n FROM ledger").await,
        0
    );
    assert_eq!(p.charge(&b, json!(8000), None).await.0, 201);
    let (status, body) = p.charge(&b, json!(3000), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("BALANCE_LIMIT"))
    );
    assert_eq!(p.balance(&b).await, 8000);
    p.assert_money_invariants().await;
}
