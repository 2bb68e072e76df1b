//! The flash sale: a crowd of fans against one concert's sell-out, from the sale's opening
//! until the database says every seat is SOLD (or `--max-duration` runs out).

mod buy;
#[cfg(test)]
mod fake;
mod fan;
mod hold;
mod report;
mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Knobs, Outcome};
use crate::fixture::Platform;
use crate::http::Http;
use crate::stats::Recorder;

/// The crowd of a sell-out.
struct Sale {
    http: Arc<Http>,
    rec: Arc<Recorder>,
    concert: i64,
    seats: u64,
    poll: Duration,
    confirm_timeout: Duration,
    sold: AtomicU64,
    over: AtomicBool,
    left_waiting: AtomicU64,
    left_active: AtomicU64,
    retries: AtomicU64,
    fault_retries: AtomicU64,
    /// Requests repeated after a 429 (the gateway's limits), each after its Retry-After.
    rate_limited: AtomicU64,
    payment_refused: AtomicU64,
    gave_up_confirm: AtomicU64,
    rejected: AtomicU64,
}

/// How the sale ended, for its report.
struct End {
    /// Every fan was done before `--max-duration`.
    finished: bool,
    /// From the opening until the fans were done (or stopped).
    measured: Duration,
    /// From the opening until the watcher saw every seat SOLD.
    sold_out: Duration,
}

impl Sale {
    /// A sale of `seats` seats of `concert`, nothing sold yet and no fan counted.
    fn new(
        http: Arc<Http>,
        rec: Arc<Recorder>,
        concert: i64,
        seats: u64,
        poll: Duration,
        confirm_timeout: Duration,
    ) -> Self {
        Self {
            http,
            rec,
            concert,
            seats,
            poll,
            confirm_timeout,
            sold: AtomicU64::new(0),
            over: AtomicBool::new(false),
            left_waiting: AtomicU64::new(0),
            left_active: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            fault_retries: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            payment_refused: AtomicU64::new(0),
            gave_up_confirm: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    fn over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// The sale is over when the database says every seat is SOLD: the platform's truth, not
    /// what the fans have seen.
    /// One indexed count a second (by schedule ids: the seats table holds every earlier run's
    /// seats too), so the watcher itself costs the database next to nothing.
    async fn watch(self: Arc<Self>, db: sqlx::PgPool, schedules: Vec<i64>) -> Instant {
        while !self.over() {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let sold: Result<(i64,), _> = sqlx::query_as(
                "SELECT count(*) FROM seats WHERE schedule_id = ANY($1) AND status = 'SOLD'",
            )
            .bind(&schedules)
            .fetch_one(&db)
            .await;
            if sold.is_ok_and(|(n,)| n as u64 >= self.seats) {
                self.over.store(true, Ordering::Relaxed);
            }
        }
        Instant::now()
    }
}

/// A counter's value (the fans are done with it by the time it is read).
fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Sets up the concert and the funded crowd, opens the sale, lets every fan arrive (spread
/// over `k.arrival`) and try to buy, then audits the sale once it is over.
pub(super) async fn flash_sale(
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
    let seats = k.schedules as u64 * k.seats_per_schedule as u64;
    let price = 50_000;
    let users = p.users(k.users, "f").await?;
    let (concert, schedules) = p
        .concert("Flash sale", k.schedules, k.seats_per_schedule, price)
        .await?;
    p.fund(&users, price).await?;
    let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    let sale = Arc::new(Sale::new(
        p.http.clone(),
        rec,
        concert,
        seats,
        k.poll,
        k.confirm_timeout,
    ));
    let watcher = tokio::spawn(sale.clone().watch(p.concert_db.clone(), schedules));
    // A drill (bench/crash-drill.sh) times its faults from this line.
    eprintln!("[loadtest] flash-sale: the sale opens");
    let started = Instant::now();
    let crowd = users.len().max(1);
    let fans: Vec<_> = users
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            let arrive = k.arrival.mul_f64(i as f64 / crowd as f64);
            tokio::spawn(sale.clone().fan(u, arrive))
        })
        .collect();
    let all = futures_util::future::join_all(fans);
    let finished = tokio::time::timeout(k.max_duration, all).await.is_ok();
    sale.over.store(true, Ordering::Relaxed);
    let measured = started.elapsed();
    let sold_out = watcher.await.map_or(measured, |at| at - started);
    eprintln!("[loadtest] flash-sale: the sale is over; auditing");
    report::outcome(
        k,
        p,
        &sale,
        &ids,
        End {
            finished,
            measured,
            sold_out,
        },
    )
    .await
}
