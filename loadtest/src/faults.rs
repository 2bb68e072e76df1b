//! Fault windows of a drill (bench/crash-drill.sh) and the error answers inside and outside
//! them. While a service is down the gateway answers 502 and that is the drill working, not a
//! platform fault; outside the windows every 5xx or failed connection still is one.
//!
//! The fault log is text, one window a line, read once at the end of the run:
//!
//! ```text
//! # start_unix_ms end_unix_ms label
//! 1764031200123 1764031206456 concert-api killed
//! 1764031210000 - payment-api killed
//! ```
//!
//! `end` is `-` while the window is still open (it then lasts to the end of the run); blank
//! lines and `#` comments are skipped; the label is the rest of the line.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One fault: from `start` (e.g. the kill) until `end` (the service ready again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub label: String,
    pub start_unix_ms: u64,
    /// `None`: not over when the log was read.
    pub end_unix_ms: Option<u64>,
}

/// The windows of a fault log; the error names the line that is not a window.
pub fn parse(text: &str) -> Result<Vec<Window>, String> {
    let mut windows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        let mut fields = line.splitn(3, char::is_whitespace);
        let start = fields
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("the start is not a Unix time in milliseconds"))?;
        let end = match fields.next().map(str::trim) {
            Some("-") => None,
            Some(e) => Some(
                e.parse::<u64>()
                    .map_err(|_| bad("the end is neither `-` nor a Unix time in milliseconds"))?,
            ),
            None => return Err(bad("no end")),
        };
        if end.is_some_and(|e| e < start) {
            return Err(bad("the window ends before it starts"));
        }
        windows.push(Window {
            label: fields.next().map_or("", str::trim).to_owned(),
            start_unix_ms: start,
            end_unix_ms: end,
        });
    }
    Ok(windows)
}

/// What kind of error an answer is; `None` for the answers a fan expects (2xx, and 409: a
/// seat taken or a hold gone is the sale's ordinary business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 5xx: the platform's own failure (or the gateway's, for a service that is down).
    Server,
    /// No HTTP answer: connection refused or reset, or the client's timeout.
    Transport,
    /// Any other non-2xx answer (401, 404, 429, ...).
    Unexpected,
}

/// [`kind`], knowing the problem's code: a 503 `LOGIN_BUSY` is the log-in's own back-pressure
/// (every password-hashing slot busy, come back after `Retry-After`), refused before any work
/// as a 429 is, so it counts with the other unexpected answers, not as a failure.
pub fn kind_of(status: u16, code: Option<&str>) -> Option<Kind> {
    match (status, code) {
        (503, Some("LOGIN_BUSY")) => Some(Kind::Unexpected),
        _ => kind(status),
    }
}

pub fn kind(status: u16) -> Option<Kind> {
    match status {
        0 => Some(Kind::Transport),
        200..=299 | 409 => None,
        500.. => Some(Kind::Server),
        _ => Some(Kind::Unexpected),
    }
}

/// One error answer and when its request was in flight.
#[derive(Debug, Clone)]
pub struct ErrorEvent {
    pub endpoint: String,
    pub status: u16,
    pub kind: Kind,
    pub sent_unix_ms: u64,
    pub answered_unix_ms: u64,
}

/// Error answers by kind, and by "endpoint status".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// 5xx answers.
    pub server_errors: u64,
    /// Requests with no HTTP answer (connection refused or reset, timed out).
    pub transport_errors: u64,
    /// Other non-2xx answers except 409.
    pub unexpected_answers: u64,
    /// The same, by "<endpoint> <status>" (status 0: no answer).
    pub by_answer: BTreeMap<String, u64>,
}

impl ErrorCounts {
    /// One answer, judged by [`kind_of`] (`None`: not an error, not counted).
    pub fn add(&mut self, endpoint: &str, status: u16, kind: Option<Kind>) {
        match kind {
            None => return,
            Some(Kind::Server) => self.server_errors += 1,
            Some(Kind::Transport) => self.transport_errors += 1,
            Some(Kind::Unexpected) => self.unexpected_answers += 1,
        }
        *self
            .by_answer
            .entry(format!("{endpoint} {status}"))
            .or_default() += 1;
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        self.server_errors += other.server_errors;
        self.transport_errors += other.transport_errors;
        self.unexpected_answers += other.unexpected_answers;
        for (k, v) in &other.by_answer {
            *self.by_answer.entry(k.clone()).or_default() += v;
        }
    }

