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

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use common::clock::Clock;
use payment_api::store::retention::{IDEMPOTENCY_KEYS_KEPT, delete_idempotency_keys_before};
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;
use users_api::domain::queue::WaitingRoom;

use crate::leader::Leadership;

/// Handled events (inbox rows) and published ones (outbox rows) are kept a week for
/// inspection and replays, then go: a flash sale writes several per seat.
const EVENT_ROWS_KEPT: TimeDelta = TimeDelta::days(7);

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
}

impl Job {
    pub fn name(self) -> &'static str {
        match self {
            Job::Admission => "admission",
            Job::ExpireHolds => "expire_holds",
            Job::Reconcile => "reconcile",
            Job::OutboxHealth => "outbox_health",
            Job::Cleanup => "cleanup",
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
                for concert in ctx
                    .room
                    .concerts_with_lines()
                    .await
                    .map_err(|e| e.to_string())?
                {
                    match ctx.room.admit(concert, now).await {
                        Ok(a) => admitted += a.admitted,
                        Err(e) => {
                            failed.get_or_insert(format!("concert {concert}: {e}"));
                        }
                    }
                }
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
    pub metrics: JobMetrics,
    /// batch's time source; the waiting room in `room` holds the same one.
    pub clock: Clock,
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
}

impl JobMetrics {
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
                &["service"],
            )
            .expect("valid metric"),
            outbox_oldest: GaugeVec::new(
                Opts::new(
                    "batch_outbox_oldest_pending_seconds",
                    "Age of the oldest unpublished outbox row",
                ),
                &["service"],
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
        };
        for c in [
            Box::new(m.runs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.items.clone()),
            Box::new(m.duration.clone()),
            Box::new(m.leader.clone()),
            Box::new(m.outbox_pending.clone()),
            Box::new(m.outbox_oldest.clone()),
            Box::new(m.payments_unsettled.clone()),
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
