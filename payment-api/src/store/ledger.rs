//! The ledger's monthly partitions (`migration::LEDGER_BY_MONTH`): which exist, what the
//! DEFAULT partition holds, creating a month and closing the months that are over
//! (`migration::LEDGER_CLOSED_MONTHS`) — the statements batch's archive job runs
//! (`domain::archive`).

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

/// What [`close_before`] did: the months before `before` closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosedMonths {
    /// Every ledger row dated before this day (the first of a month, UTC) is now closed.
    pub before: NaiveDate,
    /// Rows added to the closed totals by this close.
    pub rows: u64,
    /// Wallets whose closed totals this close changed.
    pub wallets: u64,
    /// Partitions that refuse every change from now on, by name.
    pub partitions: Vec<String>,
}

/// The month (its first day) a partition of ours is named after, if `name` is one.
fn month_of_partition(name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix("ledger_y")?;
    let (year, month) = rest.split_once('m')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)
}

/// Closes the ledger's months before `before` (the first day of a month, UTC) that are not
/// closed yet, in one transaction (`migration::LEDGER_CLOSED_MONTHS`): their rows are added to
/// the closed totals, and each wallet's, and their partitions refuse any change from then on.
/// Waits at most `lock_wait` for a lock.
///
/// Call it for months over by a day or more: a payment's ledger row is dated by its
/// transaction's start, and one of an earlier month that committed after the close would be
/// counted in no total (the watchdog would report it; the DEFAULT partition's trigger refuses
/// such rows, a closed partition's every row). The caller holds [`lock_upkeep`].
///
/// `None`: nothing to close (closed already up to `before`), or the DEFAULT partition still
/// holds rows of those months (they wait for their partitions: the next pass).
pub async fn close_before(
    db: &DatabaseConnection,
    before: NaiveDate,
    lock_wait: std::time::Duration,
) -> Result<Option<ClosedMonths>, DbErr> {
    #[derive(FromQueryResult)]
    struct Due {
        behind: bool,
        stranded: bool,
    }
    #[derive(FromQueryResult)]
    struct Summed {
        rows: i64,
        wallets: i64,
    }
    #[derive(FromQueryResult)]
    struct Partition {
        name: String,
    }
    let at = format!("{} 00:00:00+00", before.format("%Y-%m-%d"));
    let txn = db.begin().await?;
    common::db::bound_lock_waits(&txn, lock_wait).await?;
    let due = Due::find_by_statement(stmt(
        &txn,
        "SELECT c.before < $1::timestamptz AS behind, \
                EXISTS (SELECT 1 FROM ledger_default WHERE created_at < $1::timestamptz) AS stranded \
         FROM ledger_closed c FOR UPDATE OF c",
        vec![at.clone().into()],
    ))
    .one(&txn)
    .await?;
    if !due.is_some_and(|d| d.behind && !d.stranded) {
        txn.rollback().await?;
        return Ok(None);
    }
    // One statement, one snapshot: the months' rows are read once (a materialised CTE),
    // summed per wallet (the last row's balance_after by id) and in all.
    let summed = Summed::find_by_statement(stmt(
        &txn,
        "WITH closing AS MATERIALIZED ( \
           SELECT id, user_id, kind, amount, balance_after FROM ledger \
           WHERE created_at >= (SELECT before FROM ledger_closed) AND created_at < $1::timestamptz), \
         wallets AS ( \
           INSERT INTO ledger_closed_wallets AS w (user_id, total, balance_after) \
           SELECT DISTINCT ON (user_id) user_id, \
                  sum(CASE kind WHEN 'PAYMENT' THEN -amount ELSE amount END) OVER (PARTITION BY user_id), \
                  balance_after \
           FROM closing ORDER BY user_id, id DESC \
           ON CONFLICT (user_id) DO UPDATE \
             SET total = w.total + excluded.total, balance_after = excluded.balance_after \
           RETURNING 1), \
         totals AS ( \
           SELECT count(*) AS rows, \
                  COALESCE(sum(amount) FILTER (WHERE kind = 'CHARGE'), 0) AS charged, \
                  COALESCE(sum(amount) FILTER (WHERE kind = 'PAYMENT'), 0) AS paid, \
                  COALESCE(sum(amount) FILTER (WHERE kind = 'REFUND'), 0) AS refunded \
           FROM closing) \
         UPDATE ledger_closed c SET before = $1::timestamptz, \
                charged = c.charged + t.charged, paid = c.paid + t.paid, refunded = c.refunded + t.refunded \
         FROM totals t \
         RETURNING t.rows::bigint AS rows, (SELECT count(*) FROM wallets)::bigint AS wallets",
        vec![at.into()],
    ))
    .one(&txn)
    .await?
    .ok_or_else(|| DbErr::RecordNotFound("ledger_closed".into()))?;
    let open = Partition::find_by_statement(stmt(
        &txn,
        "SELECT c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'public.ledger'::regclass \
           AND NOT EXISTS (SELECT 1 FROM pg_trigger t \
                           WHERE t.tgrelid = c.oid AND t.tgname = 'ledger_month_closed') \
         ORDER BY 1",
        vec![],
    ))
    .all(&txn)
    .await?;
    let mut partitions = Vec::new();
    for Partition { name } in open {
        if month_of_partition(&name).is_some_and(|m| m < before) {
            txn.execute_unprepared(&format!(
                "CREATE TRIGGER ledger_month_closed BEFORE INSERT OR UPDATE OR DELETE \
                 ON public.{name} FOR EACH ROW EXECUTE FUNCTION ledger_month_closed()"
            ))
            .await?;
            partitions.push(name);
        }
    }
    txn.commit().await?;
    Ok(Some(ClosedMonths {
        before,
        rows: summed.rows as u64,
        wallets: summed.wallets as u64,
        partitions,
    }))
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

    #[test]
    fn only_our_partitions_have_a_month() {
        let jan = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        assert_eq!(month_of_partition(&partition_name(jan)), Some(jan));
        for name in [
            DEFAULT_PARTITION,
            "ledger_y2027m1",
            "ledger_y2027m13",
            "ledger_old",
        ] {
            assert_eq!(month_of_partition(name), None, "{name}");
        }
    }
}
