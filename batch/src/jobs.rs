//! The scheduled jobs. Each runs on its own interval, only while this process leads, by
//! calling the owning service's library against that service's database or Redis, with the
//! time read once per run from batch's clock. A failing run is counted and logged and never
//! stops the others; shutdown waits for a run in progress.
//!
//! Besides per-job figures, the jobs export what they measure: outbox backlog per service,
//! and `payments_unsettled{older_than="30s"|"120s"|"600s"}` — COMPLETED payments whose seat
//! has not been seen confirmed (nor the money refunded), older than each age, as left by the
//! last reconciliation pass. Past `PAYMENT_SETTLE_DIRECT_AFTER_SECS` (120 s) reconciliation
//! settles them over HTTP whatever the broker does (DESIGN §6), so anything in the `600s`
//! series means that backstop is failing too: alert on it.
//!
//! The invariant watchdog checks DESIGN §9 on live data every few seconds through the owning
//! services' libraries and exports `invariant_violations{invariant}` (0 while it holds):
//! `money_conserved` (1 when charges − payments + refunds ≠ the wallets' sum, the difference
//! in `invariant_money_discrepancy`), `ledger_equals_balance` (wallets of a random sample that
//! differ from their ledger or are negative), `seat_sold_once` (seats in two live
//! reservations, or SOLD without a CONFIRMED one; [`SeatWatch`] says which dates it reads)
//! and `payment_settled_in_time` (COMPLETED payments neither confirmed nor refunded past the
//! backstop's bound);
//! `invariant_last_check_timestamp_seconds` says when it last completed.
//!
//! From the broker: `kafka_group_backlog{group,topic}` and `kafka_group_committed_offsets`
//! for every consumer group (its committed offsets, so a group with no member alive still
//! shows), and `kafka_dlq_depth{topic}` for every dead-letter topic.
//!
//! Local backups (only with `BACKUP_DIR`): `backup_last_success_timestamp_seconds` and
//! `backup_bytes{database}`, the size of each dump of the last successful backup.
//!
//! Archival (`crate::archive`): `archive_rows_total{table}` and `archive_schedules_total`,
//! what was moved; `archive_schedules_waiting{reason}`, due schedules the last pass found not
//! ready (a hold, a payment still settling); `ledger_default_partition_rows`, rows that
//! landed in the ledger's DEFAULT partition (0 while the monthly partitions are kept ahead).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use common::clock::Clock;
use common::events::{ALL_TOPICS, CONSUMER_GROUPS};
use common::kafka::KafkaClient;
use concert_api::store::invariants::{SeatScope, SeatViolations, seat_violations};
use payment_api::store::invariants::MoneyTotals;
use payment_api::store::retention::{IDEMPOTENCY_KEYS_KEPT, delete_idempotency_keys_before};
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;
use users_api::domain::queue::{Admission, Verdict, WaitingRoom};

use crate::archive;
use crate::backup;
use crate::leader::Leadership;

/// Handled events (inbox rows) and published ones (outbox rows) are kept a week for
/// inspection and replays, then go: a flash sale writes several per seat.
const EVENT_ROWS_KEPT: TimeDelta = TimeDelta::days(7);

/// How long a question to the broker may take before the run fails.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Admit from every live waiting line (users-api's `WaitingRoom::admit`).
    Admission,
    /// Expire dead holds and free their seats (`concert_api::expire_holds`).
    ExpireHolds,
    /// Chase payments never seen confirmed (`payment_api::reconcile`).
    Reconcile,
    /// Outbox backlog and oldest unpublished age of every service, as metrics.
    OutboxHealth,
    /// Rows no TTL removes: idempotency keys past 24 h; inbox entries and published outbox
    /// events past 7 days.
    Cleanup,
    /// DESIGN §9 checked on live data, as gauges (`concert_api::store::invariants`,
    /// `payment_api::store::invariants`, the reconciliation's unsettled count).
    Invariants,
    /// Seats by status (concert-api's inventory counts) and reservations by status and
    /// revenue (`concert_api::store::sale::figures`) of every concert with a line.
    SaleFigures,
    /// Every consumer group's committed offsets and backlog, and every dead-letter topic's
    /// depth, read from the broker: a group with no live member still shows.
    ConsumerGroups,
    /// A verified logical backup of every database into `BACKUP_DIR`, then retention
    /// (`crate::backup`), when the newest backup is an interval old.
    Backup,
    /// Shows over by `ARCHIVE_AFTER_DAYS` moved to the archive tables, and the ledger's
    /// monthly partitions kept ahead (`crate::archive`).
    Archive,
}

