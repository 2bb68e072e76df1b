//! The saga across real processes, without the gateway: concert-api, users-api and
//! payment-api as separate OS processes talking over HTTP and through the broker, batch
//! admitting from the line, each request sent straight to the service that owns it.

use std::time::Duration;

use common::testkit::eventually;
use e2e::{Client, Platform};
use serde_json::json;

#[tokio::test]
async fn pay_confirm_and_retire_across_three_service_processes() {
    let platform = Platform::start().await;
    let _batch = platform
        .start_batch(&[("QUEUE_ADMIT_INTERVAL_MS", "200")])
        .await;
    let admin = platform.admin(&platform.users.url).await;
    let (concert_id, schedule_id) = admin
        .at(&platform.concert.url)
        .concert_on_sale("Processes", 50, 30000)
        .await;

    // A fan signs up at users-api, funds the wallet at payment-api, joins the line.
    let mut fan = Client::new(&platform.users.url);
    fan.sign_up("fan", "fan-password").await;
    let (status, charged) = fan
        .at(&platform.payment.url)
        .post("/api/wallet/charges", json!({"amount": 100000}))
        .await;
    assert_eq!((status, charged["balance"].as_i64()), (201, Some(100_000)));
    let pass = fan.join(concert_id).await;
    fan.until_pass(&pass, "ACTIVE", "batch to admit the fan")
        .await;
    fan.pass = Some(pass.clone());

    let (status, held) = fan
        .at(&platform.concert.url)
        .post(
            "/api/reservations",
            json!({"schedule_id": schedule_id, "seat_nos": [7, 8]}),
        )
        .await;
    assert_eq!(status, 201, "{held}");
    let reservation = held["id"].as_i64().unwrap();
    let payments = fan.at(&platform.payment.url);
    let (status, paid) = payments
        .post("/api/payments", json!({"reservation_id": reservation}))
        .await;
    assert_eq!(
        (status, paid["amount"].as_i64()),
        (201, Some(60_000)),
        "{paid}"
    );

    let concerts = fan.at(&platform.concert.url);
    let path = format!("/api/reservations/{reservation}");
    eventually(
        "CONFIRMED, through the broker between processes",
        Duration::from_secs(30),
        || async {
            let (_, r) = concerts.get(&path).await;
            (r["status"] == "CONFIRMED").then_some(())
        },
    )
    .await;
    fan.until_pass(&pass, "EXPIRED", "the fan's queue token to be retired")
        .await;
    let (_, wallet) = payments.get("/api/wallet").await;
    assert_eq!(wallet["balance"], 40_000);
    let (_, ledger) = payments.get("/api/wallet/transactions").await;
    let kinds: Vec<&str> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["PAYMENT", "CHARGE"]);
    let (_, mine) = payments.get("/api/payments").await;
    assert_eq!(mine["items"][0]["status"], "COMPLETED");
    let (status, _) = concerts
        .post(
            "/api/reservations",
            json!({"schedule_id": schedule_id, "seat_nos": [9]}),
        )
        .await;
    assert_eq!(status, 401, "the retired token no longer admits its holder");
}
