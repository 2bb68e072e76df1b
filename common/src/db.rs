//! PostgreSQL: connect with a sized pool, and run a service's migrations under an advisory
//! lock so several replicas starting at once migrate exactly once.

use std::ops::Deref;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, RuntimeErr, Statement,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::config::DatabaseConfig;

/// How long a pooled connection may sit unused before a checkout tests it (see `connect`).
pub const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn connect(cfg: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(cfg.url.expose().to_owned());
    opts.max_connections(cfg.pool_size)
        .min_connections(1)
        .connect_timeout(cfg.connect_timeout)
        .acquire_timeout(cfg.connect_timeout)
        // The pool's default sends PostgreSQL a Sync and waits for its answer before every
        // checkout: a round trip per transaction (about eight per purchase), a sixth of what
        // a short transaction costs both ends. A connection used within the last second is
        // handed out as it is; one idle longer is tested first, since that is the one a
        // restarted server or a proxy's idle timeout has cut. A connection that died unnoticed
        // fails its statement, which is answered 503 DEPENDENCY_UNAVAILABLE
        // (`is_unavailable`), and the pool drops it when it comes back.
        .test_before_acquire_if_idle_for(IDLE_BEFORE_PING)
        .sqlx_logging(false);
    // TLS only when the URL asks for it (`sslmode=require|verify-ca|verify-full`, with
    // `sslrootcert=PATH` for a private CA): without `sslmode` the connection stays plain, as it
    // was before TLS support, instead of libpq's `prefer`.
    let plain = crate::config::postgres_ssl_mode(cfg.url.expose()).is_none();
    // A connection parameter, sent once at connect: no statement per transaction.
    let lock_timeout = cfg
        .lock_timeout
        .map(|bound| format!("{}ms", bound.as_millis()));
    opts.map_sqlx_postgres_opts(move |mut o| {
        if plain {
            o = o.ssl_mode(sqlx::postgres::PgSslMode::Disable);
        }
        if let Some(ms) = &lock_timeout {
            o = o.options([("lock_timeout", ms.as_str())]);
        }
        // No JIT compilation: our statements follow indexes and gain nothing from it, but a
        // plan over the ledger's many monthly partitions is estimated dear enough to cross
        // `jit_above_cost` while run-time pruning leaves a month or two to read, and the
        // compilation then costs seconds (the watchdog's wallet sample: 4 s with JIT, 23 ms
        // without, on ten years of ledger).
        o.options([("jit", "off")])
    });
    Database::connect(opts).await
}

/// Makes a lock-wait bound the role's default in this database as well, so it holds on every
/// server connection, including those of a transaction pooler (PgBouncer) in front of the
/// database, which drops the `lock_timeout` a client sends when it connects. An ordinary role
/// may set its own defaults; if this one may not, the bound still holds on direct
/// connections, and the warning says what to run instead.
pub async fn persist_lock_timeout(db: &DatabaseConnection, bound: std::time::Duration) {
    let sql = format!(
        "DO $$BEGIN EXECUTE format('ALTER ROLE CURRENT_USER IN DATABASE %I SET lock_timeout = %L', \
         current_database(), '{}ms'); END$$",
        bound.as_millis()
    );
    if let Err(e) = db.execute_unprepared(&sql).await {
        tracing::warn!(error = %e, lock_timeout_ms = bound.as_millis() as u64,
            "could not make lock_timeout the role's default in this database; behind a \
             transaction pooler run ALTER ROLE <role> IN DATABASE <db> SET lock_timeout");
    }
}

/// Bounds how long the caller's transaction waits for any lock (`SET LOCAL lock_timeout`): a
/// background job (archival) gives a row up until its next pass rather than queue a sale
/// behind it.
pub async fn bound_lock_waits<C: ConnectionTrait>(
    txn: &C,
    bound: std::time::Duration,
) -> Result<(), DbErr> {
    txn.execute_unprepared(&format!("SET LOCAL lock_timeout = {}", bound.as_millis()))
        .await?;
    Ok(())
}

