//! The seed's index study, on PostgreSQL: does "upcoming schedules" use an index range scan?
//!
//! Loads 480,000 schedules (100 concerts × 4,800, one every 3 hours over ~1.6 years) into a
//! scratch database, then runs the schedule-range queries behind `GET
//! /api/concerts/{id}/schedules?available=true` — by date range, and by concert + date range
//! — for ~1,000 rows and for a large share of rows, without and with the indexes of the
//! concert schema. Prints the median time of several runs and the plan's access path
//! (`EXPLAIN (ANALYZE, BUFFERS)`), as a Markdown table.
//!
//! cargo run --release -p concert-api --example index_study
//! (INDEX_STUDY_ADMIN_URL overrides the admin connection, default postgres@127.0.0.1/postgres)

use std::time::Instant;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

const CONCERTS: i64 = 100;
const PER_CONCERT: i64 = 4_800;
const RUNS: usize = 7;

struct Case {
    name: &'static str,
    sql: String,
}

async fn exec(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn plan(db: &DatabaseConnection, sql: &str) -> (String, String) {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) {sql}"),
        ))
        .await
        .expect("explain");
    let lines: Vec<String> = rows
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap_or_default())
        .collect();
    let access = lines
        .iter()
        .find_map(|l| {
            [
                "Index Only Scan",
                "Index Scan",
                "Bitmap Heap Scan",
                "Seq Scan",
                "Parallel Seq Scan",
            ]
            .into_iter()
            .find(|n| l.contains(n))
            .map(|n| {
                let on = l
                    .split(" on ")
                    .nth(1)
                    .map(|r| r.split_whitespace().take(1).collect::<String>());
                match (n, on) {
                    ("Index Scan" | "Index Only Scan", Some(_)) => {
                        let idx = l
                            .split(" using ")
                            .nth(1)
                            .and_then(|r| r.split_whitespace().next())
                            .unwrap_or("");
                        format!("{n} ({idx})")
                    }
                    ("Bitmap Heap Scan", _) => {
                        let idx = lines
                            .iter()
                            .find_map(|b| b.split("Bitmap Index Scan on ").nth(1))
                            .and_then(|r| r.split_whitespace().next())
                            .unwrap_or("");
                        format!("{n} ({idx})")
                    }
                    _ => n.to_owned(),
                }
            })
        })
        .unwrap_or_else(|| "?".into());
    let buffers = lines
        .iter()
        .find(|l| l.trim_start().starts_with("Buffers:"))
        .map(|l| l.trim().trim_start_matches("Buffers: ").to_owned())
        .unwrap_or_default();
    (access, buffers)
}

async fn median_ms(db: &DatabaseConnection, sql: &str) -> (f64, usize) {
    let mut times = Vec::with_capacity(RUNS);
    let mut rows = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                sql.to_owned(),
            ))
            .await
            .expect("query")
            .len();
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    (times[RUNS / 2], rows)
}

