//! payment-api's money figures on `/metrics`, besides the platform's (HTTP, outbox, consumers):
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `payments_total` | `outcome`: `completed`, or the refusal's code in lower case (`insufficient_balance`, `hold_expired`, `hold_ends_too_soon`, `not_payable`, `already_paid`) | answers to `POST /api/payments` that were not replays |
//! | `payments_amount_total` | | money taken by completed payments, in the currency's minor unit |
//! | `refunds_total` | | payments refunded by the `reservation.rejected` consumer (batch's reconciliation counts its own in `batch_reconcile_*`) |

use std::sync::Arc;

use common::ErrorCode;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::domain::idempotency::Idempotent;
use crate::domain::payment::{PayRefusal, PaymentView};

pub struct MoneyMetrics {
    payments: IntCounterVec,
    paid: IntCounter,
    refunds: IntCounter,
}

impl MoneyMetrics {
    /// The figures, registered in the service's `registry`.
    pub fn register(registry: &Registry) -> Arc<Self> {
        let payments = IntCounterVec::new(
            Opts::new("payments_total", "Payments asked for, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let paid = IntCounter::new(
            "payments_amount_total",
            "Money taken by completed payments (minor units)",
        )
        .expect("valid metric");
        let refunds = IntCounter::new("refunds_total", "Payments refunded after a rejection")
            .expect("valid metric");
        for c in [
            Box::new(payments.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(paid.clone()),
            Box::new(refunds.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Arc::new(Self {
            payments,
            paid,
            refunds,
        })
    }

    /// Counts a payment's outcome; a replayed answer was counted when it was first given.
    pub fn paid(&self, outcome: &Idempotent<PaymentView, PayRefusal>) {
        let Idempotent::Fresh(outcome) = outcome else {
            return;
        };
        match outcome {
            Ok(p) => {
                self.payments.with_label_values(&["completed"]).inc();
                self.paid.inc_by(p.amount.max(0).unsigned_abs());
            }
            Err(refusal) => self
                .payments
                .with_label_values(&[refusal.code().to_ascii_lowercase().as_str()])
                .inc(),
        }
    }

    pub fn refunded(&self) {
        self.refunds.inc();
    }
}
