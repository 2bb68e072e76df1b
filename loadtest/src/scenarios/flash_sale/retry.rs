//! How a fan rides out the platform's faults (a 5xx, no answer): the same request again after
//! a growing, jittered pause, until it is answered or the sale is over.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::Method;
use serde_json::Value;

use super::Sale;
use crate::http::{Auth, Reply};
use crate::scenarios::record;

/// A fan's pause after a fault answer (5xx, no answer): doubling from the first to the most.
const FAULT_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const FAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The pause before the next try after `attempt` faults in a row, with ±20 % jitter so that a
/// crowd turned away together does not come back together.
pub(super) fn backoff(attempt: u32) -> Duration {
    FAULT_BACKOFF_FIRST
        .saturating_mul(1 << attempt.min(8))
        .min(FAULT_BACKOFF_MAX)
        .mul_f64(rand::random_range(0.8..1.2))
}

impl Sale {
    /// Sends one request until the platform answers it, backing off after each fault (the
    /// gateway's 502 while a service restarts, a refused connection) as a client would. Only
    /// for requests that are safe to repeat. None when the sale ended meanwhile.
    pub(super) async fn call(
        &self,
        name: &str,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> Option<Reply> {
        let body = body.map(|b| b.to_string().into_bytes());
        let mut attempt = 0;
        loop {
            let reply = record(
                &self.rec,
                name,
                self.http
                    .send(method.clone(), path, auth.clone(), body.clone())
                    .await,
            );
            if !reply.is_fault() {
                return Some(reply);
            }
            if self.over() {
                return None;
            }
            self.fault_retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;
    use crate::faults::Window;
    use crate::scenarios::flash_sale::count;
    use crate::scenarios::flash_sale::fake::{Fake, fan, sale};

    #[tokio::test]
    async fn a_fan_retries_through_a_502_and_a_dropped_connection_and_both_are_counted() {
        let fake = Fake::start(|_, before| match before {
            0 => Some((502, json!({"status": 502}))),
            1 => None,
            _ => Some((200, json!({"status": "ACTIVE"}))),
        })
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        let reply = s
            .call("GET /x", Method::GET, "/x", fan().auth(), None)
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(count(&s.fault_retries), 2);
        assert_eq!(s.rec.count("GET /x", 502), 1);
        assert_eq!(s.rec.count("GET /x", 0), 1);
        let split = s.rec.error_split(&[], Duration::ZERO);
        assert_eq!(
            (split.outside.server_errors, split.outside.transport_errors),
            (1, 1)
        );
        // The same errors, inside a window that covers the whole run, are not outside.
        let all = Window {
            label: "everything".into(),
            start_unix_ms: 0,
            end_unix_ms: None,
        };
        let split = s.rec.error_split(&[all], Duration::ZERO);
        assert_eq!((split.inside.failures(), split.outside.failures()), (2, 0));
    }

    #[tokio::test]
    async fn a_fan_stops_retrying_once_the_sale_is_over() {
        let fake = Fake::start(|_, _| Some((502, json!({})))).await;
        let s = sale(&fake, Duration::from_secs(1));
        s.over.store(true, Ordering::Relaxed);
        assert!(
            s.call("GET /x", Method::GET, "/x", fan().auth(), None)
                .await
                .is_none()
        );
        assert_eq!(fake.seen("GET", "/x").len(), 1);
    }

    #[test]
    fn the_backoff_grows_to_its_ceiling() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            let base = FAULT_BACKOFF_FIRST
                .saturating_mul(1 << attempt.min(8))
                .min(FAULT_BACKOFF_MAX);
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                "{attempt}: {d:?}"
            );
        }
    }
}
