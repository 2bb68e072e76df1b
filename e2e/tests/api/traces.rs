//! One purchase is one trace: the fan's `traceparent` on `POST /api/payments` is continued by
//! payment-api, stored with its outbox row, carried through Kafka by the relay, continued by
//! concert-api's settlement, stored again with the confirmation, and continued by users-api
//! as it retires the fan's queue pass. The payment goes through the gateway, which passes the
//! context on; its hold is not on the hold board, so payment-api asks concert-api for it, in
//! the same trace. The services export to an OTLP receiver in this test.

use std::collections::HashMap;
use std::time::Duration;

use common::testkit::eventually;
use e2e::otlp::{CONSUMER, OtlpReceiver, PRODUCER, ReceivedSpan, SERVER};
use e2e::{Client, Gateway, Platform};
use reqwest::Method;
use serde_json::json;

/// The fan's own trace: a trace id and the span id of the fan's request, as a browser's
/// instrumentation would send them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const FAN_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_purchase_is_one_trace_from_the_payment_to_the_retired_pass() {
    let receiver = OtlpReceiver::start().await;
    let platform = Platform::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        // Export within a fraction of a second, not the default five.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let _batch = platform
        .start_batch(&[("QUEUE_ADMIT_INTERVAL_MS", "200")])
        .await;
    let admin = platform.admin(&platform.users.url).await;
    let (concert_id, schedule_id) = admin
        .at(&platform.concert.url)
        .concert_on_sale("Traced", 20, 30000)
        .await;

    let mut fan = Client::new(&platform.users.url);
    fan.sign_up("traced_fan", "fan-password").await;
    let (status, _) = fan
        .at(&platform.payment.url)
        .post("/api/wallet/charges", json!({"amount": 50000}))
        .await;
    assert_eq!(status, 201);
    let pass = fan.join(concert_id).await;
    fan.until_pass(&pass, "ACTIVE", "batch to admit the fan")
        .await;
    fan.pass = Some(pass.clone());
    let (status, held) = fan
        .at(&platform.concert.url)
        .post(
            "/api/reservations",
            json!({"schedule_id": schedule_id, "seat_nos": [3]}),
        )
        .await;
    assert_eq!(status, 201, "{held}");
    // As if Redis had lost the note: payment-api must ask concert-api over HTTP.
    let id = held["id"].as_i64().expect("a reservation id");
    platform.hold_board().take_down(id).await.unwrap();

    let gateway = Gateway::start(&platform, &[]).await;
    let payments = fan.at(&gateway.url);
    let (status, paid) = payments
        .send(
            payments
                .request(Method::POST, "/api/payments")
                .header("traceparent", format!("00-{TRACE_ID}-{FAN_SPAN}-01"))
                .json(&json!({"reservation_id": held["id"]})),
        )
        .await;
    assert_eq!(status, 201, "{paid}");
    fan.until_pass(&pass, "EXPIRED", "the fan's queue pass to be retired")
        .await;

    // The last hop is users-api handling the confirmation. Each service exports on its own
    // schedule, so the last hop can arrive before the ones it hangs from: wait until the
    // chain from it reaches the fan's request.
    let spans = eventually(
        "the whole path from the fan's request to users-api's retirement span",
        Duration::from_secs(30),
        || async {
            let spans = receiver.trace(TRACE_ID);
            path_to_the_retirement(&spans).is_some().then_some(spans)
        },
    )
    .await;
    let path = path_to_the_retirement(&spans).expect("complete above");
    assert_eq!(
        path,
        vec![
            ("payment-api", SERVER, "POST /api/payments"),
            ("payment-api", PRODUCER, "payment.completed publish"),
            ("concert-api", CONSUMER, "payment.completed process"),
            ("concert-api", PRODUCER, "reservation.confirmed publish"),
            ("users-api", CONSUMER, "reservation.confirmed process"),
        ],
        "the hops from the payment to the retired pass; all spans: {spans:#?}"
    );
    // payment-api's check of the reservation reached concert-api in the same trace.
    let payment = spans
        .iter()
        .find(|s| s.name == "POST /api/payments")
        .expect("on the path");
    assert!(
        spans.iter().any(|s| s.service == "concert-api"
            && s.kind == SERVER
            && s.name == "GET /internal/reservations/{id}"
            && s.parent_span_id == payment.span_id),
        "concert-api answered payment-api's call within the trace: {spans:#?}"
    );
}

/// The hops from the fan's request to users-api's retirement span, each the parent of the one
/// after it, once every one of them has arrived; `None` while some are still on their way.
fn path_to_the_retirement(spans: &[ReceivedSpan]) -> Option<Vec<(&str, i32, &str)>> {
    let by_id: HashMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut at = spans
        .iter()
        .find(|s| s.service == "users-api" && s.kind == CONSUMER)?;
    let mut path = Vec::new();
    loop {
        path.push((at.service.as_str(), at.kind, at.name.as_str()));
        if at.parent_span_id == FAN_SPAN {
            path.reverse();
            return Some(path);
        }
        at = by_id.get(at.parent_span_id.as_str())?;
    }
}
