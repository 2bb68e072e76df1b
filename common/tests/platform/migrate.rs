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

/// A migration a newer release applied, as sea-orm records it.
const NEWER: &str = "m20991231_000001_from_a_newer_release";

async fn versions(conn: &sea_orm::DatabaseConnection) -> Vec<String> {
    conn.query_all_raw(Statement::from_string(
        conn.get_database_backend(),
        "SELECT version FROM seaql_migrations ORDER BY version",
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get::<String>("", "version").unwrap())
    .collect()
}

/// A database migrated by this build, then by a newer release (a table and its migration's
/// row), with a connection and the migration lock's key.
async fn migrated_by_a_newer_release() -> (TestDatabase, sea_orm::DatabaseConnection, i64) {
    let db = TestDatabase::create().await;
    let conn = db.connect().await;
    let key = common::db::migration_lock_key("test");
    common::db::migrate::<TestMigrator>(&conn, key)
        .await
        .unwrap();
    conn.execute_unprepared(&format!(
        "CREATE TABLE from_a_newer_release (id bigint); \
         INSERT INTO seaql_migrations (version, applied_at) VALUES ('{NEWER}', 0)"
    ))
    .await
    .unwrap();
    (db, conn, key)
}

/// The release before a newer one starts on the database the newer one migrated (a pod
/// restarting during a rollout, or a rollback): it leaves the schema as it is and serves.
#[tokio::test]
async fn a_database_a_newer_release_migrated_is_left_as_it_is() {
    let (_db, conn, key) = migrated_by_a_newer_release().await;
    let before = versions(&conn).await;

    common::db::migrate::<TestMigrator>(&conn, key)
        .await
        .expect("an older build starts on a newer schema");
    assert_eq!(versions(&conn).await, before);
    conn.execute_unprepared("SELECT id FROM from_a_newer_release")
        .await
        .expect("the newer release's table is still there");
}

/// A database with a migration this build does not know and without one it has was migrated
/// by another line of releases: applying the build's on top of it is refused, naming both.
#[tokio::test]
async fn a_database_migrated_by_another_line_of_releases_is_refused() {
    let (_db, conn, key) = migrated_by_a_newer_release().await;
    conn.execute_unprepared(
        "DELETE FROM seaql_migrations WHERE version = 'm20261124_000001_effects'; \
         DROP TABLE effects",
    )
    .await
    .unwrap();
    let before = versions(&conn).await;

    let refused = common::db::migrate::<TestMigrator>(&conn, key)
        .await
        .expect_err("refused")
        .to_string();
    assert!(refused.contains(NEWER), "{refused}");
    assert!(refused.contains("m20261124_000001_effects"), "{refused}");
    assert_eq!(versions(&conn).await, before, "nothing applied");
    assert!(
        conn.execute_unprepared("SELECT 1 FROM effects")
            .await
            .is_err(),
        "the missing migration was not run"
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