impl Job {
    pub fn name(self) -> &'static str {
        match self {
            Job::Admission => "admission",
            Job::ExpireHolds => "expire_holds",
            Job::Reconcile => "reconcile",
            Job::OutboxHealth => "outbox_health",
            Job::Cleanup => "cleanup",
            Job::Invariants => "invariants",
            Job::SaleFigures => "sale_figures",
            Job::ConsumerGroups => "consumer_groups",
            Job::Backup => "backup",
            Job::Archive => "archive",
        }
    }

    /// Runs once; returns how many items it handled.
    async fn run(self, ctx: &JobContext) -> Result<u64, String> {
        let now = ctx.clock.now();
        match self {
            Job::Admission => {
                // One room that cannot be ticked (say, its settings must be restored while
                // the database is down) does not hold up the others; the run still fails.
                let mut admitted = 0;
                let mut failed = None;
                let mut lines = Vec::new();
                let concerts = ctx
                    .room
                    .concerts_with_lines()
                    .await
                    .map_err(|e| e.to_string())?;
                // One look at the checkout's pressure paces every room of this tick.
                let verdict = if concerts.is_empty() {
                    Verdict::Fixed
                } else {
                    ctx.room
                        .checkout_verdict()
                        .await
                        .map_err(|e| e.to_string())?
                };
                for concert in concerts {
                    match ctx.room.admit_paced(concert, now, verdict).await {
                        Ok(a) => {
                            admitted += a.admitted;
                            ctx.metrics.count_admission(concert, &a);
                            lines.push((concert, a));
                        }
                        Err(e) => {
                            failed.get_or_insert(format!("concert {concert}: {e}"));
                        }
                    }
                }
                ctx.metrics.set_lines(&lines);
                match failed {
                    Some(e) => Err(e),
                    None => Ok(admitted),
                }
            }
            Job::ExpireHolds => {
                concert_api::expire_holds(&ctx.concert_db, &ctx.inventory, now, ctx.grace)
                    .await
                    .map(|s| s.reservations_expired)
                    .map_err(|e| e.to_string())
            }
            Job::Reconcile => {
                let r = payment_api::reconcile(&ctx.payment_db, &ctx.concerts, &ctx.payment, now)
                    .await
                    .map_err(|e| e.to_string())?;
                for (age, count) in r.unsettled.by_age() {
                    ctx.metrics
                        .payments_unsettled
                        .with_label_values(&[format!("{age}s").as_str()])
                        .set(count);
                }
                Ok(r.republished + r.confirmed + r.refunded)
            }
            Job::OutboxHealth => {
                let mut pending = 0;
                for (service, db) in ctx.databases() {
                    let b = common::outbox::backlog(db)
                        .await
                        .map_err(|e| format!("{service}: {e}"))?;
                    ctx.metrics
                        .outbox_pending
                        .with_label_values(&[service])
                        .set(b.pending);
                    ctx.metrics
                        .outbox_oldest
                        .with_label_values(&[service])
                        .set(b.oldest_age_secs);
                    pending += b.pending as u64;
                }
                Ok(pending)
            }
            Job::Cleanup => {
                let mut removed =
                    delete_idempotency_keys_before(&ctx.payment_db, now - IDEMPOTENCY_KEYS_KEPT)
                        .await
                        .map_err(|e| format!("payment-api: {e}"))?;
                removed += concert_api::store::idempotency::delete_before(
                    &ctx.concert_db,
                    now - IDEMPOTENCY_KEYS_KEPT,
                )
                .await
                .map_err(|e| format!("concert-api: {e}"))?;
                let before = now - EVENT_ROWS_KEPT;
                for (service, db) in ctx.databases() {
                    removed += common::inbox::delete_received_before(db, before)
                        .await
                        .map_err(|e| format!("{service}: {e}"))?;
                    removed += common::outbox::delete_published_before(db, before)
                        .await
                        .map_err(|e| format!("{service}: {e}"))?;
                }
                Ok(removed)
            }
            Job::Invariants => {
                let money = ctx
                    .money_watch
                    .totals(&ctx.payment_db)
                    .await
                    .map_err(|e| format!("payment-api: {e}"))?;
                let wallets = payment_api::store::invariants::wallets_off_their_ledger(
                    &ctx.payment_db,
                    ctx.wallet_sample,
                )
                .await
                .map_err(|e| format!("payment-api: {e}"))?;
                let seats = ctx
                    .seat_watch
                    .check(&ctx.concert_db, now - TimeDelta::days(1))
                    .await
                    .map_err(|e| format!("concert-api: {e}"))?;
                let bound = TimeDelta::from_std(ctx.settle_bound).unwrap_or(TimeDelta::MAX);
                let [unsettled] = payment_api::store::reconciliation::unsettled_before(
                    &ctx.payment_db,
                    [now - bound],
                )
                .await
                .map_err(|e| format!("payment-api: {e}"))?;
                let m = &ctx.metrics;
                let violations = [
                    ("money_conserved", i64::from(money.discrepancy() != 0)),
                    ("ledger_equals_balance", wallets),
                    ("seat_sold_once", seats.total()),
                    ("payment_settled_in_time", unsettled),
                ];
                let mut broken = 0;
                for (invariant, count) in violations {
                    m.invariant_violations
                        .with_label_values(&[invariant])
                        .set(count);
                    if count > 0 {
                        broken += 1;
                        tracing::error!(invariant, count, ?money, ?seats, "an invariant is broken");
                    }
                }
                m.money_discrepancy.set(money.discrepancy());
                m.invariants_checked_at
                    .set(now.timestamp_millis() as f64 / 1000.0);
                Ok(broken)
            }
            Job::SaleFigures => {
                let mut sales = Vec::new();
                for concert in ctx
                    .room
                    .concerts_with_lines()
                    .await
                    .map_err(|e| e.to_string())?
                {
                    let seats = ctx
                        .inventory
                        .read(concert, &[])
                        .await
                        .map_err(|e| format!("concert {concert}: {e}"))?
                        .map(|(counts, _)| counts);
                    let reservations = ctx
                        .sale_watch
                        .figures(&ctx.concert_db, &ctx.inventory, &ctx.clock, concert)
                        .await
                        .map_err(|e| format!("concert {concert}: {e}"))?;
                    sales.push((concert, seats, reservations));
                }
                ctx.sale_watch
                    .keep_only(sales.iter().map(|(concert, ..)| *concert))
                    .await;
                ctx.metrics.set_sales(&sales);
                Ok(sales.len() as u64)
            }
            Job::ConsumerGroups => {
                let m = &ctx.metrics;
                let mut read = 0;
                for (name, topics) in CONSUMER_GROUPS {
                    let positions = ctx
                        .kafka
                        .group_positions(name, topics, BROKER_TIMEOUT)
                        .await
                        .map_err(|e| format!("group {name}: {e}"))?;
                    // Labelled as the consumers label themselves (with the topic prefix).
                    let group = ctx.kafka.topic(name);
                    for (topic, p) in positions {
                        let labels = [group.as_str(), topic.as_str()];
                        m.group_backlog.with_label_values(&labels).set(p.backlog);
                        m.group_committed
                            .with_label_values(&labels)
                            .set(p.committed);
                        read += 1;
                    }
                }
                for topic in ALL_TOPICS {
                    let dlq = format!("{topic}.dlq");
                    let depth = ctx
                        .kafka
                        .retained(&dlq, BROKER_TIMEOUT)
                        .await
                        .map_err(|e| format!("{dlq}: {e}"))?;
                    m.dlq_depth.with_label_values(&[dlq.as_str()]).set(depth);
                }
                Ok(read)
            }
            Job::Backup => {
                // Only scheduled with a plan; asked often, it backs up once per interval.
                let Some(plan) = ctx.backup.as_ref().filter(|p| p.due(now)) else {
                    return Ok(0);
                };
                let manifest = plan.run(now).await?;
                ctx.metrics.set_backup(&manifest);
                Ok(manifest.bytes())
            }
            Job::Archive => {
                let pass = archive::run_pass(
                    &ctx.concert_db,
                    &ctx.payment_db,
                    now,
                    ctx.archive_after,
                    archive::Budget::JOB,
                )
                .await;
                // What moved before an error is counted: it is archived.
                ctx.metrics.count_archive(&pass);
                match pass.failed {
                    Some(e) => Err(e),
                    None => Ok(pass.archived),
                }
            }
        }
    }
}

