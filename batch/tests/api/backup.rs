//! Local backups against the real PostgreSQL: a backup is a folder of verified dumps whose
//! counts are the live tables'; a restore makes fresh databases with the same counts and
//! never overwrites; retention keeps the newest and nothing else is touched; a dead database
//! fails the backup without leaving anything that looks like one. Backup folders go to a
//! private directory under the system's temporary one, removed when the test ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use batch::backup::{self, Target};
use chrono::{TimeDelta, Utc};
use common::config::SecretUrl;
use common::testkit::{TestDatabase, admin_database_url, unique_id};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

use crate::helpers::World;

/// A directory removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("batch-backups-{}", unique_id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The world's three databases with rows in their inbox and outbox, and idempotency keys in
/// payment-api's.
async fn seeded_world() -> (World, Vec<DatabaseConnection>) {
    let world = World::new().await;
    // In the order of a backup (`backup::targets`).
    let dbs = vec![
        world.concert_db.connect().await,
        world.payment_db.connect().await,
        world.users_db.connect().await,
    ];
    for (i, db) in dbs.iter().enumerate() {
        db.execute_unprepared(&format!(
            "INSERT INTO inbox (event_id, consumer, received_at) \
             SELECT gen_random_uuid(), 'c' || n, now() FROM generate_series(1, {}) n",
            10 + i
        ))
        .await
        .unwrap();
        db.execute_unprepared(
            "INSERT INTO outbox (event_id, topic, key, payload, created_at) \
             SELECT gen_random_uuid(), 't', 'k' || n, '{}', now() FROM generate_series(1, 5) n",
        )
        .await
        .unwrap();
    }
    dbs[1]
        .execute_unprepared(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at) \
             VALUES (1, 'a', 'h', now()), (2, 'b', 'h', now())",
        )
        .await
        .unwrap();
    // Two settled payments: reservation 1 confirmed long before any backup of the test,
    // reservation 2 just now (a restore must settle it again).
    dbs[1]
        .execute_unprepared(
            "INSERT INTO payments (user_id, reservation_id, amount, status, created_at, confirmed_at) \
             VALUES (1, 1, 100, 'COMPLETED', now() - interval '3 hours', now() - interval '3 hours'), \
                    (1, 2, 100, 'COMPLETED', now(), now())",
        )
        .await
        .unwrap();
    (world, dbs)
}

fn targets(world: &World) -> Vec<Target> {
    backup::targets(&batch::Config::from_env(&world.env()).unwrap())
}

/// The world's databases in the order of a backup.
fn test_databases(world: &World) -> [&TestDatabase; 3] {
    [&world.concert_db, &world.payment_db, &world.users_db]
}

/// Databases of the server whose name starts with `prefix`.
async fn databases_like(prefix: &str) -> Vec<String> {
    let admin = Database::connect(admin_database_url()).await.unwrap();
    let rows = admin
        .query_all_raw(Statement::from_sql_and_values(
            admin.get_database_backend(),
            "SELECT datname::text AS name FROM pg_database WHERE starts_with(datname, $1)",
            [prefix.into()],
        ))
        .await
        .unwrap();
    admin.close().await.ok();
    rows.iter()
        .map(|r| r.try_get::<String>("", "name").unwrap())
        .collect()
}

/// A fresh restore suffix starting with `prefix`, and the databases a restore with it makes,
/// dropped when the guards go.
fn restore_suffix(world: &World, prefix: &str) -> (String, Vec<TestDatabase>) {
    let suffix = format!("{prefix}{}", &unique_id()[1..9]);
    let restored = test_databases(world)
        .iter()
        .map(|d| TestDatabase::named(&format!("{}{suffix}", d.name)))
        .collect();
    (suffix, restored)
}

/// The sequences of `db` whose last value is below [`backup::ID_GAP`].
async fn behind_the_gap(db: &DatabaseConnection) -> Vec<String> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT sequencename::text AS name FROM pg_sequences \
             WHERE coalesce(last_value, 0) < $1",
            [backup::ID_GAP.into()],
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get::<String>("", "name").unwrap())
        .collect()
}

async fn counts(db: &DatabaseConnection) -> BTreeMap<String, i64> {
    backup::count_rows(db).await.unwrap()
}

