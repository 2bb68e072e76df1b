//! What the sale reports: the audit read from the databases once it is over, the fans' numbers
//! and the same facts in words.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{End, Sale, count};
use crate::audit;
use crate::fixture::Platform;
use crate::report::{Figures, SaleNumbers, purchases_per_second};
use crate::scenarios::{Knobs, Outcome, settle};

/// Audits the sale that `end` describes and puts its outcome together.
pub(super) async fn outcome(
    k: &Knobs,
    p: &Platform,
    sale: &Sale,
    ids: &[i64],
    end: End,
) -> anyhow::Result<Outcome> {
    let (concert, seats) = (sale.concert, sale.seats);
    let End {
        finished,
        measured,
        sold_out,
        sell_out,
    } = end;
    let settled = settle(k, p, concert, &sale.rec).await?;
    let mut audit = audit::sale(p, concert, seats, ids, k.concert.is_some(), &settled).await?;
    audit.extend(audit::money(p, ids).await?);
    let numbers = SaleNumbers {
        seats,
        bought: count(&sale.sold),
        confirm_timeout_seconds: k.confirm_timeout.as_secs_f64(),
        gave_up_confirm: count(&sale.gave_up_confirm),
        rejected_after_payment: count(&sale.rejected),
        payment_refused: count(&sale.payment_refused),
        left_waiting: count(&sale.left_waiting),
        left_without_seat: count(&sale.left_active),
        fault_retries: count(&sale.fault_retries),
        settle_direct_after_seconds: k.settle_direct_after.as_secs_f64(),
        settle_limit_seconds: k.settle_limit.as_secs_f64(),
        settle_waited_seconds: settled.waited.as_secs_f64(),
        unsettled_after_wait: settled.open as u64,
    };
    let mut facts = BTreeMap::new();
    facts.insert("seats".into(), seats.to_string());
    facts.insert(
        "seats bought (CONFIRMED seen by the buyer)".into(),
        numbers.bought.to_string(),
    );
    facts.insert(
        "sell-out time (every seat SOLD in the database)".into(),
        if finished {
            format!("{:.1} s", sold_out.as_secs_f64())
        } else {
            "not sold out".into()
        },
    );
    facts.insert(
        "hold retries (409 or a stale list)".into(),
        count(&sale.retries).to_string(),
    );
    facts.insert(
        "fans who logged in again (the platform lost their session)".into(),
        count(&sale.relogins).to_string(),
    );
    facts.insert(
        "fans who joined the line again (their pass was lost or ran out)".into(),
        count(&sale.rejoins).to_string(),
    );
    facts.insert(
        "fans still in line at sell-out".into(),
        numbers.left_waiting.to_string(),
    );
    facts.insert(
        "fans admitted but left without a seat".into(),
        numbers.left_without_seat.to_string(),
    );
    let admitted_after = sell_out
        .as_ref()
        .map(|s| sale.admitted_after(s.last_sale_at));
    if let (Some(s), Some(admitted)) = (&sell_out, admitted_after) {
        facts.insert(
            "fans admitted after the last seat sold".into(),
            admitted.to_string(),
        );
        facts.insert(
            "waiting room said SOLD_OUT after the last seat sold".into(),
            match s.room_sold_out_seen_at {
                // Seen by a look every 100 ms that began once the watcher saw the sell-out:
                // an upper bound on when the room said it.
                Some(at) => format!(
                    "within {:.2} s",
                    (at - s.last_sale_at).num_milliseconds().max(0) as f64 / 1000.0
                ),
                None => format!("not within {} s", super::SOLD_OUT_WAIT.as_secs()),
            },
        );
    }
    facts.insert(
        "status events the fans' streams delivered".into(),
        count(&sale.stream_events).to_string(),
    );
    facts.insert(
        "fans told SOLD_OUT while waiting".into(),
        count(&sale.told_sold_out).to_string(),
    );
    if let Some(s) = &sell_out {
        let after = |at: DateTime<Utc>| {
            format!(
                "{:.2} s",
                (at - s.last_sale_at).num_milliseconds() as f64 / 1000.0
            )
        };
        // A stream is pushed the change at its line's next reading (every
        // QUEUE_ADMIT_INTERVAL_MS); a polling fan learns it at its next poll (every --poll or
        // slower, as its ETA suggests).
        let (streamed, last_streamed) = sale.told_sold_out_by(true);
        let (polled, last_polled) = sale.told_sold_out_by(false);
        facts.insert(
            "fans waiting on the event stream told SOLD_OUT".into(),
            format!(
                "{streamed} of {} streaming, the last {} after the last seat sold",
                count(&sale.streaming),
                last_streamed.map_or("-".into(), after)
            ),
        );
        facts.insert(
            "polling fans told SOLD_OUT".into(),
            format!(
                "{polled}, the last {} after the last seat sold",
                last_polled.map_or("-".into(), after)
            ),
        );
    }
    // Only worth a line when something went wrong: a clean run keeps its report as it was.
    for (name, n) in [
        (
            "event streams refused or broken (those fans polled)",
            count(&sale.stream_breaks),
        ),
        (
            "requests retried after a 5xx or no answer",
            numbers.fault_retries,
        ),
        (
            "requests repeated after a 429 (Retry-After)",
            count(&sale.rate_limited),
        ),
        ("payments refused (4xx)", numbers.payment_refused),
        (
            "fans who paid and saw the reservation rejected (refunded)",
            numbers.rejected_after_payment,
        ),
    ] {
        if n > 0 {
            facts.insert(name.into(), n.to_string());
        }
    }
    if numbers.gave_up_confirm > 0 {
        facts.insert(
            "fans who paid and gave up waiting for CONFIRMED".into(),
            format!(
                "{} (after --confirm-timeout-secs {:.0})",
                numbers.gave_up_confirm, numbers.confirm_timeout_seconds
            ),
        );
    }
    facts.insert("settled after the sale".into(), settled.describe());
    if !finished {
        facts.insert(
            "stopped".into(),
            format!("after --max-duration {:?}", k.max_duration),
        );
    }
    // The same values as the facts above, as numbers (the run adds the endpoints' figures).
    let sell_out_seconds = finished.then_some(sold_out.as_secs_f64());
    let figures = Figures {
        fans: Some(ids.len() as u64),
        seats: Some(seats),
        sell_out_seconds,
        purchases_per_second: purchases_per_second(Some(numbers.bought), sell_out_seconds),
        fans_admitted_after_sell_out: admitted_after,
        ..Figures::default()
    };
    Ok(Outcome {
        measured,
        facts,
        audit,
        sale: Some(numbers),
        figures,
    })
}