    /// 5xx and failed connections: what the "zero 5xx" check counts.
    pub fn failures(&self) -> u64 {
        self.server_errors + self.transport_errors
    }

    /// "3 5xx, 1 transport, 0 unexpected (POST /api/payments 502 ×3, ...)".
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} 5xx, {} transport, {} unexpected",
            self.server_errors, self.transport_errors, self.unexpected_answers
        );
        if !self.by_answer.is_empty() {
            let parts: Vec<String> = self
                .by_answer
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect();
            text.push_str(&format!(" ({})", parts.join(", ")));
        }
        text
    }
}

/// One window of the fault log and the errors placed in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowErrors {
    pub label: String,
    pub start_unix_ms: u64,
    /// `None`: still open when the log was read.
    pub end_unix_ms: Option<u64>,
    pub errors: ErrorCounts,
    /// What every answer (not only the errors) looked like during the window and after it.
    /// Reports saved before it existed read as empty.
    #[serde(default)]
    pub answers: WindowAnswers,
}

/// One request's answer on the run's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub sent_unix_ms: u64,
    pub elapsed_us: u64,
    /// [`kind_of`] its answer.
    pub kind: Option<Kind>,
}

impl Answered {
    fn answered_unix_ms(&self) -> u64 {
        self.sent_unix_ms + self.elapsed_us / 1000
    }
}

/// The answers a window claims (in flight during it or its margin) and the answers after it
/// (sent after the margin, until the next window opens or the run ends): how many, how many
/// failed (5xx, no answer), and their p99 latency; and when the platform had recovered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowAnswers {
    pub during: u64,
    pub failed_during: u64,
    /// Other error answers (401, 404, 429, ...) during the window.
    pub other_errors_during: u64,
    pub p99_ms_during: f64,
    pub after: u64,
    pub failed_after: u64,
    pub p99_ms_after: f64,
    /// From the window's start until the fault was over and the last failure it caused was
    /// answered: the later of the window's end and that answer. `None` for a window still open.
    pub recovered_after_seconds: Option<f64>,
}

fn p99_ms(mut us: Vec<u64>) -> f64 {
    if us.is_empty() {
        return 0.0;
    }
    us.sort_unstable();
    let i = ((us.len() as f64 * 0.99).ceil() as usize).clamp(1, us.len()) - 1;
    us[i] as f64 / 1000.0
}

/// [`WindowAnswers`] of each window over the run's `timeline`.
pub fn answers(timeline: &[Answered], windows: &[Window], margin: Duration) -> Vec<WindowAnswers> {
    let margin_ms = margin.as_millis() as u64;
    windows
        .iter()
        .map(|w| {
            let until = w
                .end_unix_ms
                .map_or(u64::MAX, |end| end.saturating_add(margin_ms));
            let next = windows
                .iter()
                .map(|o| o.start_unix_ms)
                .filter(|&s| s > w.start_unix_ms)
                .min()
                .unwrap_or(u64::MAX);
            let (mut during, mut after) = (Vec::new(), Vec::new());
            let mut out = WindowAnswers::default();
            let mut last_failure = None;
            for a in timeline {
                let failed = matches!(a.kind, Some(Kind::Server | Kind::Transport));
                if a.sent_unix_ms <= until && a.answered_unix_ms() >= w.start_unix_ms {
                    during.push(a.elapsed_us);
                    if failed {
                        out.failed_during += 1;
                        last_failure = last_failure.max(Some(a.answered_unix_ms()));
                    } else if a.kind.is_some() {
                        out.other_errors_during += 1;
                    }
                } else if a.sent_unix_ms > until && a.sent_unix_ms < next {
                    after.push(a.elapsed_us);
                    out.failed_after += u64::from(failed);
                }
            }
            (out.during, out.after) = (during.len() as u64, after.len() as u64);
            out.p99_ms_during = p99_ms(during);
            out.p99_ms_after = p99_ms(after);
            out.recovered_after_seconds = w.end_unix_ms.map(|end| {
                let over = end.max(last_failure.unwrap_or(0));
                over.saturating_sub(w.start_unix_ms) as f64 / 1000.0
            });
            out
        })
        .collect()
}

