//! The invariant audit, read from the three databases after a run (DESIGN §9): every seat
//! sold once, every payment settled, no money made or lost, every wallet equal to its ledger.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::fixture::Platform;
use crate::report::{Check, Memory};

fn check(name: &str, ok: bool, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        ok,
        detail,
    }
}

/// (reservation id, status, payment id, amount) of every reservation of `concert`.
async fn reservations(
    p: &Platform,
    concert: i64,
) -> anyhow::Result<Vec<(i64, String, Option<i64>, i64)>> {
    Ok(sqlx::query_as(
        "SELECT id, status, payment_id, amount FROM reservations WHERE concert_id = $1",
    )
    .bind(concert)
    .fetch_all(&p.concert_db)
    .await?)
}

/// (payment id, reservation id, status, amount) of the payments of those reservations.
async fn payments(
    p: &Platform,
    reservations: &[i64],
) -> anyhow::Result<Vec<(i64, i64, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT id, reservation_id, status, amount FROM payments WHERE reservation_id = ANY($1)",
    )
    .bind(reservations)
    .fetch_all(&p.payment_db)
    .await?)
}

/// How the wait for settlement ended.
#[derive(Debug, Clone)]
pub struct Settled {
    /// Payments of the concert's reservations.
    pub payments: usize,
    /// COMPLETED payments neither CONFIRMED by their reservation nor refunded yet.
    pub open: usize,
    pub waited: Duration,
    pub limit: Duration,
}

impl Settled {
    pub fn describe(&self) -> String {
        if self.open == 0 {
            format!(
                "all {} payments within {:.1} s (would have waited up to {:.0} s)",
                self.payments,
                self.waited.as_secs_f64(),
                self.limit.as_secs_f64()
            )
        } else {
            format!(
                "{} of {} payments still unsettled after {:.1} s",
                self.open,
                self.payments,
                self.waited.as_secs_f64()
            )
        }
    }
}

/// Waits until every payment of the concert's reservations is settled (its reservation
/// CONFIRMED by it, or the payment REFUNDED), polling the databases, at most `within`: a
/// payment stranded by a crash is settled by the platform's backstop
/// (`PAYMENT_SETTLE_DIRECT_AFTER_SECS`), so the audit gives stragglers that long.
pub async fn settle(p: &Platform, concert: i64, within: Duration) -> anyhow::Result<Settled> {
    let started = Instant::now();
    loop {
        let rs = reservations(p, concert).await?;
        let confirmed: HashMap<i64, Option<i64>> = rs
            .iter()
            .filter(|r| r.1 == "CONFIRMED")
            .map(|r| (r.0, r.2))
            .collect();
        let ids: Vec<i64> = rs.iter().map(|r| r.0).collect();
        let ps = payments(p, &ids).await?;
        let open = ps
            .iter()
            .filter(|(id, res, status, _)| {
                status == "COMPLETED" && confirmed.get(res) != Some(&Some(*id))
            })
            .count();
        let waited = started.elapsed();
        if open == 0 || waited > within {
            return Ok(Settled {
                payments: ps.len(),
                open,
                waited,
                limit: within,
            });
        }
        // Quick polls for the usual sub-second stragglers, then gentler ones: a long wait is
        // for the backstop, minutes away, and each poll reads every reservation.
        let pause = if waited < Duration::from_secs(5) {
            200
        } else {
            1000
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// payment → CONFIRMED of every confirmed reservation of `concert`, both ends stamped by
/// PostgreSQL's clock (payments.created_at, reservations.updated_at).
pub async fn confirm_latencies(p: &Platform, concert: i64) -> anyhow::Result<Vec<Duration>> {
    let confirmed: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT payment_id, updated_at FROM reservations \
         WHERE concert_id = $1 AND status = 'CONFIRMED' AND payment_id IS NOT NULL",
    )
    .bind(concert)
    .fetch_all(&p.concert_db)
    .await?;
    let ids: Vec<i64> = confirmed.iter().map(|c| c.0).collect();
    let paid: HashMap<i64, DateTime<Utc>> = sqlx::query_as::<_, (i64, DateTime<Utc>)>(
        "SELECT id, created_at FROM payments WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&p.payment_db)
    .await?
    .into_iter()
    .collect();
    Ok(confirmed
        .iter()
        .filter_map(|(pid, at)| {
            let paid = paid.get(pid)?;
            (*at - *paid).to_std().ok()
        })
        .collect())
}

/// How many seats of `concert` are in `status`.
pub async fn seats_in_status(p: &Platform, concert: i64, status: &str) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM seats s JOIN schedules sc ON sc.id = s.schedule_id \
         WHERE sc.concert_id = $1 AND s.status = $2",
    )
    .bind(concert)
    .bind(status)
    .fetch_one(&p.concert_db)
    .await?;
    Ok(n)
}

/// No seat of `concert` is in two live reservations, and each HELD/SOLD seat points at one.
pub async fn no_double_booking(p: &Platform, concert: i64) -> anyhow::Result<Vec<Check>> {
    let (doubled,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT rs.seat_id FROM reservation_seats rs \
         JOIN reservations r ON r.id = rs.reservation_id \
         WHERE r.concert_id = $1 AND r.status IN ('HELD', 'CONFIRMED') \
         GROUP BY rs.seat_id HAVING count(*) > 1) d",
    )
    .bind(concert)
    .fetch_one(&p.concert_db)
    .await?;
    let (active_twice,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT rs.seat_id FROM reservation_seats rs \
         JOIN reservations r ON r.id = rs.reservation_id \
         WHERE r.concert_id = $1 AND rs.active GROUP BY rs.seat_id HAVING count(*) > 1) d",
    )
    .bind(concert)
    .fetch_one(&p.concert_db)
    .await?;
    Ok(vec![check(
        "no seat in two live reservations",
        doubled == 0 && active_twice == 0,
        format!(
            "{doubled} seats in two HELD/CONFIRMED reservations, {active_twice} with two active claims"
        ),
    )])
}

