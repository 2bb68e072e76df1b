//! `loadtest round-trips`: what one short PostgreSQL transaction costs the client process and
//! its server backend, through a sea-orm pool of one connection, in four set-ups:
//!
//! - the pool's default test of a connection at every checkout (a Sync and its answer: one
//!   more round trip) or none (`common::db::connect` tests only a connection idle for a
//!   second or more);
//! - the statements issued from the thread whose runtime reads the socket (a current-thread
//!   runtime), or from another one (a multi-thread runtime's `block_on`, where a worker
//!   thread reads the socket and wakes the caller: what an actix worker does with a pool that
//!   the service's main runtime opened).
//!
//! Each transaction is `BEGIN`, `SELECT 1`, `COMMIT`, plus the test the pool runs when the
//! connection comes back, which cannot be turned off (sqlx 0.9). CPU is utime + stime from
//! /proc, of this process and of the backend (`pg_backend_pid()`), so the tool must run on
//! the database's machine. The set-ups alternate, `--rounds` times, so that a machine's drift
//! touches each alike.

use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, Statement, TransactionTrait};

use crate::waiting_room::probe::cpu_seconds;

/// One set-up's figures, per transaction.
struct Cost {
    wall_us: f64,
    client_us: f64,
    backend_us: f64,
}

async fn measure(url: &str, ping_every_checkout: bool, transactions: u32) -> anyhow::Result<Cost> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    if !ping_every_checkout {
        opts.test_before_acquire_if_idle_for(common::db::IDLE_BEFORE_PING);
    }
    let db = Database::connect(opts).await?;
    let backend: i32 = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT pg_backend_pid()",
        ))
        .await?
        .context("no row")?
        .try_get_by_index(0)?;
    let backend = u32::try_from(backend)?;
    let client = std::process::id();
    let (client0, backend0, started) =
        (cpu_seconds(client)?, cpu_seconds(backend)?, Instant::now());
    for _ in 0..transactions {
        let txn = db.begin().await?;
        txn.execute_unprepared("SELECT 1").await?;
        txn.commit().await?;
    }
    let wall = started.elapsed();
    // The last transaction's connection comes back to the pool on a task of its own.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (client1, backend1) = (cpu_seconds(client)?, cpu_seconds(backend)?);
    db.close().await?;
    let per = |s: f64| s * 1e6 / f64::from(transactions);
    Ok(Cost {
        wall_us: per(wall.as_secs_f64()),
        client_us: per(client1 - client0),
        backend_us: per(backend1 - backend0),
    })
}

pub fn run(url: &str, transactions: u32, rounds: u32) -> anyhow::Result<()> {
    println!(
        "{transactions} transactions (BEGIN; SELECT 1; COMMIT) per set-up and round, one pooled \
         connection; per transaction:"
    );
    println!(
        "{:<6} {:<42} {:<18} {:>8} {:>10} {:>11}",
        "round", "statements issued from", "checkout test", "wall us", "client us", "backend us"
    );
    for round in 1..=rounds {
        for same_thread in [false, true] {
            for ping in [true, false] {
                let runtime = if same_thread {
                    tokio::runtime::Builder::new_current_thread()
                } else {
                    tokio::runtime::Builder::new_multi_thread()
                }
                .enable_all()
                .build()?;
                let cost = runtime.block_on(measure(url, ping, transactions))?;
                println!(
                    "{round:<6} {:<42} {:<18} {:>8.1} {:>10.1} {:>11.1}",
                    if same_thread {
                        "the thread that reads the socket"
                    } else {
                        "another thread (woken by the reader)"
                    },
                    if ping {
                        "every checkout"
                    } else {
                        "idle >= 1 s only"
                    },
                    cost.wall_us,
                    cost.client_us,
                    cost.backend_us
                );
            }
        }
    }
    Ok(())
}
