//! Local logical backups (small deployments; production uses CloudNativePG, OPERATIONS.md).
//!
//! One backup is a folder `<BACKUP_DIR>/<UTC timestamp>/` holding `<database>.dump` per
//! service database (`pg_dump --format=custom`) and a `manifest.json`. pg_dump reads one
//! snapshot per database, so each dump is consistent in itself, but the three databases are
//! three snapshots taken seconds apart, not one instant. They are taken in the order that
//! leaves only one kind of disagreement ([`targets`]): a payment may be in the payment dump
//! while its reservation is still HELD in the concert one, or missing from it.
//! A restore therefore forgets the confirmations payment-api saw after the backup began,
//! and reconciliation settles those payments again, as it does after any lost event: it
//! confirms the payment or refunds it. A restore also moves every sequence far ahead
//! ([`ID_GAP`]), so no id handed out after the backup is handed out again.
//!
//! A backup is written into `<timestamp>.partial/` and renamed only once every dump has been
//! restored into a scratch database and its tables counted, so a folder that looks like a
//! backup always is one. The external tools run without a shell, with the URL of batch's
//! database settings, and stop at `DATABASE_CONNECT_TIMEOUT_SECS` when the server is gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use common::config::{DatabaseConfig, SecretUrl};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde::{Deserialize, Serialize};

use crate::Config;

/// The folder name of a backup taken at an instant, e.g. `20261203T141500Z`.
const FOLDER_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const PARTIAL: &str = ".partial";
const MANIFEST: &str = "manifest.json";
/// A `.partial` folder this old is what a crash left, not a backup in progress.
const PARTIAL_KEPT: TimeDelta = TimeDelta::hours(1);

/// Rows per table of every schema but PostgreSQL's own, in one query: `query_to_xml` runs
/// each table's `count(*)` inside the statement. Partitions are counted through their
/// parent. Tables outside `public` are named `schema.table`.
const COUNT_ROWS: &str = "SELECT CASE s.nspname WHEN 'public' THEN c.relname::text \
     ELSE s.nspname || '.' || c.relname END AS name, \
     (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', \
     s.nspname, c.relname), false, true, '')))[1]::text::bigint AS n \
     FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace \
     WHERE s.nspname <> 'information_schema' AND s.nspname NOT LIKE 'pg\\_%' \
       AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
     ORDER BY 1";

/// How far a restore moves every sequence of a restored database ahead of its last value.
/// Ids handed out after the backup, in the minutes that were lost, may still be named
/// elsewhere: by the database backed up after this one (a payment for a reservation the
/// concert dump never saw), by sessions and holds in Redis, by events in Kafka, by fans'
/// browsers. A new row must never take one of them. A billion is more than the platform
/// hands out between two backups, and a bigint has room for nine billion such jumps.
pub const ID_GAP: i64 = 1_000_000_000;

/// How much earlier than the backup's start a confirmation seen by payment-api is still
/// distrusted after a restore: the clocks of batch and payment-api may differ by this much.
const CLOCK_MARGIN: TimeDelta = TimeDelta::minutes(1);

/// Moves every sequence of the database [`ID_GAP`] ahead (a never-used one starts there).
fn advance_sequences() -> String {
    format!(
        "DO $$ DECLARE s record; BEGIN \
         FOR s IN SELECT schemaname, sequencename, last_value FROM pg_sequences LOOP \
           PERFORM setval(format('%I.%I', s.schemaname, s.sequencename), \
                          coalesce(s.last_value, 0) + {ID_GAP}); \
         END LOOP; END $$"
    )
}

/// One database to back up: the service that owns it and how batch reaches it.
#[derive(Clone, Debug)]
pub struct Target {
    pub service: &'static str,
    pub db: DatabaseConfig,
}

impl Target {
    /// The database's name, the path of its URL.
    pub fn database(&self) -> Result<String, String> {
        database_name(self.db.url.expose())
    }
}

