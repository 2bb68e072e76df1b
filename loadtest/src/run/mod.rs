//! One `loadtest run`: the knobs read from the flags and the environment, the scenario run
//! against the platform through the gateway, and its report put together.

mod errors;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use common::config::Env;

use crate::RunArgs;
use crate::audit;
use crate::drive::Load;
use crate::fixture;
use crate::report::Report;
use crate::scenarios::{self, Knobs, Scenario};
use crate::stats::Recorder;

/// The margin the settlement check and a waiting fan give the platform's backstop beyond
/// `PAYMENT_SETTLE_DIRECT_AFTER_SECS`: a tick of the reconciliation and the settling itself.
const SETTLE_MARGIN: Duration = Duration::from_secs(10);

/// How long the platform may take to settle a payment, and so how long the tool waits for it.
#[derive(Debug, PartialEq, Eq)]
struct Waits {
    /// `PAYMENT_SETTLE_DIRECT_AFTER_SECS`.
    settle_direct_after: Duration,
    /// The settlement check's longest wait for stragglers.
    settle_limit: Duration,
    /// A fan's longest wait for CONFIRMED (`--confirm-timeout-secs`).
    confirm_timeout: Duration,
}

/// `PAYMENT_SETTLE_DIRECT_AFTER_SECS` is read as payment-api reads it (same default, a bad
/// value is an error naming it), so that the tool waits as long as the platform may take.
fn waits(env: &Env, confirm_timeout_secs: Option<u64>) -> anyhow::Result<Waits> {
    let settle_direct_after = env.secs("PAYMENT_SETTLE_DIRECT_AFTER_SECS", 120, 1..=86_400)?;
    let settle_limit = settle_direct_after + SETTLE_MARGIN;
    Ok(Waits {
        settle_direct_after,
        settle_limit,
        confirm_timeout: confirm_timeout_secs.map_or(settle_limit, Duration::from_secs),
    })
}

/// Sets up and runs `args.scenario`, then puts its report together (the caller prints and
/// saves it).
pub async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let heavy = matches!(args.scenario, Scenario::HoldContended | Scenario::FlashSale);
    let concurrency = args.concurrency.unwrap_or(if heavy { 1000 } else { 64 });
    let users = args.users.unwrap_or(match args.scenario {
        Scenario::FlashSale => 10_000,
        Scenario::QueueJoin => 5_000,
        _ => 2_000,
    });
    let Waits {
        settle_direct_after,
        settle_limit,
        confirm_timeout,
    } = waits(&Env::process(), args.confirm_timeout_secs)?;
    let knobs = Knobs {
        load: Load {
            concurrency,
            duration: Duration::from_secs_f64(args.duration),
            rate: args.rate,
        },
        users,
        schedules: args.schedules,
        seats_per_schedule: args.seats_per_schedule,
        concert: args.concert,
        baseline_path: args.baseline_path.clone(),
        poll: Duration::from_millis(args.poll_ms),
        streaming_fans: args.streaming_fans.unwrap_or(usize::MAX),
        arrival: Duration::from_millis(args.arrival_ms),
        max_duration: Duration::from_secs(args.max_duration),
        confirm_timeout,
        settle_direct_after,
        settle_limit,
        // Read as users-api reads it, so that a pass's admission is its `active_until` minus it.
        active_ttl: Env::process().secs("QUEUE_ACTIVE_TTL_SECS", 600, 1..=86_400)?,
    };
    let scenario_name = clap::ValueEnum::to_possible_value(&args.scenario)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();

    let settings = settings::describe(&args, concurrency, users, confirm_timeout);
    let mut platform = fixture::Platform::connect(&args.gateway, concurrency).await?;
    let recorder = Arc::new(Recorder::default());
    let started_at = common::clock::Clock::system()
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    eprintln!("[loadtest] {scenario_name}: setting up, then measuring");
    let outcome = scenarios::run(args.scenario, &knobs, &mut platform, recorder.clone()).await?;
    let (latencies, endpoints): (Vec<_>, Vec<_>) = recorder
        .summary(outcome.measured)
        .into_iter()
        .partition(|s| s.statuses.is_empty());
    let figures = outcome
        .figures
        .complete(&scenario_name, &endpoints, &latencies);
    let mut audit = outcome.audit;
    let errors = errors::judge(&recorder, &args, &mut audit);
    Ok(Report {
        scenario: scenario_name,
        started_at,
        measured_seconds: outcome.measured.as_secs_f64(),
        settings,
        endpoints,
        latencies,
        memory: audit::memory(),
        audit,
        facts: outcome.facts,
        errors,
        sale: outcome.sale,
        figures: Some(figures),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_waits_follow_the_platforms_settlement_bound() {
        let defaults = waits(&Env::from_pairs([]), None).unwrap();
        assert_eq!(
            defaults,
            Waits {
                settle_direct_after: secs(120),
                settle_limit: secs(130),
                confirm_timeout: secs(130),
            }
        );
        let set = waits(
            &Env::from_pairs([("PAYMENT_SETTLE_DIRECT_AFTER_SECS", "20")]),
            Some(7),
        )
        .unwrap();
        assert_eq!((set.settle_limit, set.confirm_timeout), (secs(30), secs(7)));
        let bad = waits(
            &Env::from_pairs([("PAYMENT_SETTLE_DIRECT_AFTER_SECS", "soon")]),
            None,
        )
        .unwrap_err();
        assert!(
            bad.to_string().contains("PAYMENT_SETTLE_DIRECT_AFTER_SECS"),
            "{bad}"
        );
    }
}