/// What the jobs work with.
pub struct JobContext {
    pub room: WaitingRoom,
    pub users_db: DatabaseConnection,
    pub concert_db: DatabaseConnection,
    /// concert-api's seat counts in Redis, which the expiry sweep moves.
    pub inventory: concert_api::Inventory,
    pub payment_db: DatabaseConnection,
    pub concerts: payment_api::concerts::ConcertClient,
    pub payment: payment_api::config::PaymentConfig,
    pub grace: Duration,
    /// A COMPLETED payment older than this and still unsettled breaks DESIGN §9.4.
    pub settle_bound: Duration,
    /// Wallets compared with their ledger per invariant check.
    pub wallet_sample: u32,
    pub metrics: JobMetrics,
    /// The broker, for the consumer groups' positions.
    pub kafka: KafkaClient,
    /// batch's time source; the waiting room in `room` holds the same one.
    pub clock: Clock,
    /// Local backups; `None` while `BACKUP_DIR` is unset.
    pub backup: Option<backup::Plan>,
    /// A schedule whose show started this long ago is archived (`ARCHIVE_AFTER_DAYS`).
    pub archive_after: TimeDelta,
    /// What the seat invariant's check remembers between runs.
    pub seat_watch: SeatWatch,
    /// Each concert's sale figures as last read, for [`Job::SaleFigures`].
    pub sale_watch: SaleWatch,
    /// The money totals as last read, and how many checks ago.
    pub money_watch: MoneyWatch,
}

