//! The `payments_unsettled` gauge: after each reconciliation pass, batch exports how many
//! COMPLETED payments are still neither confirmed nor refunded, by age — here with
//! concert-api unreachable, so the backstop cannot settle them and they stay counted.

use std::time::Duration;

use common::testkit::{StubCatalogue, TestApp, eventually};
use sea_orm::ConnectionTrait;

use crate::helpers::{World, figure};

#[tokio::test]
async fn batch_exports_unsettled_payments_by_age() {
    let world = World::new().await;
    let env = world
        .env()
        .with("CONCERT_API_URL", StubCatalogue::unreachable_url())
        .with("CONCERT_API_TIMEOUT_MS", "200")
        .with("BATCH_RECONCILE_INTERVAL_MS", "100")
        .with("BATCH_LEASE_MS", "600");
    world
        .payment_db
        .connect()
        .await
        .execute_unprepared(
            "INSERT INTO payments (user_id, reservation_id, amount, status, created_at, refunded_at, confirmed_at) VALUES \
             (1, 1, 1000, 'COMPLETED', now() - interval '15 minutes', NULL, NULL), \
             (1, 2, 1000, 'COMPLETED', now() - interval '5 minutes', NULL, NULL), \
             (1, 3, 1000, 'COMPLETED', now() - interval '60 seconds', NULL, NULL), \
             (1, 5, 1000, 'REFUNDED', now() - interval '15 minutes', now(), NULL), \
             (1, 6, 1000, 'COMPLETED', now() - interval '15 minutes', NULL, now())",
        )
        .await
        .unwrap();
    let batch = TestApp::start(
        batch::Application::build(batch::Config::from_env(&env).unwrap())
            .await
            .unwrap(),
    );
    let c = reqwest::Client::new();
    eventually(
        "the gauge after a reconciliation pass",
        Duration::from_secs(30),
        || {
            let (c, url) = (c.clone(), batch.url("/metrics"));
            async move {
                let metrics = c.get(url).send().await.ok()?.text().await.ok()?;
                // No age is near a boundary: none is crossed within the wait.
                [("30s", 3), ("120s", 2), ("600s", 1)]
                    .iter()
                    .all(|&(age, n)| gauge(&metrics, age) == Some(n))
                    .then_some(())
            }
        },
    )
    .await;
}

/// The value of `payments_unsettled{older_than="<age>", …}` in a Prometheus text page.
fn gauge(metrics: &str, age: &str) -> Option<i64> {
    figure(
        metrics,
        &format!(r#"payments_unsettled{{older_than="{age}""#),
    )
    .map(|v| v as i64)
}