/// The sell-out: exactly `seats` seats SOLD, each to one CONFIRMED reservation paid by one
/// COMPLETED payment of the same amount; no other payment left COMPLETED. `users` are the only
/// buyers of a concert the run made; an existing concert (`existing`) may have had others.
pub async fn sale(
    p: &Platform,
    concert: i64,
    seats: u64,
    users: &[i64],
    existing: bool,
    settled: &Settled,
) -> anyhow::Result<Vec<Check>> {
    let mut checks = no_double_booking(p, concert).await?;
    let sold = seats_in_status(p, concert, "SOLD").await?;
    let (confirmed_seats,): (i64,) = sqlx::query_as(
        "SELECT coalesce(sum(cardinality(seat_nos)), 0)::bigint FROM reservations \
         WHERE concert_id = $1 AND status = 'CONFIRMED'",
    )
    .bind(concert)
    .fetch_one(&p.concert_db)
    .await?;
    checks.push(check(
        "seats sold == seats on sale",
        sold as u64 == seats && confirmed_seats as u64 == seats,
        format!("{sold} seats SOLD, {confirmed_seats} in CONFIRMED reservations, {seats} on sale"),
    ));

    let rs = reservations(p, concert).await?;
    let ids: Vec<i64> = rs.iter().map(|r| r.0).collect();
    let ps = payments(p, &ids).await?;
    let by_reservation: HashMap<i64, &(i64, String, Option<i64>, i64)> =
        rs.iter().map(|r| (r.0, r)).collect();
    let mut unsettled = 0;
    let mut wrong_amount = 0;
    let (mut completed, mut refunded) = (0, 0);
    for (id, res, status, amount) in &ps {
        let r = by_reservation.get(res);
        match status.as_str() {
            "COMPLETED" => {
                completed += 1;
                match r {
                    Some(r) if r.1 == "CONFIRMED" && r.2 == Some(*id) => {
                        if r.3 != *amount {
                            wrong_amount += 1;
                        }
                    }
                    _ => unsettled += 1,
                }
            }
            _ => {
                refunded += 1;
                if r.is_some_and(|r| r.1 == "CONFIRMED" && r.2 == Some(*id)) {
                    unsettled += 1;
                }
            }
        }
    }
    let paid_for: std::collections::HashSet<i64> = ps
        .iter()
        .filter(|p| p.2 == "COMPLETED")
        .map(|p| p.1)
        .collect();
    let unpaid_confirmed = rs
        .iter()
        .filter(|r| r.1 == "CONFIRMED" && !paid_for.contains(&r.0))
        .count();
    checks.push(check(
        "every COMPLETED payment CONFIRMED or refunded",
        unsettled == 0 && unpaid_confirmed == 0 && wrong_amount == 0,
        format!(
            "{completed} COMPLETED, {refunded} REFUNDED; {unsettled} unsettled, \
             {unpaid_confirmed} CONFIRMED without a payment, {wrong_amount} amounts differing; \
             judged after waiting {:.1} s for stragglers (at most {:.0} s)",
            settled.waited.as_secs_f64(),
            settled.limit.as_secs_f64()
        ),
    ));
    if existing {
        return Ok(checks);
    }
    let buyers: std::collections::HashSet<i64> = ps.iter().map(|p| p.0).collect();
    checks.push(check(
        "payments only by this run's users",
        {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM payments WHERE id = ANY($1) AND NOT (user_id = ANY($2))",
            )
            .bind(buyers.iter().copied().collect::<Vec<_>>())
            .bind(users)
            .fetch_one(&p.payment_db)
            .await?;
            n == 0
        },
        format!("{} payments checked", buyers.len()),
    ));
    Ok(checks)
}