#[tokio::test]
async fn a_backup_is_a_folder_of_dumps_verified_against_the_live_counts() {
    let (world, dbs) = seeded_world().await;
    let dir = TempDir::new();

    let manifest = backup::take(dir.path(), &targets(&world), Utc::now(), Duration::ZERO)
        .await
        .unwrap();

    let folder = dir.path().join(&manifest.backup);
    assert!(folder.is_dir(), "{manifest:?}");
    assert_eq!(backup::read_manifest(&folder).unwrap(), manifest);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        std::slice::from_ref(&manifest.backup),
        "no .partial is left"
    );
    assert_eq!(manifest.databases.len(), 3);
    for ((entry, db), test_db) in manifest
        .databases
        .iter()
        .zip(&dbs)
        .zip(test_databases(&world))
    {
        assert_eq!(entry.database, test_db.name);
        let dump = std::fs::metadata(folder.join(&entry.file)).unwrap();
        assert!(entry.bytes > 0);
        assert_eq!(dump.len(), entry.bytes);
        let live = counts(db).await;
        assert!(live["inbox"] >= 10, "{live:?}");
        assert_eq!(entry.verification.tables, live, "{}", entry.database);
        assert_eq!(entry.verification.rows, live.values().sum::<i64>());
        assert_eq!(
            databases_like(&format!("{}_verify_", test_db.name)).await,
            Vec::<String>::new(),
            "the scratch database is dropped"
        );
        eprintln!(
            "figure: {} ({} rows): dump {} bytes in {:.2} s, verified in {:.2} s",
            entry.database,
            entry.verification.rows,
            entry.bytes,
            entry.seconds,
            entry.verification.seconds
        );
    }
}

#[tokio::test]
async fn a_restore_makes_fresh_databases_with_the_same_counts_and_never_overwrites() {
    let (world, dbs) = seeded_world().await;
    let dir = TempDir::new();
    let targets = targets(&world);
    let manifest = backup::take(dir.path(), &targets, Utc::now(), Duration::ZERO)
        .await
        .unwrap();
    let folder = dir.path().join(&manifest.backup);
    // Dropped at the end whatever happens.
    let (suffix, restored_dbs) = restore_suffix(&world, "_r");

    let mut lines = Vec::new();
    let restored = backup::restore(&folder, &suffix, &targets, |r| lines.push(r.clone()))
        .await
        .unwrap();

    assert_eq!(lines, restored);
    assert_eq!(restored.len(), 3);
    let mut restored_counts = Vec::new();
    for ((r, live), target) in restored.iter().zip(&dbs).zip(&restored_dbs) {
        assert_eq!(r.restored_as, target.name);
        assert!(r.counts_match, "{r:?}");
        let conn = target.connect().await;
        let got = counts(&conn).await;
        assert_eq!(got, counts(live).await, "{}", r.restored_as);
        assert_eq!(r.ids_advanced_by, backup::ID_GAP);
        if r.service == "payment-api" {
            assert_eq!(r.payments_reopened, Some(1), "{r:?}");
            let reopened = conn
                .query_all_raw(Statement::from_string(
                    conn.get_database_backend(),
                    "SELECT reservation_id FROM payments WHERE confirmed_at IS NULL",
                ))
                .await
                .unwrap();
            let reopened: Vec<i64> = reopened
                .iter()
                .map(|r| r.try_get("", "reservation_id").unwrap())
                .collect();
            assert_eq!(
                reopened,
                [2],
                "only the confirmation seen since the backup began is forgotten"
            );
        } else {
            assert_eq!(r.payments_reopened, None, "{r:?}");
        }
        let behind = behind_the_gap(&conn).await;
        assert!(behind.is_empty(), "sequences not moved ahead: {behind:?}");
        restored_counts.push((conn, got));
    }

    let again = backup::restore(&folder, &suffix, &targets, |r| {
        panic!("nothing is restored a second time: {r:?}")
    })
    .await;
    let err = again.unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    for (conn, before) in &restored_counts {
        assert_eq!(
            &counts(conn).await,
            before,
            "the restored databases are untouched"
        );
    }
    for (conn, _) in restored_counts {
        conn.close().await.ok();
    }
}