/// Runs `M`'s pending migrations inside one transaction that first takes
/// `pg_advisory_xact_lock(lock_key)`: a second replica waits, then finds nothing to do.
/// PostgreSQL DDL is transactional, so a failed migration leaves nothing half-applied.
///
/// A database a newer release has migrated further ([`Schema::Ahead`]) is left as it is, with
/// a warning: the release before keeps running on it, as every migration is written to let it
/// (README, "Migrations must stay compatible with the release still running"). Without this,
/// a pod of that release restarting during a rollout, or after a rollback, stopped at startup
/// ("Migration file of version ... is missing") and never came back.
pub async fn migrate<M: MigratorTrait>(
    db: &DatabaseConnection,
    lock_key: i64,
) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    // Waiting for another replica to finish migrating is expected: no lock bound here.
    txn.execute_unprepared("SET LOCAL lock_timeout = 0").await?;
    txn.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT pg_advisory_xact_lock($1)",
        [lock_key.into()],
    ))
    .await?;
    let applied = M::get_migration_models(&txn)
        .await?
        .into_iter()
        .map(|m| m.version);
    let known = M::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    match Schema::compare(known, applied) {
        Schema::Ahead(newer) => {
            tracing::warn!(newer = ?newer,
                "the database has migrations this build does not know, applied by a newer \
                 release: running on its schema without migrating");
        }
        Schema::Diverged { newer, missing } => {
            return Err(DbErr::Migration(format!(
                "the database has migrations this build does not know ({}) and lacks some it \
                 has ({}): it was migrated by another line of releases; refusing to migrate it",
                newer.join(", "),
                missing.join(", ")
            )));
        }
        Schema::Behind => M::up(&txn, None).await?,
    }
    txn.commit().await
}

/// A database's applied migrations against a build's.
#[derive(Debug)]
enum Schema {
    /// Every applied migration is the build's (some of the build's may still be to apply).
    Behind,
    /// Every one of the build's is applied, and these others too (a newer release's).
    Ahead(Vec<String>),
    /// Some applied ones are not the build's, and some of the build's are not applied.
    Diverged {
        newer: Vec<String>,
        missing: Vec<String>,
    },
}

impl Schema {
    fn compare(known: Vec<String>, applied: impl IntoIterator<Item = String>) -> Self {
        let applied: std::collections::BTreeSet<String> = applied.into_iter().collect();
        let newer: Vec<String> = applied
            .iter()
            .filter(|v| !known.contains(v))
            .cloned()
            .collect();
        if newer.is_empty() {
            return Self::Behind;
        }
        let missing: Vec<String> = known.into_iter().filter(|v| !applied.contains(v)).collect();
        if missing.is_empty() {
            Self::Ahead(newer)
        } else {
            Self::Diverged { newer, missing }
        }
    }
}

/// A stable advisory-lock key for a service's migrations.
pub fn migration_lock_key(service: &str) -> i64 {
    // FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in service.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Runs `sql`, a `DELETE … WHERE <time column> < $1`, with `before`; returns how many rows
/// went. The one shape of every retention rule (inbox, outbox, idempotency keys).
pub async fn delete_before<C: ConnectionTrait>(
    db: &C,
    sql: &str,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<u64, DbErr> {
    let res = db
        .execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            [before.into()],
        ))
        .await?;
    Ok(res.rows_affected())
}

/// Whether `e` says the database cannot be reached right now — no connection to be had, one
/// lost mid-statement, the server shutting down or restarting, out of connections — rather
/// than that a statement failed. Such an error is a 503 with `Retry-After` (the client's retry
/// will find it back), not a 500.
pub fn is_unavailable(e: &DbErr) -> bool {
    let runtime = match e {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(r) | DbErr::Exec(r) | DbErr::Query(r) => r,
        _ => return false,
    };
    let sea_orm::RuntimeErr::SqlxError(e) = runtime else {
        return false;
    };
    match e.as_ref() {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception), 57P01-03 (the server is shutting down,
        // crashed, or cannot take connections yet), 53300 (too many connections).
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
        _ => false,
    }
}

/// PostgreSQL's `lock_not_available` (SQLSTATE 55P03): `lock_timeout` passed.
pub fn is_lock_timeout(err: &DbErr) -> bool {
    has_sqlstate(err, "55P03")
}

/// Whether PostgreSQL refused the statement with SQLSTATE `code`.
pub fn has_sqlstate(err: &DbErr, code: &str) -> bool {
    matches!(
        err,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))
            if matches!(e.deref(), sea_orm::sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
    )
}

#[cfg(test)]
mod unavailable_tests {
    use std::sync::Arc;

    use super::*;

    fn runtime(e: sqlx::Error) -> sea_orm::RuntimeErr {
        sea_orm::RuntimeErr::SqlxError(Arc::new(e))
    }

    #[test]
    fn a_lost_or_unobtainable_connection_is_unavailable_and_a_bad_statement_is_not() {
        let reset = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_unavailable(&DbErr::Query(runtime(reset()))));
        assert!(is_unavailable(&DbErr::Exec(runtime(reset()))));
        assert!(is_unavailable(&DbErr::Conn(runtime(
            sqlx::Error::PoolTimedOut
        ))));
        assert!(is_unavailable(&DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout
        )));
        assert!(!is_unavailable(&DbErr::Query(runtime(
            sqlx::Error::RowNotFound
        ))));
        assert!(!is_unavailable(&DbErr::Custom(
            "invalid byte sequence".into()
        )));
        assert!(!is_unavailable(&DbErr::RecordNotFound("x".into())));
    }
}
