//! The money invariants (DESIGN §9, 2 and 3) read from live data, for batch's watchdog: no
//! money made or lost, and every wallet equal to its ledger and never negative.

use crate::store::stmt;
use sea_orm::{ConnectionTrait, DbErr};

/// Every unit of money that ever came in or went out, and what the wallets hold, read in
/// one statement (one snapshot: a balance changes in the transaction of its ledger row, so
/// the figures agree under any concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MoneyTotals {
    pub charged: i64,
    pub paid: i64,
    pub refunded: i64,
    pub balances: i64,
}

impl MoneyTotals {
    /// charged − paid + refunded − balances: zero when no money was made or lost; positive
    /// when money left the wallets without a ledger row, negative when it appeared in them.
    pub fn discrepancy(&self) -> i64 {
        self.charged - self.paid + self.refunded - self.balances
    }
}

/// The totals of the whole ledger and of every wallet: the closed months' totals
/// (`ledger_closed`, kept by the archive job) and a scan of the open months only (the
/// partitions before `ledger_closed.before` are pruned when the statement runs), so its cost
/// stays that of a month or two however many years the ledger keeps.
pub async fn money_totals<C: ConnectionTrait>(db: &C) -> Result<MoneyTotals, DbErr> {
    let row = db
        .query_one_raw(stmt(
            db,
            "WITH open AS ( \
               SELECT COALESCE(sum(amount) FILTER (WHERE kind = 'CHARGE'), 0) AS charged, \
                      COALESCE(sum(amount) FILTER (WHERE kind = 'PAYMENT'), 0) AS paid, \
                      COALESCE(sum(amount) FILTER (WHERE kind = 'REFUND'), 0) AS refunded \
               FROM ledger WHERE created_at >= (SELECT before FROM ledger_closed)) \
             SELECT (c.charged + o.charged)::bigint AS charged, \
                    (c.paid + o.paid)::bigint AS paid, \
                    (c.refunded + o.refunded)::bigint AS refunded, \
                    (SELECT COALESCE(sum(balance), 0)::bigint FROM wallets) AS balances \
             FROM ledger_closed c, open o",
            vec![],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("money totals".into()))?;
    Ok(MoneyTotals {
        charged: row.try_get("", "charged")?,
        paid: row.try_get("", "paid")?,
        refunded: row.try_get("", "refunded")?,
        balances: row.try_get("", "balances")?,
    })
}

/// Of up to `sample` wallets picked at random, how many differ from the sum of their ledger
/// or from their last ledger row's `balance_after`, or are negative. A sample keeps the check
/// cheap however many wallets there are; every run draws another: the `sample` wallets from
/// a random user id on (wrapping round to the first), read by the primary key. Drawing them
/// one by one (`ORDER BY random()`) read and sorted every wallet each time: 61 of the check's
/// 103 ms with 394,000 wallets. A wallet's closed months are read from
/// `ledger_closed_wallets`, its open ones from their partitions only.
pub async fn wallets_off_their_ledger<C: ConnectionTrait>(
    db: &C,
    sample: u32,
) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(stmt(
            db,
            "WITH start AS MATERIALIZED ( \
               SELECT floor(random() * (COALESCE((SELECT max(user_id) FROM wallets), 0) + 1))::bigint AS id), \
             picked AS MATERIALIZED (SELECT * FROM ( \
               (SELECT user_id, balance FROM wallets WHERE user_id >= (SELECT id FROM start) \
                ORDER BY user_id LIMIT $1) \
               UNION ALL \
               (SELECT user_id, balance FROM wallets WHERE user_id < (SELECT id FROM start) \
                ORDER BY user_id LIMIT $1)) w LIMIT $1) \
             SELECT count(*)::bigint AS off FROM picked p \
             LEFT JOIN ledger_closed_wallets c ON c.user_id = p.user_id \
             LEFT JOIN LATERAL ( \
               SELECT COALESCE(sum(CASE kind WHEN 'PAYMENT' THEN -amount ELSE amount END), 0) AS total \
               FROM ledger l WHERE l.user_id = p.user_id \
                 AND l.created_at >= (SELECT before FROM ledger_closed)) s ON true \
             LEFT JOIN LATERAL ( \
               SELECT balance_after FROM ledger l WHERE l.user_id = p.user_id \
                 AND l.created_at >= (SELECT before FROM ledger_closed) \
               ORDER BY id DESC LIMIT 1) last ON true \
             WHERE p.balance < 0 \
                OR p.balance <> COALESCE(c.total, 0) + s.total \
                OR p.balance <> COALESCE(last.balance_after, c.balance_after, 0)",
            vec![i64::from(sample).into()],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("wallet sample".into()))?;
    row.try_get("", "off")
}