/// The three service databases as batch's settings name them, in the order they are dumped.
/// Each later dump sees everything an earlier one refers to: a CONFIRMED reservation in the
/// concert dump has its payment in the payment dump (concert-api confirms only after
/// payment-api committed), and every user either names is in the users dump. The reverse,
/// a reservation confirmed by a payment that was never backed up, would leave a seat sold
/// for nothing; this order makes it impossible.
pub fn targets(config: &Config) -> Vec<Target> {
    vec![
        Target {
            service: "concert-api",
            db: config.concert_db.clone(),
        },
        Target {
            service: "payment-api",
            db: config.payment_db.clone(),
        },
        Target {
            service: "users-api",
            db: config.users_db.clone(),
        },
    ]
}

/// What the backup job needs: where, how many to keep, how often, and what.
#[derive(Clone, Debug)]
pub struct Plan {
    pub dir: PathBuf,
    pub keep: usize,
    pub every: Duration,
    pub targets: Vec<Target>,
    /// A pause between two databases: zero but in a restore drill, which widens the gap
    /// between the snapshots on purpose (`batch backup --spread-secs`).
    pub spread: Duration,
}

impl Plan {
    /// `None` while `BACKUP_DIR` is unset: backups are off.
    pub fn from_config(config: &Config) -> Option<Self> {
        let dir = config.backup.dir.clone()?;
        Some(Self {
            dir,
            keep: config.backup.keep,
            every: config.backup.every,
            targets: targets(config),
            spread: Duration::ZERO,
        })
    }

    /// Whether the newest complete backup is at least one interval old (or there is none).
    /// The job asks every minute rather than sleeping a whole interval, so a leader that
    /// changes or restarts more often than the interval still backs up on time.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        let every = TimeDelta::from_std(self.every).unwrap_or(TimeDelta::MAX);
        match complete_backups(&self.dir).last() {
            Some((taken, _)) => now - *taken >= every,
            None => true,
        }
    }

    /// One backup now, then retention.
    pub async fn run(&self, now: DateTime<Utc>) -> Result<Manifest, String> {
        let manifest = take(&self.dir, &self.targets, now, self.spread).await?;
        let removed = prune(&self.dir, self.keep, now)?;
        if !removed.is_empty() {
            tracing::info!(?removed, "old backups removed");
        }
        Ok(manifest)
    }
}

/// What a backup folder holds, as written to its `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The folder's name, the UTC instant it was started.
    pub backup: String,
    pub taken_at: DateTime<Utc>,
    pub databases: Vec<DatabaseBackup>,
}

impl Manifest {
    pub fn bytes(&self) -> u64 {
        self.databases.iter().map(|d| d.bytes).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatabaseBackup {
    pub service: String,
    pub database: String,
    /// The dump's file name inside the backup folder.
    pub file: String,
    pub bytes: u64,
    /// How long pg_dump took.
    pub seconds: f64,
    pub verification: Verification,
}

/// The dump restored into a scratch database (then dropped) and its tables counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub scratch_database: String,
    /// Rows per table of the `public` schema.
    pub tables: BTreeMap<String, i64>,
    pub rows: i64,
    /// How long the restore and the count took.
    pub seconds: f64,
}

/// One database as `restore` left it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Restored {
    pub service: String,
    pub database: String,
    pub restored_as: String,
    pub rows: i64,
    pub tables: BTreeMap<String, i64>,
    /// Whether every table has the rows the manifest recorded.
    pub counts_match: bool,
    /// How far its sequences were moved ahead ([`ID_GAP`]).
    pub ids_advanced_by: i64,
    /// payment-api's: the payments whose confirmation was forgotten, to be settled again
    /// ([`payment_api::reopen_settlement`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payments_reopened: Option<u64>,
}

