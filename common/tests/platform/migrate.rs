//! Migrations under the advisory lock: replicas starting together migrate exactly once.

use common::testkit::TestDatabase;
use sea_orm::{ConnectionTrait, Statement};
use sea_orm_migration::MigratorTrait;

use crate::helpers::TestMigrator;

#[tokio::test]
async fn concurrent_migrations_apply_once() {
    let db = TestDatabase::create().await;
    let mut runs = Vec::new();
    for _ in 0..8 {
        let conn = db.connect().await;
        runs.push(tokio::spawn(async move {
            common::db::migrate::<TestMigrator>(&conn, common::db::migration_lock_key("test")).await
        }));
    }
    for r in runs {
        r.await.unwrap().expect("every replica's migrate succeeds");
    }
    let conn = db.connect().await;
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT count(*)::bigint AS n FROM seaql_migrations",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get::<i64>("", "n").unwrap(),
        TestMigrator::migrations().len() as i64
    );
}

/// A lock-wait bound survives a transaction pooler: besides being sent at connect, it becomes
/// the role's default in the service's database, so a connection that sends no options (what
/// PgBouncer opens to the server) has it too.
#[tokio::test]
async fn a_lock_wait_bound_becomes_the_roles_default_in_the_database() {
    let db = TestDatabase::create().await;
    let env = common::config::Env::from_pairs([("TEST_DATABASE_URL", db.url.as_str())]);
    let cfg = common::config::DatabaseConfig::from_env(&env, "TEST_DATABASE_URL", "x")
        .unwrap()
        .with_lock_timeout(std::time::Duration::from_millis(1500));
    let service = common::startup::open_database::<TestMigrator>("test", &cfg)
        .await
        .expect("open and migrate");
    assert_eq!(show(&service, "lock_timeout").await, "1500ms");
    // The service's connections do without JIT compilation (common::db::connect).
    assert_eq!(show(&service, "jit").await, "off");

    let bare = db.connect().await;
    assert_eq!(
        show(&bare, "lock_timeout").await,
        "1500ms",
        "a connection without the option gets the bound from the role's default"
    );
    assert_eq!(show(&bare, "jit").await, "on", "PostgreSQL's default");
}

async fn show(conn: &sea_orm::DatabaseConnection, setting: &str) -> String {
    conn.query_one_raw(Statement::from_string(
        conn.get_database_backend(),
        format!("SHOW {setting}"),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index::<String>(0)
    .unwrap()
}
