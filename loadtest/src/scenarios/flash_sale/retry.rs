//! How a fan rides out the platform's faults (a 5xx, no answer): the same request again after
//! a growing, jittered pause, until it is answered or the sale is over. And how it takes the
//! gateway's 429 (a per-address or per-session limit): the same request again, no sooner
//! than its `Retry-After` says.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::Method;
use serde_json::Value;

use super::{Lost, Sale};
use crate::fixture::{PASSWORD, User};
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

/// The pause a 429 asks for: its `Retry-After` (1 s without one), stretched by up to half
/// again so that a crowd refused together does not come back together; never shorter.
pub(super) fn rate_limit_pause(reply: &Reply) -> Duration {
    reply
        .retry_after
        .unwrap_or(Duration::from_secs(1))
        .mul_f64(rand::random_range(1.0..1.5))
}

impl Sale {
    /// After a 429: counts it and waits as long as it asks. False when the sale is over
    /// (nothing left to retry for).
    pub(super) async fn wait_out_limit(&self, reply: &Reply) -> bool {
        if self.over() {
            return false;
        }
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(rate_limit_pause(reply)).await;
        !self.over()
    }

    /// Whether `reply` says the platform no longer knows the session of `auth`, or its queue
    /// pass; if so the session is remembered as lost (a lost session outweighs a lost pass)
    /// until its fan [takes](Sale::take_lost) it.
    pub(super) fn note_lost(&self, auth: &Auth<'_>, reply: &Reply) -> bool {
        let Some(session) = auth.session else {
            return false;
        };
        let lost = match (reply.status, reply.code().as_deref()) {
            (401, Some("UNAUTHENTICATED")) => Lost::Session,
            (401, Some("QUEUE_TOKEN_INVALID")) | (404, Some("QUEUE_TOKEN_NOT_FOUND")) => Lost::Pass,
            _ => return false,
        };
        let mut all = self
            .lost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = all.entry(session.to_owned()).or_insert(lost);
        if lost == Lost::Session {
            *known = Lost::Session;
        }
        true
    }

    /// Whether the fan's session or pass was lost (and its step stopped because of it).
    pub(super) fn is_lost(&self, u: &User) -> bool {
        self.lost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&u.session)
    }

    /// What the session lost, forgetting it.
    pub(super) fn take_lost(&self, session: &str) -> Option<Lost> {
        self.lost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(session)
    }

    /// Logs `username` in again (its password is the load test's), riding out faults and the
    /// log-in's 503 LOGIN_BUSY as [`Sale::call`] does: the new session token, or None when the
    /// sale ended first or the log-in was refused.
    pub(super) async fn log_in(&self, username: &str) -> Option<String> {
        let body = serde_json::json!({"username": username, "password": PASSWORD});
        let reply = self
            .call(
                "POST /api/sessions",
                Method::POST,
                "/api/sessions",
                Auth::default(),
                Some(&body),
            )
            .await?;
        (reply.status == 201)
            .then(|| reply.json()["token"].as_str().map(str::to_owned))
            .flatten()
    }

    /// Sends one request until the platform answers it, backing off after each fault (the
    /// gateway's 502 while a service restarts, a refused connection) as a client would, and
    /// waiting out a 429 (a refused request did nothing). Only for requests that are safe to
    /// repeat. None when the sale ended meanwhile.
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
            // A 429, or the log-in's 503 LOGIN_BUSY: refused before any work, come back after
            // its Retry-After.
            if reply.status == 429
                || (reply.status == 503 && reply.code().as_deref() == Some("LOGIN_BUSY"))
            {
                if !self.wait_out_limit(&reply).await {
                    return None;
                }
                continue;
            }
            if self.note_lost(&auth, &reply) {
                return None;
            }
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
            // The connection kept after the 502 is dropped, and so is the fresh one the
            // client sends the GET again on: a real failure, not a stale keep-alive.
            1 | 2 => None,
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

    #[tokio::test]
    async fn a_fan_refused_with_429_waits_its_retry_after_and_repeats() {
        // The fake answers 429 with `Retry-After: 1`, as the gateway does.
        let fake = Fake::start(|_, before| match before {
            0 => Some((429, json!({"code": "RATE_LIMITED"}))),
            _ => Some((200, json!({"status": "ACTIVE"}))),
        })
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        let reply = s
            .call("GET /x", Method::GET, "/x", fan().auth(), None)
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(count(&s.rate_limited), 1);
        assert_eq!(count(&s.fault_retries), 0);
        assert_eq!(s.rec.count("GET /x", 429), 1);
        let seen = fake.seen("GET", "/x");
        assert_eq!(seen.len(), 2);
        assert!(
            seen[1].at - seen[0].at >= Duration::from_secs(1),
            "not sooner than Retry-After: {:?}",
            seen[1].at - seen[0].at
        );
    }

    #[test]
    fn the_rate_limit_pause_is_never_shorter_than_retry_after() {
        let reply = |retry_after| Reply {
            status: 429,
            retry_after,
            body: Default::default(),
            sent_unix_ms: 0,
            elapsed: Duration::ZERO,
        };
        for _ in 0..100 {
            let d = rate_limit_pause(&reply(Some(Duration::from_secs(5))));
            assert!(
                d >= Duration::from_secs(5) && d <= Duration::from_millis(7500),
                "{d:?}"
            );
            let d = rate_limit_pause(&reply(None));
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_millis(1500),
                "{d:?}"
            );
        }
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
