//! The scenarios: the table `loadtest run` picks from and its dispatch, the knobs they read and
//! what each returns. Each sets up what it needs (not measured), then drives its endpoint
//! through the gateway and says what it saw; some add checks read from the databases.

mod endpoints;
mod flash_sale;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{self, Settled};
use crate::drive::Load;
use crate::fixture::Platform;
use crate::http::Reply;
use crate::report::{Check, Figures, SaleNumbers};
use crate::stats::Recorder;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Baseline,
    QueueJoin,
    QueuePoll,
    SeatMap,
    HoldDistinct,
    HoldContended,
    Charge,
    Pay,
    FlashSale,
    /// N fans on open status streams straight to users-api's replicas (its own report).
    WaitingRoom,
}

/// The knobs every scenario reads (each uses the ones that apply to it).
#[derive(Debug, Clone)]
pub struct Knobs {
    pub load: Load,
    /// Accounts the scenario makes (flash-sale: the crowd).
    pub users: usize,
    /// flash-sale: schedules of the concert (each `seats_per_schedule` seats).
    pub schedules: usize,
    pub seats_per_schedule: u32,
    /// flash-sale: an existing concert to sell instead of a new one.
    pub concert: Option<i64>,
    /// baseline: the bare path.
    pub baseline_path: String,
    /// flash-sale: a waiting fan polls its status at most this often.
    pub poll: Duration,
    /// flash-sale: the last this many fans wait on the event stream instead of polling.
    pub streaming_fans: usize,
    /// flash-sale: the crowd arrives spread over this long.
    pub arrival: Duration,
    /// flash-sale: how long before it gives up waiting for a sell-out.
    pub max_duration: Duration,
    /// flash-sale: how long a fan waits for CONFIRMED after paying.
    pub confirm_timeout: Duration,
    /// `PAYMENT_SETTLE_DIRECT_AFTER_SECS`: the platform settles every payment within this.
    pub settle_direct_after: Duration,
    /// How long the settlement check waits for stragglers before judging.
    pub settle_limit: Duration,
    /// `QUEUE_ACTIVE_TTL_SECS`: how long a pass lasts from its admission.
    pub active_ttl: Duration,
}

/// What one scenario produced besides the recorder's samples.
#[derive(Default)]
pub struct Outcome {
    pub measured: Duration,
    pub facts: BTreeMap<String, String>,
    pub audit: Vec<Check>,
    pub sale: Option<SaleNumbers>,
    /// The figures only the scenario knows (the flash sale's counts and sell-out time); the
    /// run completes them from the recorder's rows ([`Figures::complete`]).
    pub figures: Figures,
}

impl Outcome {
    /// A run that adds nothing to the recorder's samples but how long it was measured.
    fn measured(measured: Duration) -> Self {
        Self {
            measured,
            ..Self::default()
        }
    }
}

fn record(rec: &Recorder, name: &str, reply: Reply) -> Reply {
    rec.record(name, &reply);
    reply
}

/// Waits for the concert's payments to settle (at most `k.settle_limit`), then records each
/// payment → CONFIRMED latency as the database's clock saw it.
async fn settle(k: &Knobs, p: &Platform, concert: i64, rec: &Recorder) -> anyhow::Result<Settled> {
    let settled = audit::settle(p, concert, k.settle_limit).await?;
    for d in audit::confirm_latencies(p, concert).await? {
        rec.record_latency("payment → CONFIRMED (database clock)", d);
    }
    Ok(settled)
}

pub async fn run(
    scenario: Scenario,
    k: &Knobs,
    p: &mut Platform,
    rec: Arc<Recorder>,
) -> anyhow::Result<Outcome> {
    match scenario {
        Scenario::Baseline => endpoints::baseline(k, p, rec).await,
        Scenario::QueueJoin => endpoints::queue_join(k, p, rec).await,
        Scenario::QueuePoll => endpoints::queue_poll(k, p, rec).await,
        Scenario::SeatMap => endpoints::seat_map(k, p, rec).await,
        Scenario::HoldDistinct => endpoints::hold_distinct(k, p, rec).await,
        Scenario::HoldContended => endpoints::hold_contended(k, p, rec).await,
        Scenario::Charge => endpoints::charge(k, p, rec).await,
        Scenario::Pay => endpoints::pay(k, p, rec).await,
        Scenario::FlashSale => flash_sale::flash_sale(k, p, rec).await,
        Scenario::WaitingRoom => {
            anyhow::bail!(
                "waiting-room runs on its own (crate::waiting_room), not through the gateway"
            )
        }
    }
}
