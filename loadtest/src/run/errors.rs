//! The run's error answers against the fault log of a drill, and the checks they add to the
//! audit: the log could be read, and a flash sale had no 5xx or failed connection outside it.

use std::time::Duration;

use crate::RunArgs;
use crate::faults;
use crate::report::Check;
use crate::scenarios::Scenario;
use crate::stats::Recorder;

/// The recorder's error answers split by `--fault-log` (if any), with the checks that follow
/// from them pushed onto `audit`.
pub fn judge(recorder: &Recorder, args: &RunArgs, audit: &mut Vec<Check>) -> faults::ErrorSplit {
    let margin = Duration::from_secs(args.fault_margin_secs);
    let (errors, unreadable) = error_split(recorder, args.fault_log.as_deref(), margin);
    if let Some(why) = unreadable {
        audit.push(Check {
            name: "fault log readable".into(),
            ok: false,
            detail: why,
        });
    }
    if args.scenario == Scenario::FlashSale {
        let failures = errors.outside.failures();
        let detail = if errors.fault_log.is_some() {
            format!(
                "{failures} answers were 5xx or failed connections outside the {} fault \
                 window(s) (each stretched {} s past its end); {} inside them, not counted",
                errors.windows.len(),
                args.fault_margin_secs,
                errors.inside.failures()
            )
        } else {
            format!("{failures} answers were 5xx or failed connections")
        };
        audit.push(Check {
            name: "no 5xx or failed connection".into(),
            ok: failures == 0,
            detail,
        });
    }
    errors
}

/// The recorder's error answers split by the windows of `fault_log` (none without one), and
/// why the log could not be used, if it could not: then every error counts as outside.
fn error_split(
    recorder: &Recorder,
    fault_log: Option<&std::path::Path>,
    margin: Duration,
) -> (faults::ErrorSplit, Option<String>) {
    let Some(path) = fault_log else {
        return (recorder.error_split(&[], margin), None);
    };
    let windows = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| faults::parse(&text));
    let (windows, unreadable) = match windows {
        Ok(w) => (w, None),
        Err(e) => (Vec::new(), Some(format!("{}: {e}", path.display()))),
    };
    let mut split = recorder.error_split(&windows, margin);
    split.fault_log = Some(path.display().to_string());
    (split, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn reply(status: u16, sent: u64) -> crate::http::Reply {
        crate::http::Reply {
            status,
            retry_after: None,
            body: bytes::Bytes::new(),
            sent_unix_ms: sent,
            elapsed: Duration::from_millis(10),
        }
    }

    #[test]
    fn errors_are_split_by_the_fault_log_read_at_the_end() {
        let rec = Recorder::default();
        rec.record("POST /api/payments", &reply(201, 1_000));
        rec.record("POST /api/payments", &reply(502, 1_500));
        rec.record("GET /api/reservations/{id}", &reply(0, 1_600));
        rec.record("POST /api/payments", &reply(503, 9_000));
        let dir = std::env::temp_dir().join(format!("loadtest-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("faults.log");
        std::fs::write(&log, "# drill\n1400 1700 payment-api killed\n").unwrap();

        let (split, unreadable) = error_split(&rec, Some(&log), secs(1));
        assert_eq!(unreadable, None);
        assert_eq!(split.fault_log, Some(log.display().to_string()));
        assert_eq!(split.windows.len(), 1);
        assert_eq!(split.inside.server_errors, 1);
        assert_eq!(split.inside.transport_errors, 1);
        assert_eq!(split.outside.failures(), 1);
        assert_eq!(split.outside.by_answer["POST /api/payments 503"], 1);

        // No log: everything is outside. An unreadable one says so and places nothing.
        let (plain, _) = error_split(&rec, None, secs(1));
        assert_eq!((plain.fault_log, plain.outside.failures()), (None, 3));
        let missing = dir.join("absent.log");
        let (split, unreadable) = error_split(&rec, Some(&missing), secs(1));
        assert!(unreadable.is_some_and(|why| why.contains("absent.log")));
        assert_eq!(split.outside.failures(), 3);
        std::fs::write(&log, "1400 soon payment-api killed\n").unwrap();
        let (_, unreadable) = error_split(&rec, Some(&log), secs(1));
        assert!(unreadable.is_some_and(|why| why.contains("line 1")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
