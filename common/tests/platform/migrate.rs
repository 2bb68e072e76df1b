//! Migrations under the advisory lock: replicas starting together migrate exactly once.

use common::testkit::TestDatabase;
use sea_orm::{ConnectionTrait, Statement};

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
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 2);
}