/// The money totals are read at every this many invariant checks (a minute at the default
/// `BATCH_INVARIANTS_INTERVAL_MS`), and at a new leader's first: the other checks report the
/// last reading. The totals sum the open months of the ledger and every wallet, so a reading
/// costs in proportion to a month's payments and to the accounts: here (1.87 million ledger
/// rows this month, 1.1 million wallets) 0.3 s of PostgreSQL's CPU a reading (measured with
/// its parallel workers off; with them the same work is spread over three processes), 20 ms
/// a second at every 15 s, idle or in a sale, and growing with the month.
/// The other checks are cheap or read only what changed, and stay at every run.
pub const MONEY_CHECK_EVERY: u64 = 4;

/// See [`MONEY_CHECK_EVERY`].
#[derive(Debug, Default)]
pub struct MoneyWatch(tokio::sync::Mutex<(u64, Option<MoneyTotals>)>);

impl MoneyWatch {
    /// The money totals: read now when this check is due to, else the last reading.
    pub async fn totals(&self, db: &DatabaseConnection) -> Result<MoneyTotals, sea_orm::DbErr> {
        let mut watched = self.0.lock().await;
        let (checks, last) = &mut *watched;
        let due = last.is_none() || *checks % MONEY_CHECK_EVERY == 0;
        *checks += 1;
        match last {
            Some(totals) if !due => Ok(*totals),
            _ => {
                let totals = payment_api::store::invariants::money_totals(db).await?;
                *last = Some(totals);
                Ok(totals)
            }
        }
    }
}

/// A quiet concert's sale figures are read again at least this often (by batch's clock).
pub const SALE_FIGURES_REREAD: TimeDelta = TimeDelta::minutes(1);