/// Dumps and verifies every target, in order and `spread` apart, into `<dir>/<now>/`. On any
/// failure the partial folder is removed and nothing that looks like a backup is left.
pub async fn take(
    dir: &Path,
    targets: &[Target],
    now: DateTime<Utc>,
    spread: Duration,
) -> Result<Manifest, String> {
    let name = now.format(FOLDER_FORMAT).to_string();
    let done = dir.join(&name);
    let partial = dir.join(format!("{name}{PARTIAL}"));
    if done.exists() {
        return Err(format!("backup {} already exists", done.display()));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // `create_dir`, not `_all`: a second backup of the same second (the job and `batch backup`
    // at once) fails here instead of writing into the first one's folder.
    std::fs::create_dir(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let outcome = write_backup(&partial, &done, &name, targets, now, spread).await;
    if outcome.is_err()
        && let Err(e) = std::fs::remove_dir_all(&partial)
    {
        tracing::warn!(folder = %partial.display(), error = %e, "could not remove a failed backup");
    }
    outcome
}

async fn write_backup(
    partial: &Path,
    done: &Path,
    name: &str,
    targets: &[Target],
    now: DateTime<Utc>,
    spread: Duration,
) -> Result<Manifest, String> {
    let mut databases = Vec::with_capacity(targets.len());
    for (i, target) in targets.iter().enumerate() {
        if i > 0 && !spread.is_zero() {
            tracing::info!(?spread, next = target.service, "spreading the backup");
            tokio::time::sleep(spread).await;
        }
        databases.push(backup_one(partial, target).await?);
    }
    let manifest = Manifest {
        backup: name.to_owned(),
        taken_at: now,
        databases,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    let path = partial.join(MANIFEST);
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    if done.exists() {
        return Err(format!("backup {} already exists", done.display()));
    }
    std::fs::rename(partial, done).map_err(|e| format!("{}: {e}", done.display()))?;
    Ok(manifest)
}

async fn backup_one(folder: &Path, target: &Target) -> Result<DatabaseBackup, String> {
    let database = target.database()?;
    let file = format!("{database}.dump");
    let path = folder.join(&file);
    let started = Instant::now();
    run_tool(
        "pg_dump",
        &target.db,
        target.db.url.expose(),
        &[
            "--format=custom".into(),
            format!("--file={}", path.display()),
        ],
    )
    .await
    .map_err(|e| format!("{database}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let verification = verify(target, &database, &path)
        .await
        .map_err(|e| format!("{database}: verification: {e}"))?;
    tracing::info!(
        database,
        bytes,
        seconds,
        rows = verification.rows,
        "database backed up and verified"
    );
    Ok(DatabaseBackup {
        service: target.service.to_owned(),
        database,
        file,
        bytes,
        seconds,
        verification,
    })
}

/// Restores `dump` into a scratch database beside the live one, counts its tables, and drops
/// it whatever happened.
async fn verify(target: &Target, database: &str, dump: &Path) -> Result<Verification, String> {
    let started = Instant::now();
    let scratch = format!("{database}_verify_{}", short_random());
    let admin = maintenance(&target.db).await?;
    let outcome = match create_database(&admin, &scratch).await {
        Ok(()) => restore_and_count(&target.db, &scratch, dump).await,
        Err(e) => Err(e),
    };
    let dropped = admin
        .execute_unprepared(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote(&scratch)
        ))
        .await;
    admin.close().await.ok();
    let tables = outcome?;
    dropped.map_err(|e| format!("drop {scratch}: {e}"))?;
    Ok(Verification {
        scratch_database: scratch,
        rows: tables.values().sum(),
        tables,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `pg_restore` of `dump` into the existing, empty database `into`, then its row counts.
async fn restore_and_count(
    db: &DatabaseConfig,
    into: &str,
    dump: &Path,
) -> Result<BTreeMap<String, i64>, String> {
    let url = with_database(db.url.expose(), into)?;
    run_tool(
        "pg_restore",
        db,
        &url,
        &[
            "--no-owner".into(),
            "--exit-on-error".into(),
            dump.display().to_string(),
        ],
    )
    .await?;
    let conn = connect_to(db, into).await?;
    let counts = count_rows(&conn).await;
    conn.close().await.ok();
    counts
}

/// Rows per table of the `public` schema of the database `conn` is connected to.
pub async fn count_rows(conn: &DatabaseConnection) -> Result<BTreeMap<String, i64>, String> {
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            COUNT_ROWS,
        ))
        .await
        .map_err(|e| format!("count rows: {e}"))?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get("", "name").map_err(|e| e.to_string())?;
            let n: i64 = r.try_get("", "n").map_err(|e| e.to_string())?;
            Ok((name, n))
        })
        .collect()
}

/// Deletes complete backups beyond the newest `keep`, and `.partial` folders older than an
/// hour (by the instant in their name). Anything else in `dir` is left alone. Returns the
/// names removed.
pub fn prune(dir: &Path, keep: usize, now: DateTime<Utc>) -> Result<Vec<String>, String> {
    let complete = complete_backups(dir);
    let stale = partial_backups(dir)
        .into_iter()
        .filter(|(started, _)| now - *started > PARTIAL_KEPT);
    let old = complete
        .iter()
        .take(complete.len().saturating_sub(keep))
        .cloned();
    let mut removed = Vec::new();
    for (_, name) in old.chain(stale) {
        let path = dir.join(&name);
        std::fs::remove_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        removed.push(name);
    }
    Ok(removed)
}

/// Folders named like a backup and holding a manifest, oldest first.
fn complete_backups(dir: &Path) -> Vec<(DateTime<Utc>, String)> {
    backup_folders(dir, |name| {
        Some(name).filter(|n| dir.join(n).join(MANIFEST).is_file())
    })
}

/// Folders named `<backup name>.partial`, oldest first.
fn partial_backups(dir: &Path) -> Vec<(DateTime<Utc>, String)> {
    backup_folders(dir, |name| name.strip_suffix(PARTIAL))
}

/// The folders of `dir` whose name `stamp` maps to a backup instant, sorted by it.
fn backup_folders(
    dir: &Path,
    stamp: impl Fn(&str) -> Option<&str>,
) -> Vec<(DateTime<Utc>, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| {
            let taken = stamp(&name).and_then(parse_folder_name)?;
            Some((taken, name))
        })
        .collect();
    found.sort();
    found
}

fn parse_folder_name(name: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(name, FOLDER_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// Restores every database of the backup in `folder` into a fresh database named
/// `<database><suffix>` on its service's server, and compares its row counts with the
/// manifest's. Refuses before touching anything if one of those databases exists: a restore
/// never overwrites. `report` sees each database as it is done. Fails if a restore failed or
/// any count differs.
pub async fn restore(
    folder: &Path,
    suffix: &str,
    targets: &[Target],
    mut report: impl FnMut(&Restored),
) -> Result<Vec<Restored>, String> {
    check_suffix(suffix)?;
    let manifest = read_manifest(folder)?;
    let mut plan = Vec::with_capacity(manifest.databases.len());
    for entry in &manifest.databases {
        let target = targets
            .iter()
            .find(|t| t.service == entry.service)
            .ok_or_else(|| format!("{}: no database configured for it", entry.service))?;
        plan.push((entry, target, format!("{}{suffix}", entry.database)));
    }
    for (_, target, name) in &plan {
        refuse_existing(&target.db, name).await?;
    }
    let mut restored = Vec::with_capacity(plan.len());
    for (entry, target, name) in plan {
        let r = restore_one(folder, manifest.taken_at, entry, target, &name).await?;
        report(&r);
        restored.push(r);
    }
    let differ: Vec<&str> = restored
        .iter()
        .filter(|r| !r.counts_match)
        .map(|r| r.restored_as.as_str())
        .collect();
    if differ.is_empty() {
        Ok(restored)
    } else {
        Err(format!(
            "row counts differ from the manifest in {} (left in place for inspection)",
            differ.join(", ")
        ))
    }
}

async fn restore_one(
    folder: &Path,
    taken_at: DateTime<Utc>,
    entry: &DatabaseBackup,
    target: &Target,
    name: &str,
) -> Result<Restored, String> {
    let admin = maintenance(&target.db).await?;
    create_database(&admin, name).await?;
    let dump = folder.join(&entry.file);
    let reopen_since = (entry.service == "payment-api").then(|| taken_at - CLOCK_MARGIN);
    let counted = async {
        let tables = restore_and_count(&target.db, name, &dump).await?;
        let reopened = prepare_to_serve(&target.db, name, reopen_since).await?;
        Ok::<_, String>((tables, reopened))
    }
    .await;
    // A half-restored database is no use and would block the next attempt.
    if counted.is_err() {
        let _ = admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote(name)
            ))
            .await;
    }
    admin.close().await.ok();
    let (tables, payments_reopened) = counted.map_err(|e| format!("{name}: {e}"))?;
    Ok(Restored {
        service: entry.service.clone(),
        database: entry.database.clone(),
        restored_as: name.to_owned(),
        rows: tables.values().sum(),
        counts_match: tables == entry.verification.tables,
        tables,
        ids_advanced_by: ID_GAP,
        payments_reopened,
    })
}

/// What a restored database needs before services run on it: its sequences moved
/// [`ID_GAP`] ahead and, for payment-api's (`reopen_since`), the confirmations seen since the
/// concert database was dumped forgotten, so those payments are settled again (it was dumped
/// first, from that instant on, and may not have them). The payments reopened, if asked.
async fn prepare_to_serve(
    db: &DatabaseConfig,
    name: &str,
    reopen_since: Option<DateTime<Utc>>,
) -> Result<Option<u64>, String> {
    let conn = connect_to(db, name).await?;
    let prepared = async {
        conn.execute_unprepared(&advance_sequences())
            .await
            .map_err(|e| format!("move the sequences ahead: {e}"))?;
        match reopen_since {
            Some(since) => payment_api::reopen_settlement(&conn, since)
                .await
                .map(Some)
                .map_err(|e| format!("reopen the settlements since {since}: {e}")),
            None => Ok(None),
        }
    }
    .await;
    conn.close().await.ok();
    prepared
}

pub fn read_manifest(folder: &Path) -> Result<Manifest, String> {
    let path = folder.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A suffix makes a plain lower-case identifier of any database name.
fn check_suffix(suffix: &str) -> Result<(), String> {
    let plain = suffix
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if suffix.is_empty() || !plain {
        return Err(format!(
            "--suffix `{suffix}`: must be lower-case letters, digits and `_`, e.g. _restored"
        ));
    }
    Ok(())
}

async fn refuse_existing(db: &DatabaseConfig, name: &str) -> Result<(), String> {
    let admin = maintenance(db).await?;
    let found = admin
        .query_one_raw(Statement::from_sql_and_values(
            admin.get_database_backend(),
            "SELECT 1 AS n FROM pg_database WHERE datname = $1",
            [name.into()],
        ))
        .await;
    admin.close().await.ok();
    match found {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(format!(
            "database {name} already exists: a restore never overwrites; pick another suffix"
        )),
        Err(e) => Err(format!("look for {name}: {e}")),
    }
}

/// A one-connection pool to the server's `postgres` database, to create and drop others.
async fn maintenance(db: &DatabaseConfig) -> Result<DatabaseConnection, String> {
    connect_to(db, "postgres").await
}

/// A one-connection pool to `database` on `db`'s server, with `db`'s other settings.
async fn connect_to(db: &DatabaseConfig, database: &str) -> Result<DatabaseConnection, String> {
    let config = DatabaseConfig {
        url: SecretUrl::new(with_database(db.url.expose(), database)?),
        pool_size: 1,
        ..db.clone()
    };
    common::db::connect(&config)
        .await
        .map_err(|e| format!("connect to {}: {e}", config.url))
}

async fn create_database(admin: &DatabaseConnection, name: &str) -> Result<(), String> {
    admin
        .execute_unprepared(&format!("CREATE DATABASE {}", quote(name)))
        .await
        .map(|_| ())
        .map_err(|e| format!("create database {name}: {e}"))
}

/// Runs a PostgreSQL client tool (no shell) against the database of `url`, failing with
/// its stderr. The password goes in `PGPASSWORD`, not on the command line, where `ps` shows
/// it to every user of the machine. `PGCONNECT_TIMEOUT` makes a dead server fail the run
/// instead of hanging it.
async fn run_tool(
    program: &str,
    db: &DatabaseConfig,
    url: &str,
    args: &[String],
) -> Result<(), String> {
    let (url, password) = without_password(url);
    let mut command = tokio::process::Command::new(program);
    command
        .arg("--no-password")
        .arg(format!("--dbname={url}"))
        .args(args);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command
        .env(
            "PGCONNECT_TIMEOUT",
            db.connect_timeout.as_secs().max(1).to_string(),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!(
        "{program} failed ({}): {}",
        output.status,
        stderr.trim()
    ))
}

/// `url` without the password of its user, and that password, percent-decoded.
fn without_password(url: &str) -> (String, Option<String>) {
    let Some(after_scheme) = url.find("://").map(|i| i + 3) else {
        return (url.to_owned(), None);
    };
    let rest = &url[after_scheme..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_owned(), None);
    };
    let Some(colon) = rest[..at].find(':') else {
        return (url.to_owned(), None);
    };
    let password = percent_encoding::percent_decode_str(&rest[colon + 1..at])
        .decode_utf8_lossy()
        .into_owned();
    let stripped = format!("{}{}{}", &url[..after_scheme], &rest[..colon], &rest[at..]);
    (stripped, Some(password))
}

/// The database name of a `postgres://…/name?…` URL.
fn database_name(url: &str) -> Result<String, String> {
    let (_, path, _) = split_url(url)?;
    if path.is_empty() {
        return Err(format!("{}: no database name", SecretUrl::new(url)));
    }
    Ok(path.to_owned())
}

/// `url` with its database replaced by `database`, the query (TLS settings) kept.
fn with_database(url: &str, database: &str) -> Result<String, String> {
    let (base, _, query) = split_url(url)?;
    Ok(format!("{base}/{database}{query}"))
}

/// `(scheme://authority, database, ?query)` of a PostgreSQL URL.
fn split_url(url: &str) -> Result<(&str, &str, &str), String> {
    let after_scheme = url
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| format!("{}: not a URL", SecretUrl::new(url)))?;
    let (head, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    match head[after_scheme..].find('/') {
        Some(slash) => {
            let (base, path) = head.split_at(after_scheme + slash);
            Ok((base, &path[1..], query))
        }
        None => Ok((head, "", query)),
    }
}

/// A quoted SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Eight lower-case letters and digits: scratch names stay plain identifiers.
fn short_random() -> String {
    common::auth::random_token()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_query_kept() {
        let url = "postgres://app:pw@db:5432/ticketing_users?sslmode=require";
        assert_eq!(database_name(url).unwrap(), "ticketing_users");
        assert_eq!(
            with_database(url, "postgres").unwrap(),
            "postgres://app:pw@db:5432/postgres?sslmode=require"
        );
        assert_eq!(
            with_database("postgres://db", "x").unwrap(),
            "postgres://db/x"
        );
        assert!(database_name("postgres://db:5432").is_err());
    }

    #[test]
    fn the_password_leaves_the_url_for_the_environment() {
        assert_eq!(
            without_password("postgres://app:p%40ss@db:5432/ticketing_users?sslmode=require"),
            (
                "postgres://app@db:5432/ticketing_users?sslmode=require".to_owned(),
                Some("p@ss".to_owned())
            )
        );
        assert_eq!(
            without_password("postgres://postgres@127.0.0.1:5432/x"),
            ("postgres://postgres@127.0.0.1:5432/x".to_owned(), None)
        );
        assert_eq!(
            without_password("postgres://127.0.0.1/x?user=a"),
            ("postgres://127.0.0.1/x?user=a".to_owned(), None)
        );
    }

    #[test]
    fn only_backup_names_parse() {
        assert!(parse_folder_name("20261203T141500Z").is_some());
        for name in ["notes", "20261203T141500", "20261203T141500Z.old", "2026"] {
            assert!(parse_folder_name(name).is_none(), "{name}");
        }
    }

    #[test]
    fn a_backup_is_due_when_the_newest_complete_one_is_an_interval_old() {
        let dir = std::env::temp_dir().join(format!("batch-due-{}", short_random()));
        let plan = Plan {
            dir: dir.clone(),
            keep: 7,
            every: Duration::from_secs(6 * 3600),
            targets: Vec::new(),
            spread: Duration::ZERO,
        };
        let now = Utc::now();
        assert!(plan.due(now), "no folder yet");
        let at = |ago: TimeDelta| (now - ago).format(FOLDER_FORMAT).to_string();
        // Only a partial one, and one without a manifest: neither counts.
        std::fs::create_dir_all(dir.join(format!("{}{PARTIAL}", at(TimeDelta::minutes(5)))))
            .unwrap();
        std::fs::create_dir_all(dir.join(at(TimeDelta::minutes(10)))).unwrap();
        assert!(plan.due(now));
        let newest = dir.join(at(TimeDelta::hours(1)));
        std::fs::create_dir_all(&newest).unwrap();
        std::fs::write(newest.join(MANIFEST), "{}").unwrap();
        assert!(!plan.due(now));
        assert!(plan.due(now + TimeDelta::hours(5)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_suffix_is_a_plain_identifier_part() {
        assert!(check_suffix("_restored_1").is_ok());
        for bad in ["", "_Restored", "x; DROP", "a-b", "\""] {
            assert!(check_suffix(bad).is_err(), "{bad}");
        }
    }
}