#[tokio::main]
async fn main() {
    let admin_url = std::env::var("INDEX_STUDY_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("index_study_{}", std::process::id());
    let admin = Database::connect(&admin_url)
        .await
        .expect("connect as admin");
    exec(&admin, &format!("CREATE DATABASE {name}")).await;
    let url = format!(
        "{}/{name}",
        admin_url.rsplit_once('/').expect("URL with a database").0
    );
    let db = Database::connect(&url)
        .await
        .expect("connect to scratch database");

    exec(&db, concert_api::store::migration::SCHEMA).await;
    let started = Instant::now();
    exec(&db, &format!("INSERT INTO concerts (title, performer) SELECT 'Concert ' || n, 'Performer ' || n FROM generate_series(1, {CONCERTS}) n")).await;
    // Schedule k of concert c starts at base + k*3h + c minutes: every concert spans the
    // whole period, so a date range cuts across all of them.
    exec(
        &db,
        &format!(
            "INSERT INTO schedules (concert_id, starts_at, booking_opens_at, seat_count, price) \
             SELECT c, timestamptz '2027-01-01' + k * interval '3 hours' + c * interval '1 minute', \
                    timestamptz '2026-12-01', 50, 50000 \
             FROM generate_series(1, {CONCERTS}) c, generate_series(0, {PER_CONCERT} - 1) k"
        ),
    )
    .await;
    exec(&db, "VACUUM ANALYZE schedules").await;
    let total = CONCERTS * PER_CONCERT;
    eprintln!(
        "loaded {total} schedules in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let cols = "id, concert_id, starts_at, booking_opens_at, seat_count, price";
    // ~1,000 rows: 30 hours × 100 concerts / 3 h ≈ 1,000. Large share: the first 60% of the period.
    let cases = [
        Case {
            name: "date range, ~1,000 rows",
            sql: format!(
                "SELECT {cols} FROM schedules WHERE starts_at >= '2027-03-01' AND starts_at < '2027-03-01'::timestamptz + interval '30 hours' ORDER BY starts_at, id"
            ),
        },
        Case {
            name: "date range, ~60% of rows",
            sql: format!(
                "SELECT {cols} FROM schedules WHERE starts_at >= '2027-01-01' AND starts_at < '2027-12-01' ORDER BY starts_at, id"
            ),
        },
        Case {
            name: "concert + date range, ~1,000 rows",
            sql: format!(
                "SELECT {cols} FROM schedules WHERE concert_id = 42 AND starts_at >= '2027-03-01' AND starts_at < '2027-03-01'::timestamptz + interval '125 days' ORDER BY starts_at, id"
            ),
        },
        Case {
            name: "concert + date range, ~60% of its rows",
            sql: format!(
                "SELECT {cols} FROM schedules WHERE concert_id = 42 AND starts_at >= '2027-01-01' AND starts_at < '2027-12-01' ORDER BY starts_at, id"
            ),
        },
        // What the API actually runs: a page (limit 20, plus one to see if there is more).
        Case {
            name: "date range, ~60% of rows, one page (LIMIT 21)",
            sql: format!(
                "SELECT {cols} FROM schedules WHERE starts_at >= '2027-01-01' AND starts_at < '2027-12-01' ORDER BY starts_at, id LIMIT 21"
            ),
        },
        Case {
            name: "concert + date range, one page (LIMIT 21)",
            sql: format!(
                "SELECT {cols} FROM schedules WHERE concert_id = 42 AND starts_at >= '2027-01-01' AND starts_at < '2027-12-01' ORDER BY starts_at, id LIMIT 21"
            ),
        },
    ];

    let mut table = vec![
        format!("Schedules loaded: {total}. Median of {RUNS} runs each. PostgreSQL, this machine."),
        String::new(),
        "| query | rows | indexes | median ms | access path | buffers |".to_owned(),
        "|---|---:|---|---:|---|---|".to_owned(),
    ];
    for with_indexes in [false, true] {
        if with_indexes {
            exec(
                &db,
                "CREATE INDEX schedules_starts_at ON schedules (starts_at)",
            )
            .await;
            exec(
                &db,
                "CREATE INDEX schedules_concert_starts_at ON schedules (concert_id, starts_at)",
            )
            .await;
        } else {
            exec(&db, "DROP INDEX IF EXISTS schedules_starts_at").await;
            exec(&db, "DROP INDEX IF EXISTS schedules_concert_starts_at").await;
        }
        exec(&db, "ANALYZE schedules").await;
        for case in &cases {
            let (ms, rows) = median_ms(&db, &case.sql).await;
            let (access, buffers) = plan(&db, &case.sql).await;
            table.push(format!(
                "| {} | {rows} | {} | {ms:.2} | {access} | {buffers} |",
                case.name,
                if with_indexes { "with" } else { "without" }
            ));
        }
    }
    println!("{}", table.join("\n"));

    db.close().await.ok();
    exec(&admin, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
}