/// What [`Job::SaleFigures`] remembers of each concert it reads. Its figures count every
/// reservation of the concert (`sale::figures`: 10–20 ms and thousands of buffers at 10,000
/// reservations, while pages a sale just wrote are not all-visible), and the job reads every
/// concert with a line every few seconds, sold-out ones too while their lines empty. So a
/// concert's figures are read again only when:
/// - its inventory sequence moved since the last read (a seat of it changed status, or its
///   counts were rewritten), or it has none;
/// - the last read saw holds or sales in the last minute (those counts fall as time passes);
/// - or [`SALE_FIGURES_REREAD`] has passed since the last read: a change that moves no seat
///   (a hold taken over expiring, a date archived) shows within that.
#[derive(Debug, Default)]
pub struct SaleWatch(tokio::sync::Mutex<HashMap<i64, SaleRead>>);

#[derive(Debug)]
struct SaleRead {
    sequence: i64,
    at: chrono::DateTime<chrono::Utc>,
    figures: Option<concert_api::store::sale::SaleFigures>,
}

impl SaleWatch {
    /// `concert_id`'s figures (`None`: no such concert), read now or as last read.
    pub async fn figures(
        &self,
        db: &DatabaseConnection,
        inventory: &concert_api::Inventory,
        clock: &Clock,
        concert_id: i64,
    ) -> Result<Option<concert_api::store::sale::SaleFigures>, String> {
        // Before the read: a change after it moves the sequence past the one kept.
        let sequence = inventory
            .sequence(concert_id)
            .await
            .map_err(|e| e.to_string())?;
        let now = clock.now();
        let mut reads = self.0.lock().await;
        if let (Some(sequence), Some(last)) = (sequence, reads.get(&concert_id))
            && last.sequence == sequence
            && now - last.at < SALE_FIGURES_REREAD
            && last
                .figures
                .as_ref()
                .is_none_or(|f| f.holds_last_minute == 0 && f.sold_last_minute == 0)
        {
            return Ok(last.figures.clone());
        }
        let figures = concert_api::store::sale::figures(db, concert_id)
            .await
            .map_err(|e| e.to_string())?;
        match sequence {
            Some(sequence) => {
                reads.insert(
                    concert_id,
                    SaleRead {
                        sequence,
                        at: now,
                        figures: figures.clone(),
                    },
                );
            }
            None => {
                reads.remove(&concert_id);
            }
        }
        Ok(figures)
    }

    /// Forgets the concerts not in `concerts` (their lines are gone).
    pub async fn keep_only(&self, concerts: impl IntoIterator<Item = i64>) {
        let keep: std::collections::HashSet<i64> = concerts.into_iter().collect();
        self.0.lock().await.retain(|c, _| keep.contains(c));
    }
}

/// Every date still to come is read at least this often by the seat invariant's check;
/// between, it reads the concerts whose reservations changed, and those it found broken.
pub const SEAT_CHECK_EVERY_DATE: Duration = Duration::from_secs(600);

/// How far before the last check's start the next one looks for changed reservations: a
/// reservation's `updated_at` is its writing transaction's start, and a transaction that
/// began before the check may commit after it. Ours last milliseconds (`lock_timeout`).
pub const SEAT_CHECK_OVERLAP: TimeDelta = TimeDelta::minutes(1);

/// The seat invariant's check between runs (DESIGN §9): reading every live reservation of
/// every show to come costs in proportion to everything on sale, a few times a minute, so
/// the check reads every date at most every [`SEAT_CHECK_EVERY_DATE`] (and at a new
/// leader's first run), and in between only the concerts with a reservation changed since
/// the last check began (less [`SEAT_CHECK_OVERLAP`]) and the concerts it found broken,
/// which stay reported until mended.
#[derive(Debug, Default)]
pub struct SeatWatch(tokio::sync::Mutex<Option<SeatWatched>>);

#[derive(Debug)]
struct SeatWatched {
    every_date_at: Instant,
    last_began: chrono::DateTime<chrono::Utc>,
    broken: Vec<i64>,
}