/// A run's error answers, split by the fault windows (all outside when there are none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorSplit {
    /// The `--fault-log` read at the end of the run, if one was given.
    pub fault_log: Option<String>,
    /// How long after its end a window still claims errors (stragglers of the fault).
    pub margin_seconds: f64,
    pub windows: Vec<WindowErrors>,
    /// Every window's errors together.
    pub inside: ErrorCounts,
    pub outside: ErrorCounts,
}

/// Places each error in the first window its request overlaps (the window stretched by
/// `margin` past its end); the rest are outside. A request in flight at any moment of a
/// window counts for it: one sent just before a kill fails because of it.
pub fn split(events: &[ErrorEvent], windows: &[Window], margin: Duration) -> ErrorSplit {
    let margin_ms = margin.as_millis() as u64;
    let mut placed: Vec<WindowErrors> = windows
        .iter()
        .map(|w| WindowErrors {
            label: w.label.clone(),
            start_unix_ms: w.start_unix_ms,
            end_unix_ms: w.end_unix_ms,
            errors: ErrorCounts::default(),
            answers: WindowAnswers::default(),
        })
        .collect();
    let mut out = ErrorSplit {
        margin_seconds: margin.as_secs_f64(),
        ..ErrorSplit::default()
    };
    for e in events {
        let window = windows.iter().position(|w| {
            let until = w
                .end_unix_ms
                .map_or(u64::MAX, |end| end.saturating_add(margin_ms));
            e.sent_unix_ms <= until && e.answered_unix_ms >= w.start_unix_ms
        });
        match window {
            Some(i) => placed[i].errors.add(&e.endpoint, e.status, Some(e.kind)),
            None => out.outside.add(&e.endpoint, e.status, Some(e.kind)),
        }
    }
    for w in &placed {
        out.inside.merge(&w.errors);
    }
    out.windows = placed;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(endpoint: &str, status: u16, sent: u64, answered: u64) -> ErrorEvent {
        ErrorEvent {
            endpoint: endpoint.into(),
            status,
            kind: kind(status).unwrap(),
            sent_unix_ms: sent,
            answered_unix_ms: answered,
        }
    }

    #[test]
    fn a_fault_log_has_windows_comments_and_open_ends() {
        let text =
            "# start end label\n\n1000 2000 concert-api killed\n  3000 - users-api killed  \n";
        assert_eq!(
            parse(text),
            Ok(vec![
                Window {
                    label: "concert-api killed".into(),
                    start_unix_ms: 1000,
                    end_unix_ms: Some(2000),
                },
                Window {
                    label: "users-api killed".into(),
                    start_unix_ms: 3000,
                    end_unix_ms: None,
                },
            ])
        );
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse("5 6").map(|w| w[0].label.clone()), Ok(String::new()));
    }

    #[test]
    fn a_line_that_is_not_a_window_is_named() {
        for bad in ["soon 2000 x", "1000", "1000 later x", "2000 1000 backwards"] {
            let err = parse(&format!("1 2 ok\n{bad}\n")).unwrap_err();
            assert!(err.starts_with("line 2:"), "{bad}: {err}");
        }
    }

    #[test]
    fn only_failures_and_unexpected_answers_are_errors() {
        assert_eq!(kind(200), None);
        assert_eq!(kind(201), None);
        assert_eq!(kind(409), None);
        assert_eq!(kind(0), Some(Kind::Transport));
        assert_eq!(kind(502), Some(Kind::Server));
        assert_eq!(kind(503), Some(Kind::Server));
        assert_eq!(kind(401), Some(Kind::Unexpected));
        assert_eq!(kind(429), Some(Kind::Unexpected));
        assert_eq!(kind_of(503, Some("LOGIN_BUSY")), Some(Kind::Unexpected));
        assert_eq!(
            kind_of(503, Some("DEPENDENCY_UNAVAILABLE")),
            Some(Kind::Server)
        );
        let mut c = ErrorCounts::default();
        for s in [200, 409, 0, 502, 502, 401] {
            c.add("GET /x", s, kind(s));
        }
        assert_eq!(
            (c.server_errors, c.transport_errors, c.unexpected_answers),
            (2, 1, 1)
        );
        assert_eq!(c.failures(), 3);
        assert_eq!(c.by_answer["GET /x 502"], 2);
        assert!(!c.by_answer.contains_key("GET /x 200"));
    }

    #[test]
    fn errors_in_flight_during_a_window_or_its_margin_are_inside() {
        let windows = parse("1000 2000 concert-api killed\n5000 - users-api killed\n").unwrap();
        let events = [
            event("A", 502, 1500, 1510), // during the first window
            event("A", 0, 900, 1001),    // sent before the kill, failed by it
            event("A", 502, 2400, 2410), // within the 500 ms margin
            event("A", 502, 2600, 2610), // after the margin: outside
            event("B", 503, 100, 200),   // before any window: outside
            event("B", 0, 9_000, 9_001), // the second window is still open
            event("B", 401, 1200, 1201), // unexpected, inside
        ];
        let s = split(&events, &windows, Duration::from_millis(500));
        assert_eq!(s.margin_seconds, 0.5);
        assert_eq!(s.windows.len(), 2);
        assert_eq!(s.windows[0].label, "concert-api killed");
        assert_eq!(s.windows[0].errors.server_errors, 2);
        assert_eq!(s.windows[0].errors.transport_errors, 1);
        assert_eq!(s.windows[0].errors.unexpected_answers, 1);
        assert_eq!(s.windows[1].errors.transport_errors, 1);
        assert_eq!(s.inside.failures(), 4);
        assert_eq!(s.inside.unexpected_answers, 1);
        assert_eq!(s.outside.failures(), 2);
        assert_eq!(s.outside.by_answer["A 502"], 1);
        assert_eq!(s.outside.by_answer["B 503"], 1);
    }

    #[test]
    fn without_windows_every_error_is_outside() {
        let s = split(&[event("A", 500, 1, 2)], &[], Duration::from_secs(5));
        assert_eq!(s.outside.server_errors, 1);
        assert_eq!(s.inside, ErrorCounts::default());
    }

    #[test]
    fn describe_names_every_answer() {
        let mut c = ErrorCounts::default();
        c.add("POST /api/payments", 502, kind(502));
        c.add("POST /api/payments", 502, kind(502));
        assert_eq!(
            c.describe(),
            "2 5xx, 0 transport, 0 unexpected (POST /api/payments 502 ×2)"
        );
    }

    #[test]
    fn a_window_claims_the_answers_in_flight_during_it_and_the_rest_come_after() {
        let windows = parse("1000 2000 redis cut\n9000 9500 kafka paused\n").unwrap();
        let at = |sent: u64, ms: u64, status: u16| Answered {
            sent_unix_ms: sent,
            elapsed_us: ms * 1000,
            kind: kind(status),
        };
        let timeline = [
            at(500, 10, 200),  // before: neither
            at(1200, 5, 503),  // during
            at(1800, 1400, 0), // during; answered at 3200, after the margin: recovery
            at(2100, 20, 401), // within the 500 ms margin: during, another error
            at(2600, 30, 200), // after
            at(3000, 40, 502), // after, failed
            at(9100, 7, 200),  // the next window's
        ];
        let a = answers(&timeline, &windows, Duration::from_millis(500));
        assert_eq!(
            (a[0].during, a[0].failed_during, a[0].other_errors_during),
            (3, 2, 1)
        );
        assert_eq!(a[0].p99_ms_during, 1400.0);
        assert_eq!((a[0].after, a[0].failed_after), (2, 1));
        assert_eq!(a[0].p99_ms_after, 40.0);
        assert_eq!(a[0].recovered_after_seconds, Some(2.2));
        // A window whose failures end before it does recovers at its end.
        assert_eq!((a[1].during, a[1].after), (1, 0));
        assert_eq!(a[1].recovered_after_seconds, Some(0.5));
        let open = parse("1000 - still down\n").unwrap();
        assert_eq!(
            answers(&timeline, &open, Duration::ZERO)[0].recovered_after_seconds,
            None
        );
    }
}