/// Money of `users`: each wallet equals its ledger (CHARGE + REFUND − PAYMENT, and the last
/// entry's balance_after), and what came in equals what is held plus what was paid.
pub async fn money(p: &Platform, users: &[i64]) -> anyhow::Result<Vec<Check>> {
    let (mismatched, last_mismatched, wallets): (i64, i64, i64) = sqlx::query_as(
        "WITH l AS ( \
           SELECT user_id, \
                  sum(CASE WHEN kind = 'PAYMENT' THEN -amount ELSE amount END) AS net, \
                  (array_agg(balance_after ORDER BY id DESC))[1] AS last \
           FROM ledger WHERE user_id = ANY($1) GROUP BY user_id) \
         SELECT count(*) FILTER (WHERE coalesce(l.net, 0) <> w.balance), \
                count(*) FILTER (WHERE coalesce(l.last, 0) <> w.balance), \
                count(*) \
         FROM wallets w LEFT JOIN l ON l.user_id = w.user_id WHERE w.user_id = ANY($1)",
    )
    .bind(users)
    .fetch_one(&p.payment_db)
    .await?;
    let (charged, refunded, paid, held, completed): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT \
           (SELECT coalesce(sum(amount), 0)::bigint FROM ledger WHERE user_id = ANY($1) AND kind = 'CHARGE'), \
           (SELECT coalesce(sum(amount), 0)::bigint FROM ledger WHERE user_id = ANY($1) AND kind = 'REFUND'), \
           (SELECT coalesce(sum(amount), 0)::bigint FROM ledger WHERE user_id = ANY($1) AND kind = 'PAYMENT'), \
           (SELECT coalesce(sum(balance), 0)::bigint FROM wallets WHERE user_id = ANY($1)), \
           (SELECT coalesce(sum(amount), 0)::bigint FROM payments WHERE user_id = ANY($1) AND status = 'COMPLETED')",
    )
    .bind(users)
    .fetch_one(&p.payment_db)
    .await?;
    Ok(vec![
        check(
            "ledger == balance for every wallet",
            mismatched == 0 && last_mismatched == 0,
            format!(
                "{wallets} wallets; {mismatched} differ from their ledger sum, {last_mismatched} from their last entry"
            ),
        ),
        check(
            "money conserved",
            charged - paid + refunded == held && paid - refunded == completed,
            format!(
                "charged {charged} − paid {paid} + refunded {refunded} = {} vs held {held}; \
                 kept by COMPLETED payments {completed}",
                charged - paid + refunded
            ),
        ),
    ])
}

/// Peak and current RSS of every platform process on this machine (by executable name).
pub fn memory() -> Vec<Memory> {
    const NAMES: [&str; 5] = ["users-api", "concert-api", "payment-api", "batch", "nginx"];
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let name = exe
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_owned()
            })
            .unwrap_or_default();
        if !NAMES.contains(&name.as_str()) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        found.push(Memory {
            process: name,
            pid,
            peak_rss_mib: kib("VmHWM:") / 1024.0,
            rss_mib: kib("VmRSS:") / 1024.0,
        });
    }
    found.sort_by(|a, b| a.process.cmp(&b.process).then(a.pid.cmp(&b.pid)));
    found
}