impl SeatWatch {
    /// One check of the dates starting after `since`.
    pub async fn check(
        &self,
        db: &DatabaseConnection,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<SeatViolations, sea_orm::DbErr> {
        let mut watched = self.0.lock().await;
        // The last check, while a pass over every date is not due.
        let narrow = watched
            .as_ref()
            .filter(|w| w.every_date_at.elapsed() < SEAT_CHECK_EVERY_DATE);
        let scope = narrow.map_or(SeatScope::Every, |w| SeatScope::ChangedSince {
            changed_after: w.last_began - SEAT_CHECK_OVERLAP,
            suspects: &w.broken,
        });
        let every_date_at = narrow.map_or_else(Instant::now, |w| w.every_date_at);
        let found = seat_violations(db, since, scope).await?;
        *watched = Some(SeatWatched {
            every_date_at,
            last_began: found.at,
            broken: found.broken,
        });
        Ok(found.violations)
    }
}

impl JobContext {
    fn databases(&self) -> [(&'static str, &DatabaseConnection); 3] {
        [
            ("users-api", &self.users_db),
            ("concert-api", &self.concert_db),
            ("payment-api", &self.payment_db),
        ]
    }
}

/// Per job: runs by outcome, items handled, duration; plus leadership and outbox gauges.
#[derive(Clone)]
pub struct JobMetrics {
    runs: IntCounterVec,
    items: IntCounterVec,
    duration: HistogramVec,
    pub leader: IntGauge,
    outbox_pending: IntGaugeVec,
    outbox_oldest: GaugeVec,
    payments_unsettled: IntGaugeVec,
    invariant_violations: IntGaugeVec,
    money_discrepancy: IntGauge,
    invariants_checked_at: Gauge,
    line: IntGaugeVec,
    line_moves: IntCounterVec,
    seats: IntGaugeVec,
    reservations: IntGaugeVec,
    revenue: IntGaugeVec,
    group_backlog: IntGaugeVec,
    group_committed: IntGaugeVec,
    dlq_depth: IntGaugeVec,
    backup_succeeded_at: Gauge,
    backup_bytes: IntGaugeVec,
    archive_rows: IntCounterVec,
    archive_schedules: IntCounter,
    archive_waiting: IntGaugeVec,
    ledger_default_rows: IntGauge,
}

/// A concert's sale as [`Job::SaleFigures`] read it: its seats (`None` until concert-api
/// has counted them into Redis) and its reservations.
type Sale = (
    i64,
    Option<concert_api::store::inventory::SeatCounts>,
    Option<concert_api::store::sale::SaleFigures>,
);

impl JobMetrics {
    /// What one admission tick did to a concert's line.
    fn count_admission(&self, concert: i64, a: &Admission) {
        let concert = concert.to_string();
        for (event, n) in [
            ("admitted", a.admitted),
            ("expired", a.expired),
            ("abandoned", a.abandoned),
        ] {
            self.line_moves
                .with_label_values(&[concert.as_str(), event])
                .inc_by(n);
        }
    }

    /// The lines as of this tick: only concerts that still have one are exported.
    fn set_lines(&self, lines: &[(i64, Admission)]) {
        self.line.reset();
        for (concert, a) in lines {
            let concert = concert.to_string();
            let window = a.window.map(|w| ("admission_window", w));
            for (state, n) in [
                ("pre_queued", a.pre_queued),
                ("waiting", a.waiting),
                ("active", a.active),
            ]
            .into_iter()
            .chain(window)
            {
                self.line
                    .with_label_values(&[concert.as_str(), state])
                    .set(n as i64);
            }
        }
    }

    fn set_sales(&self, sales: &[Sale]) {
        self.seats.reset();
        self.reservations.reset();
        self.revenue.reset();
        for (concert, seats, reservations) in sales {
            let concert = concert.to_string();
            if let Some(s) = seats {
                for (status, n) in [
                    ("available", s.available),
                    ("held", s.held),
                    ("sold", s.sold),
                ] {
                    self.seats
                        .with_label_values(&[concert.as_str(), status])
                        .set(n);
                }
            }
            if let Some(r) = reservations {
                for (status, n) in [
                    ("held", r.held),
                    ("confirmed", r.confirmed),
                    ("expired", r.expired),
                    ("cancelled", r.cancelled),
                    ("rejected", r.rejected),
                ] {
                    self.reservations
                        .with_label_values(&[concert.as_str(), status])
                        .set(n);
                }
                self.revenue
                    .with_label_values(&[concert.as_str()])
                    .set(r.revenue);
            }
        }
    }