#[tokio::test]
async fn retention_keeps_the_newest_backups_and_nothing_else_is_touched() {
    let dir = TempDir::new();
    let now = Utc::now();
    let name = |ago_minutes: i64| {
        (now - TimeDelta::minutes(ago_minutes))
            .format("%Y%m%dT%H%M%SZ")
            .to_string()
    };
    let complete: Vec<String> = [600, 500, 400, 300, 200].map(name).to_vec();
    for backup in &complete {
        std::fs::create_dir(dir.path().join(backup)).unwrap();
        std::fs::write(dir.path().join(backup).join("manifest.json"), "{}").unwrap();
    }
    let stale_partial = format!("{}.partial", name(120));
    let fresh_partial = format!("{}.partial", name(10));
    let no_manifest = name(900);
    let unrelated_dir = "notes".to_owned();
    for d in [&stale_partial, &fresh_partial, &no_manifest, &unrelated_dir] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let unrelated_file = format!("{}.txt", name(1000));
    std::fs::write(dir.path().join(&unrelated_file), "keep me").unwrap();

    let removed = backup::prune(dir.path(), 3, now).unwrap();

    assert_eq!(
        removed,
        [complete[0].clone(), complete[1].clone(), stale_partial]
    );
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut expected = vec![
        complete[2].clone(),
        complete[3].clone(),
        complete[4].clone(),
        fresh_partial,
        no_manifest,
        unrelated_dir,
        unrelated_file,
    ];
    expected.sort();
    assert_eq!(left, expected);
    assert_eq!(
        backup::prune(dir.path(), 3, now).unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_backup_with_an_unreachable_database_fails_and_leaves_no_backup() {
    let (world, _dbs) = seeded_world().await;
    let dir = TempDir::new();
    let mut targets = targets(&world);
    // Nothing listens on port 1: the connection is refused at once.
    // payment-api's is the second: concert-api's was dumped and verified before it.
    targets[1].db.url = SecretUrl::new("postgres://postgres@127.0.0.1:1/ticketing_payment");

    let err = backup::take(dir.path(), &targets, Utc::now(), Duration::ZERO)
        .await
        .unwrap_err();

    assert!(err.contains("ticketing_payment"), "{err}");
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            name.ends_with(".partial"),
            "only a .partial at most: {name}"
        );
    }
    assert_eq!(
        databases_like(&format!("{}_verify_", world.concert_db.name)).await,
        Vec::<String>::new(),
        "the databases verified before the failure leave no scratch database"
    );
}

/// Runs the batch binary with the world's settings plus `extra`; (exit ok, stdout, stderr).
fn batch_command(world: &World, args: &[&str], extra: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_batch"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (k, v) in world.vars(extra) {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_backup_and_restore_commands_exit_zero_only_when_everything_matched() {
    let (world, _dbs) = seeded_world().await;
    let dir = TempDir::new();
    let backup_dir = dir.path().to_str().unwrap().to_owned();
    let (ok, _, stderr) = batch_command(&world, &["restore", "x"], &[]);
    assert!(!ok && stderr.contains("usage: batch"), "{stderr}");
    let (ok, _, stderr) = batch_command(
        &world,
        &["backup", "--spread-secs", "soon"],
        &[("BACKUP_DIR", &backup_dir)],
    );
    assert!(!ok && stderr.contains("--spread-secs `soon`"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let (ok, stdout, stderr) = batch_command(&world, &["backup"], &[("BACKUP_DIR", &backup_dir)]);
    assert!(ok, "{stderr}");
    let manifest: backup::Manifest = serde_json::from_str(&stdout).unwrap();
    let folder = dir.path().join(&manifest.backup);
    let (suffix, _restored) = restore_suffix(&world, "_c");
    let folder = folder.to_str().unwrap();

    let (ok, stdout, stderr) =
        batch_command(&world, &["restore", folder, "--suffix", &suffix], &[]);
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines.iter().all(|l| l["counts_match"] == true), "{stdout}");

    let (ok, _, stderr) = batch_command(&world, &["restore", folder, "--suffix", &suffix], &[]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
}
