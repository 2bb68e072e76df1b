//! The money audit the fault and restore tests end with, read from payment-api's database.

use sqlx::PgPool;

/// The ledger's sums and the counts of what breaks it.
#[derive(Debug)]
pub struct Money {
    pub charges: i64,
    pub debits: i64,
    pub refunds: i64,
    pub balances: i64,
    /// PAYMENT ledger rows per payment ≠ 1 (with its amount).
    pub debited_not_once: i64,
    /// REFUND ledger rows per payment ≠ 1 if REFUNDED, 0 otherwise.
    pub credited_wrongly: i64,
    /// Wallets whose balance is not the sum of their ledger.
    pub off_ledger: i64,
}

impl Money {
    pub async fn read(payment_db: &PgPool) -> Self {
        let row: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
               (SELECT coalesce(sum(amount), 0)::bigint FROM ledger WHERE kind = 'CHARGE'), \
               (SELECT coalesce(sum(amount), 0)::bigint FROM ledger WHERE kind = 'PAYMENT'), \
               (SELECT coalesce(sum(amount), 0)::bigint FROM ledger WHERE kind = 'REFUND'), \
               (SELECT coalesce(sum(balance), 0)::bigint FROM wallets), \
               (SELECT count(*) FROM payments p WHERE (SELECT count(*) FROM ledger l \
                  WHERE l.ref = 'payment:' || p.id AND l.kind = 'PAYMENT' AND l.amount = p.amount) <> 1), \
               (SELECT count(*) FROM payments p WHERE (SELECT count(*) FROM ledger l \
                  WHERE l.ref = 'refund:' || p.id AND l.kind = 'REFUND' AND l.amount = p.amount) \
                  <> (CASE p.status WHEN 'REFUNDED' THEN 1 ELSE 0 END)), \
               (SELECT count(*) FROM wallets w WHERE w.balance <> (SELECT coalesce(sum( \
                  CASE kind WHEN 'PAYMENT' THEN -amount ELSE amount END), 0) FROM ledger l \
                  WHERE l.user_id = w.user_id))",
        )
        .fetch_one(payment_db)
        .await
        .unwrap();
        Self {
            charges: row.0,
            debits: row.1,
            refunds: row.2,
            balances: row.3,
            debited_not_once: row.4,
            credited_wrongly: row.5,
            off_ledger: row.6,
        }
    }

    /// Not one unit made or lost: every payment debited once, every refund credited once,
    /// every wallet equal to its ledger, balances = charges − payments + refunds.
    pub fn assert_conserved(&self) {
        assert_eq!(
            self.debited_not_once, 0,
            "every payment debited exactly once: {self:?}"
        );
        assert_eq!(
            self.credited_wrongly, 0,
            "every refunded payment credited exactly once: {self:?}"
        );
        assert_eq!(
            self.off_ledger, 0,
            "every balance equals its ledger: {self:?}"
        );
        assert_eq!(
            self.balances,
            self.charges - self.debits + self.refunds,
            "money is conserved: balances = charges − payments + refunds"
        );
    }
}