    /// The last successful backup: when it was taken and the size of each dump.
    fn set_backup(&self, manifest: &backup::Manifest) {
        self.backup_succeeded_at
            .set(manifest.taken_at.timestamp_millis() as f64 / 1000.0);
        self.backup_bytes.reset();
        for d in &manifest.databases {
            self.backup_bytes
                .with_label_values(&[d.database.as_str()])
                .set(i64::try_from(d.bytes).unwrap_or(i64::MAX));
        }
    }

    /// What an archive pass moved, and what it found waiting.
    fn count_archive(&self, pass: &archive::Pass) {
        for (table, n) in pass.rows.by_table() {
            self.archive_rows.with_label_values(&[table]).inc_by(n);
        }
        self.archive_schedules.inc_by(pass.archived);
        for (reason, n) in [
            ("held", pass.waiting_for_hold),
            ("unsettled", pass.waiting_for_payment),
        ] {
            self.archive_waiting
                .with_label_values(&[reason])
                .set(n as i64);
        }
        if let Some(ledger) = &pass.ledger {
            self.ledger_default_rows.set(ledger.default_rows);
        }
    }

    pub fn register(registry: &Registry) -> Self {
        let m = Self {
            runs: IntCounterVec::new(
                Opts::new("batch_job_runs_total", "Job runs by outcome"),
                &["job", "outcome"],
            )
            .expect("valid metric"),
            items: IntCounterVec::new(
                Opts::new("batch_job_items_total", "Items a job handled"),
                &["job"],
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new("batch_job_duration_seconds", "Job run time"),
                &["job"],
            )
            .expect("valid metric"),
            leader: IntGauge::new("batch_leader", "1 while this process holds the lease")
                .expect("valid metric"),
            outbox_pending: IntGaugeVec::new(
                Opts::new("batch_outbox_pending", "Unpublished outbox rows"),
                &["outbox"],
            )
            .expect("valid metric"),
            outbox_oldest: GaugeVec::new(
                Opts::new(
                    "batch_outbox_oldest_pending_seconds",
                    "Age of the oldest unpublished outbox row",
                ),
                &["outbox"],
            )
            .expect("valid metric"),
            payments_unsettled: IntGaugeVec::new(
                Opts::new(
                    "payments_unsettled",
                    "COMPLETED payments not yet confirmed nor refunded, older than older_than",
                ),
                &["older_than"],
            )
            .expect("valid metric"),
            invariant_violations: IntGaugeVec::new(
                Opts::new(
                    "invariant_violations",
                    "What breaks each DESIGN §9 invariant as of the last check; 0 while it holds",
                ),
                &["invariant"],
            )
            .expect("valid metric"),
            money_discrepancy: IntGauge::new(
                "invariant_money_discrepancy",
                "charges - payments + refunds - the sum of the wallets, in money units; 0 while money is conserved",
            )
            .expect("valid metric"),
            invariants_checked_at: Gauge::new(
                "invariant_last_check_timestamp_seconds",
                "When the invariant watchdog last completed a check (Unix time)",
            )
            .expect("valid metric"),
            line: IntGaugeVec::new(
                Opts::new(
                    "sale_line",
                    "Tokens in a concert's line by state (pre_queued, waiting, active) after the last admission tick, and (state admission_window) how many may be active as the admission pace sized it",
                ),
                &["concert", "state"],
            )
            .expect("valid metric"),
            line_moves: IntCounterVec::new(
                Opts::new(
                    "sale_line_tokens_total",
                    "Tokens the admission ticks moved out of a concert's line, by event (admitted, expired, abandoned)",
                ),
                &["concert", "event"],
            )
            .expect("valid metric"),
            seats: IntGaugeVec::new(
                Opts::new(
                    "sale_seats",
                    "Seats of a concert with a line by status (available, held, sold)",
                ),
                &["concert", "status"],
            )
            .expect("valid metric"),
            reservations: IntGaugeVec::new(
                Opts::new(
                    "sale_reservations",
                    "Reservations of a concert with a line by status (held, confirmed, expired, cancelled, rejected)",
                ),
                &["concert", "status"],
            )
            .expect("valid metric"),
            revenue: IntGaugeVec::new(
                Opts::new(
                    "sale_revenue",
                    "Amounts of a concert's CONFIRMED reservations, in money units",
                ),
                &["concert"],
            )
            .expect("valid metric"),
            group_backlog: IntGaugeVec::new(
                Opts::new(
                    "kafka_group_backlog",
                    "Messages between a consumer group's committed offsets and the end of a topic, read from the broker",
                ),
                &["group", "topic"],
            )
            .expect("valid metric"),
            group_committed: IntGaugeVec::new(
                Opts::new(
                    "kafka_group_committed_offsets",
                    "The sum of a consumer group's committed offsets on a topic; rises as it consumes",
                ),
                &["group", "topic"],
            )
            .expect("valid metric"),
            dlq_depth: IntGaugeVec::new(
                Opts::new("kafka_dlq_depth", "Messages retained in a dead-letter topic"),
                &["topic"],
            )
            .expect("valid metric"),
            backup_succeeded_at: Gauge::new(
                "backup_last_success_timestamp_seconds",
                "When the last successful (verified) local backup was taken (Unix time)",
            )
            .expect("valid metric"),
            backup_bytes: IntGaugeVec::new(
                Opts::new(
                    "backup_bytes",
                    "Size of each database's dump in the last successful local backup",
                ),
                &["database"],
            )
            .expect("valid metric"),
            archive_rows: IntCounterVec::new(
                Opts::new(
                    "archive_rows_total",
                    "Rows the archive job moved from a hot table into the archive, by table (seats, reservation_seats, reservations, payments)",
                ),
                &["table"],
            )
            .expect("valid metric"),
            archive_schedules: IntCounter::new(
                "archive_schedules_total",
                "Schedules (shows) the archive job archived",
            )
            .expect("valid metric"),
            archive_waiting: IntGaugeVec::new(
                Opts::new(
                    "archive_schedules_waiting",
                    "Schedules past ARCHIVE_AFTER_DAYS the last archive pass found not ready, by reason (held: a HELD reservation; unsettled: a payment neither confirmed nor refunded)",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            ledger_default_rows: IntGauge::new(
                "ledger_default_partition_rows",
                "Rows in the ledger's DEFAULT partition after the last archive pass: rows of a month that had no partition (0 while the job keeps them ahead)",
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.runs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.items.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.outbox_pending.clone()),
            Box::new(m.outbox_oldest.clone()),
            Box::new(m.payments_unsettled.clone()),
            Box::new(m.invariant_violations.clone()),
            Box::new(m.money_discrepancy.clone()),
            Box::new(m.invariants_checked_at.clone()),
            Box::new(m.line.clone()),
            Box::new(m.line_moves.clone()),
            Box::new(m.seats.clone()),
            Box::new(m.reservations.clone()),
            Box::new(m.revenue.clone()),
            Box::new(m.group_backlog.clone()),
            Box::new(m.group_committed.clone()),
            Box::new(m.dlq_depth.clone()),
            Box::new(m.backup_succeeded_at.clone()),
            Box::new(m.backup_bytes.clone()),
            Box::new(m.archive_rows.clone()),
            Box::new(m.archive_schedules.clone()),
            Box::new(m.archive_waiting.clone()),
            Box::new(m.ledger_default_rows.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        m
    }
}

/// Runs `job` every `every` while this process leads, until `cancel`. The cancel check sits
/// between runs, so shutdown waits for a run in progress to finish.
pub async fn schedule(
    job: Job,
    every: Duration,
    ctx: Arc<JobContext>,
    leadership: Leadership,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !leadership.is_leader() {
            continue;
        }
        let started = Instant::now();
        let outcome = job.run(&ctx).await;
        let m = &ctx.metrics;
        m.duration
            .with_label_values(&[job.name()])
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(items) => {
                m.runs.with_label_values(&[job.name(), "ok"]).inc();
                m.items.with_label_values(&[job.name()]).inc_by(items);
                if items > 0 {
                    tracing::debug!(job = job.name(), items, "job ran");
                }
            }
            Err(error) => {
                m.runs.with_label_values(&[job.name(), "failed"]).inc();
                tracing::warn!(job = job.name(), %error, "job run failed");
            }
        }
    }
}
