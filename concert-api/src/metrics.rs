//! concert-api's sale figures on `/metrics`, besides the platform's (HTTP, outbox, consumers):
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `holds_total` | | holds made (201 to `POST /api/reservations`; a replayed answer is not a new hold) |
//! | `settlements_total` | `outcome` (`confirmed`, `rejected`), `path` (`event`, `direct`) | payments settled for the first time, and how: by the `payment.completed` consumer or by payment-api's direct call |
//! | `payment_confirm_lag_seconds` | | histogram: from the payment's completion (its event's `occurred_at`) to the settlement that confirmed its reservation |
//! | `sale_view_figures_reads_total` | | database reads of a sale view's reservation figures (at most one per concert per `SALE_VIEW_CACHE_MS`, however many organisers poll) |

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::events::{Envelope, PaymentCompleted};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use crate::domain::settlement::{Settled, Verdict};

/// How a settlement reached concert-api.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettledBy {
    /// The `payment.completed` consumer.
    Event,
    /// payment-api's `POST /internal/settlements`.
    Direct,
}

pub struct SaleMetrics {
    holds: IntCounter,
    settlements: IntCounterVec,
    confirm_lag: Histogram,
    /// The sale view's figures read from the database (`domain::sale::FiguresMemo`).
    pub sale_view_reads: IntCounter,
}

impl SaleMetrics {
    /// The figures, registered in the service's `registry`.
    pub fn register(registry: &Registry) -> Arc<Self> {
        let holds = IntCounter::new("holds_total", "Holds made").expect("valid metric");
        let settlements = IntCounterVec::new(
            Opts::new(
                "settlements_total",
                "Payments settled for the first time, by outcome and path",
            ),
            &["outcome", "path"],
        )
        .expect("valid metric");
        let confirm_lag = Histogram::with_opts(
            HistogramOpts::new(
                "payment_confirm_lag_seconds",
                "From a payment's completion to the confirmation of its reservation",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                600.0,
            ]),
        )
        .expect("valid metric");
        let sale_view_reads = IntCounter::new(
            "sale_view_figures_reads_total",
            "Database reads of a sale view's reservation figures",
        )
        .expect("valid metric");
        for c in [
            Box::new(holds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(settlements.clone()),
            Box::new(confirm_lag.clone()),
            Box::new(sale_view_reads.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Arc::new(Self {
            holds,
            settlements,
            confirm_lag,
            sale_view_reads,
        })
    }

    pub fn held(&self) {
        self.holds.inc();
    }

    /// Counts `settled` if this was its first settlement (a repeat changes nothing, so it
    /// counts nothing), and for a confirmation observes how long it took since the payment.
    pub fn settled(
        &self,
        settled: &Settled,
        event: &Envelope<PaymentCompleted>,
        by: SettledBy,
        now: DateTime<Utc>,
    ) {
        if !settled.first {
            return;
        }
        let outcome = match settled.verdict {
            Verdict::Confirmed => "confirmed",
            Verdict::Rejected { .. } => "rejected",
        };
        let path = match by {
            SettledBy::Event => "event",
            SettledBy::Direct => "direct",
        };
        self.settlements.with_label_values(&[outcome, path]).inc();
        if settled.verdict == Verdict::Confirmed {
            let lag = (now - event.occurred_at).num_milliseconds().max(0) as f64 / 1e3;
            self.confirm_lag.observe(lag);
        }
    }
}
