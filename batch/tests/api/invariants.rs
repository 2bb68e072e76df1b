//! The invariant watchdog (DESIGN §9 on live data): silent while money moves under it in
//! parallel, and each invariant broken by hand shows on its own gauge.

use std::time::Duration;

use common::testkit::{StubCatalogue, TestApp, eventually};
use payment_api::store::wallet::{LedgerKind, credit, debit};
use sea_orm::{ConnectionTrait, TransactionTrait};

use crate::helpers::{World, figure, metrics};

const WALLETS: i64 = 20;

fn checks_done(page: &str) -> f64 {
    figure(
        page,
        r#"batch_job_runs_total{job="invariants",outcome="ok""#,
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn the_watchdog_stays_silent_while_money_moves_and_names_each_broken_invariant() {
    let world = World::new().await;
    let env = world
        .env()
        .with("CONCERT_API_URL", StubCatalogue::unreachable_url())
        .with("CONCERT_API_TIMEOUT_MS", "200")
        .with("BATCH_INVARIANTS_INTERVAL_MS", "10")
        .with("BATCH_LEASE_MS", "600");
    let batch = TestApp::start(
        batch::Application::build(batch::Config::from_env(&env).unwrap())
            .await
            .unwrap(),
    );
    eventually(
        "the watchdog's first check",
        Duration::from_secs(30),
        || {
            let batch = &batch;
            async move { (checks_done(&metrics(batch).await) >= 1.0).then_some(()) }
        },
    )
    .await;

    // 400 charges and payments on 20 wallets at once, through the ledger's own statements,
    // while the watchdog checks every 10 ms: a check that read a balance without its ledger
    // row (or the reverse) would count a broken invariant.
    let pay = world.payment_db.connect().await;
    let before = checks_done(&metrics(&batch).await);
    let now = chrono::Utc::now();
    let mut moves = tokio::task::JoinSet::new();
    for i in 0..400_i64 {
        let db = pay.clone();
        moves.spawn(async move {
            let user = i % WALLETS;
            let txn = db.begin().await.unwrap();
            let row = if i % 2 == 0 {
                credit(
                    &txn,
                    user,
                    1_000,
                    i64::MAX,
                    LedgerKind::Charge,
                    "charge",
                    now,
                )
                .await
            } else {
                debit(&txn, user, 300, &format!("payment:{i}"), now).await
            };
            row.unwrap();
            txn.commit().await.unwrap();
        });
    }
    while let Some(done) = moves.join_next().await {
        done.unwrap();
    }
    let page = metrics(&batch).await;
    assert!(
        checks_done(&page) > before,
        "the watchdog checked while money moved"
    );
    assert_eq!(
        figure(&page, r#"batch_job_items_total{job="invariants""#).unwrap_or(0.0),
        0.0,
        "no check found anything broken"
    );
    for invariant in [
        "money_conserved",
        "ledger_equals_balance",
        "seat_sold_once",
        "payment_settled_in_time",
    ] {
        let series = format!(r#"invariant_violations{{invariant="{invariant}""#);
        assert_eq!(figure(&page, &series), Some(0.0), "{invariant}");
    }

    // Now break each one by hand.
    // 500 units appear in a wallet with no ledger row behind them.
    pay.execute_unprepared("INSERT INTO wallets (user_id, balance) VALUES (999, 500)")
        .await
        .unwrap();
    // A payment taken 15 minutes ago that nobody settled (concert-api is unreachable here).
    pay.execute_unprepared(
        "INSERT INTO payments (user_id, reservation_id, amount, status, created_at) \
         VALUES (1, 77, 1000, 'COMPLETED', now() - interval '15 minutes')",
    )
    .await
    .unwrap();
    // Seat 7 of a coming date in two CONFIRMED reservations.
    world
        .concert_db
        .connect()
        .await
        .execute_unprepared(
            "INSERT INTO concerts (id, title, performer) VALUES (1, 'Show', 'Band'); \
             INSERT INTO schedules (id, concert_id, starts_at, booking_opens_at, seat_count, price) \
               VALUES (1, 1, now() + interval '30 days', now() - interval '1 day', 10, 1000); \
             INSERT INTO reservations (user_id, schedule_id, concert_id, seat_nos, amount, status, held_until) \
               VALUES (1, 1, 1, '{7}', 1000, 'CONFIRMED', now()), \
                      (2, 1, 1, '{7, 8}', 2000, 'CONFIRMED', now())",
        )
        .await
        .unwrap();
    eventually(
        "every broken invariant on its gauge",
        Duration::from_secs(30),
        || {
            let batch = &batch;
            async move {
                let page = metrics(batch).await;
                let reads = |invariant: &str| {
                    figure(
                        &page,
                        &format!(r#"invariant_violations{{invariant="{invariant}""#),
                    )
                };
                (reads("money_conserved") == Some(1.0)
                    && reads("ledger_equals_balance") == Some(1.0)
                    && reads("seat_sold_once") == Some(1.0)
                    && reads("payment_settled_in_time") == Some(1.0)
                    && figure(&page, "invariant_money_discrepancy") == Some(-500.0))
                .then_some(())
            }
        },
    )
    .await;
}
