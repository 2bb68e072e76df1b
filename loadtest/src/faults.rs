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
    pub fn add(&mut self, endpoint: &str, status: u16) {
        match kind(status) {
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowErrors {
    pub label: String,
    pub start_unix_ms: u64,
    /// `None`: still open when the log was read.
    pub end_unix_ms: Option<u64>,
    pub errors: ErrorCounts,
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
            Some(i) => placed[i].errors.add(&e.endpoint, e.status),
            None => out.outside.add(&e.endpoint, e.status),
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
        let mut c = ErrorCounts::default();
        for s in [200, 409, 0, 502, 502, 401] {
            c.add("GET /x", s);
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
        c.add("POST /api/payments", 502);
        c.add("POST /api/payments", 502);
        assert_eq!(
            c.describe(),
            "2 5xx, 0 transport, 0 unexpected (POST /api/payments 502 ×2)"
        );
    }
}
