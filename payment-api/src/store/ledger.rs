//! The ledger's monthly partitions (`migration::LEDGER_BY_MONTH`): which exist, what the
//! DEFAULT partition holds, and creating a month — the statements batch's archive job runs
//! (`domain::ledger`).

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, TransactionTrait};

use crate::store::stmt;

/// The partition that takes rows whose month has none (it must stay empty in normal running).
pub const DEFAULT_PARTITION: &str = "ledger_default";

/// A month's partition, named after its first day (UTC): `ledger_y2027m01`.
pub fn partition_name(month: NaiveDate) -> String {
    format!("ledger_y{:04}m{:02}", month.year(), month.month())
}

/// `[first, next)` of `month` as timestamptz literals in UTC.
fn bounds(month: NaiveDate) -> (String, String) {
    let next = month
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(NaiveDate::MAX);
    let literal = |d: NaiveDate| format!("{} 00:00:00+00", d.format("%Y-%m-%d"));
    (literal(month), literal(next))
}

/// Takes the upkeep's lock until `txn` ends, if nobody holds it: answers whether it did. One
/// archiver at a time keeps the partitions (the leader's job and `batch archive` may run
/// together): another's `ATTACH` waits for this one's reads of the DEFAULT partition, which
/// take seconds when it holds millions of rows, and would give up.
pub async fn lock_upkeep<C: ConnectionTrait>(txn: &C) -> Result<bool, DbErr> {
    #[derive(FromQueryResult)]
    struct Taken {
        taken: bool,
    }
    Ok(Taken::find_by_statement(stmt(
        txn,
        "SELECT pg_try_advisory_xact_lock(hashtext('ledger partitions')) AS taken",
        vec![],
    ))
    .one(txn)
    .await?
    .is_some_and(|t| t.taken))
}

/// Whether `month` has its partition of `ledger`.
pub async fn has_partition<C: ConnectionTrait>(db: &C, month: NaiveDate) -> Result<bool, DbErr> {
    #[derive(FromQueryResult)]
    struct Attached {
        attached: bool,
    }
    Ok(Attached::find_by_statement(stmt(
        db,
        "SELECT EXISTS (SELECT 1 FROM pg_inherits \
           WHERE inhparent = 'public.ledger'::regclass \
             AND inhrelid = to_regclass('public.' || $1)) AS attached",
        vec![partition_name(month).into()],
    ))
    .one(db)
    .await?
    .is_some_and(|a| a.attached))
}

/// The months (their first day, UTC) of the rows in the DEFAULT partition: months that had no
/// partition when those rows came.
pub async fn months_in_default<C: ConnectionTrait>(db: &C) -> Result<Vec<NaiveDate>, DbErr> {
    #[derive(FromQueryResult)]
    struct Month {
        month: NaiveDateTime,
    }
    Ok(Month::find_by_statement(stmt(
        db,
        "SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') AS month \
         FROM ledger_default ORDER BY 1",
        vec![],
    ))
    .all(db)
    .await?
    .into_iter()
    .map(|m| m.month.date())
    .collect())
}

/// Rows in the DEFAULT partition.
pub async fn rows_in_default<C: ConnectionTrait>(db: &C) -> Result<i64, DbErr> {
    #[derive(FromQueryResult)]
    struct Count {
        n: i64,
    }
    Ok(Count::find_by_statement(stmt(
        db,
        "SELECT count(*)::bigint AS n FROM ledger_default",
        vec![],
    ))
    .one(db)
    .await?
    .map_or(0, |c| c.n))
}

/// Creates `month`'s partition (call when [`has_partition`] says it has none), waiting at
/// most `lock_wait` for a lock, and answers how many rows it took over from the DEFAULT
/// partition.
///
/// Why not `CREATE TABLE … PARTITION OF`: that locks the whole ledger (ACCESS EXCLUSIVE on the
/// parent) while it checks the DEFAULT partition, so every payment would wait. Instead, in one
/// transaction: the month is created as a table of its own, the DEFAULT partition is locked
/// against new rows (reads go on), its rows of that month (normally none) move into the new
/// table, and `ATTACH PARTITION` adds it, which takes only a SHARE UPDATE EXCLUSIVE lock on
/// the ledger: inserts and reads go on, except that those touching the DEFAULT partition wait
/// the moment its (now empty for that month) contents are checked. Without the move, a row
/// already in DEFAULT for that month would make the attach fail. `IF NOT EXISTS`: a table
/// left by hand under that name is used.
///
/// The caller holds [`lock_upkeep`]: two creators of one month at once would both run the
/// `CREATE TABLE`, and the second fail. `None`: the month has its partition already.
pub async fn create_month(
    db: &DatabaseConnection,
    month: NaiveDate,
    lock_wait: std::time::Duration,
) -> Result<Option<u64>, DbErr> {
    let name = partition_name(month);
    let (from, to) = bounds(month);
    let columns = "id, user_id, kind, amount, balance_after, ref, created_at";
    let txn = db.begin().await?;
    common::db::bound_lock_waits(&txn, lock_wait).await?;
    if has_partition(&txn, month).await? {
        txn.rollback().await?;
        return Ok(None);
    }
    txn.execute_unprepared(&format!(
        "CREATE TABLE IF NOT EXISTS public.{name} (LIKE public.ledger INCLUDING CONSTRAINTS)"
    ))
    .await?;
    txn.execute_unprepared(&format!(
        "LOCK TABLE public.{DEFAULT_PARTITION} IN SHARE ROW EXCLUSIVE MODE"
    ))
    .await?;
    let moved = txn
        .execute_unprepared(&format!(
            "WITH moved AS ( \
                DELETE FROM public.{DEFAULT_PARTITION} \
                WHERE created_at >= '{from}' AND created_at < '{to}' RETURNING {columns}) \
             INSERT INTO public.{name} ({columns}) SELECT {columns} FROM moved"
        ))
        .await?
        .rows_affected();
    txn.execute_unprepared(&format!(
        "ALTER TABLE public.ledger ATTACH PARTITION public.{name} FOR VALUES FROM ('{from}') TO ('{to}')"
    ))
    .await?;
    txn.commit().await?;
    Ok(Some(moved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_is_named_and_bounded_by_its_first_day_in_utc() {
        let jan = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        assert_eq!(partition_name(jan), "ledger_y2027m01");
        assert_eq!(
            bounds(jan),
            (
                "2027-01-01 00:00:00+00".to_owned(),
                "2027-02-01 00:00:00+00".to_owned()
            )
        );
        let dec = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(bounds(dec).1, "2027-01-01 00:00:00+00");
    }
}
