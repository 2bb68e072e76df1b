//! The whole journey of one fan, as a client sees it: every request through the nginx gateway
//! to the three service processes, with batch (its own process) admitting from the line.
//! Sign up → log in → charge → join → wait on the SSE stream until ACTIVE → seat map → hold →
//! pay → CONFIRMED → token retired → wallet, ledger and payment history right.

use std::time::Duration;

use common::testkit::eventually;
use e2e::{Client, Gateway, Platform};
use serde_json::json;

#[tokio::test]
async fn a_fan_buys_two_seats_through_the_gateway() {
    let platform = Platform::start().await;
    let _batch = platform
        .start_batch(&[("QUEUE_ADMIT_INTERVAL_MS", "200")])
        .await;
    let gateway = Gateway::start(&platform, &[]).await;
    let gw = gateway.url.clone();

    // The operator's admin puts a concert on sale.
    let admin = platform.admin(&gw).await;
    let (concert_id, schedule_id) = admin.concert_on_sale("Journey", 50, 45000).await;

    // A fan signs up, logs in and funds the wallet.
    let mut fan = Client::new(&gw);
    let user = fan.sign_up("journey_fan", "journey-password").await;
    let (status, me) = fan.get("/api/users/me").await;
    assert_eq!((status, &me["id"]), (200, &user["id"]));
    let (status, charged) = fan
        .post_once(
            "/api/wallet/charges",
            "journey-charge-1",
            json!({"amount": 100000}),
        )
        .await;
    assert_eq!((status, charged["balance"].as_i64()), (201, Some(100_000)));

    // It finds the concert's open schedule and joins the line.
    let (_, open) = fan
        .get(&format!(
            "/api/concerts/{concert_id}/schedules?available=true"
        ))
        .await;
    assert_eq!(open["items"][0]["id"].as_i64(), Some(schedule_id));
    assert_eq!(open["items"][0]["available_seats"], 50);
    let pass = fan.join(concert_id).await;

    // Until admitted the pass opens nothing; then the stream, through the gateway unbuffered,
    // carries ACTIVE (batch admits) and ends.
    let statuses = fan
        .stream_until_end(&format!("/api/queue/tokens/{pass}/events"))
        .await;
    let last = statuses.last().expect("the stream carried a status");
    assert_eq!(last["status"], "ACTIVE", "{statuses:?}");
    assert!(last["active_until"].is_string());
    fan.pass = Some(pass.clone());

    // The seat map, a hold, and the seats held in the map.
    let (status, map) = fan
        .get(&format!("/api/schedules/{schedule_id}/seats"))
        .await;
    assert_eq!(status, 200, "{map}");
    let seats = map["seats"].as_array().unwrap();
    assert_eq!(seats.len(), 50);
    assert!(seats.iter().all(|s| s["status"] == "AVAILABLE"));
    let (status, held) = fan
        .post(
            "/api/reservations",
            json!({"schedule_id": schedule_id, "seat_nos": [21, 22]}),
        )
        .await;
    assert_eq!((status, held["status"].as_str()), (201, Some("HELD")));
    assert_eq!(held["amount"], 90_000);
    let reservation_id = held["id"].as_i64().unwrap();
    let (_, map) = fan
        .get(&format!("/api/schedules/{schedule_id}/seats"))
        .await;
    assert_eq!(map["seats"][20]["status"], "HELD");
    assert_eq!(map["seats"][21]["status"], "HELD");

    // Payment; the amount comes from the reservation.
    let (status, payment) = fan
        .post_once(
            "/api/payments",
            "journey-pay-1",
            json!({"reservation_id": reservation_id, "amount": 1}),
        )
        .await;
    assert_eq!(
        (status, payment["amount"].as_i64()),
        (201, Some(90_000)),
        "{payment}"
    );
    let payment_id = payment["id"].clone();

    let path = format!("/api/reservations/{reservation_id}");
    let confirmed = eventually("CONFIRMED", Duration::from_secs(30), || async {
        let (_, r) = fan.get(&path).await;
        (r["status"] == "CONFIRMED").then_some(r)
    })
    .await;
    assert_eq!(confirmed["payment_id"], payment_id);
    fan.until_pass(&pass, "EXPIRED", "the token to be retired")
        .await;
    let (status, refused) = fan
        .get(&format!("/api/schedules/{schedule_id}/seats"))
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (401, Some("QUEUE_TOKEN_INVALID")),
        "a retired token opens nothing"
    );

    // Everything the fan can read agrees.
    let (_, wallet) = fan.get("/api/wallet").await;
    assert_eq!(wallet["balance"], 10_000);
    let (_, ledger) = fan.get("/api/wallet/transactions").await;
    let entries: Vec<(&str, i64, i64)> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["amount"].as_i64().unwrap(),
                e["balance_after"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![("PAYMENT", 90_000, 10_000), ("CHARGE", 100_000, 100_000)]
    );
    let (_, payments) = fan.get("/api/payments").await;
    let items = payments["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "COMPLETED");
    assert_eq!(items[0]["reservation_id"], reservation_id);
    let (_, mine) = fan.get("/api/reservations").await;
    assert_eq!(mine["items"][0]["status"], "CONFIRMED");
    let schedules = format!("/api/concerts/{concert_id}/schedules?available=true");
    eventually(
        "the public list to count 48 seats left (it is cached for seconds)",
        Duration::from_secs(30),
        || async {
            let (_, open) = fan.get(&schedules).await;
            (open["items"][0]["available_seats"] == 48).then_some(())
        },
    )
    .await;
}
