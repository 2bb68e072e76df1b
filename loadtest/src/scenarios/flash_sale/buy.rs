//! A fan buying its hold: the payment, repeated under one idempotency key until answered,
//! then the wait for CONFIRMED within the bound the platform promises.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;

use super::Sale;
use super::retry::backoff;
use crate::fixture::User;
use crate::http::Auth;
use crate::scenarios::record;

/// How often a buyer re-reads its reservation after paying.
const CONFIRM_POLL: Duration = Duration::from_millis(250);

/// How a payment attempt ended.
enum Paid {
    /// 201 now (its latency is measured from here), or ALREADY_PAID by an earlier try.
    Now,
    Earlier,
    Refused,
}

impl Sale {
    /// Pays the hold, repeating the request (same idempotency key, so at most one charge)
    /// through faults and while an earlier try of the same key is still running.
    async fn pay(&self, u: &User, reservation: i64) -> Paid {
        let key = format!("sale-{reservation}");
        let auth = Auth {
            idempotency_key: Some(&key),
            ..u.auth()
        };
        let body = json!({"reservation_id": reservation});
        let mut attempt = 0;
        loop {
            let Some(reply) = self
                .call(
                    "POST /api/payments",
                    Method::POST,
                    "/api/payments",
                    auth.clone(),
                    Some(&body),
                )
                .await
            else {
                return Paid::Refused;
            };
            match (reply.status, reply.code().as_deref()) {
                (201, _) => return Paid::Now,
                (409, Some("ALREADY_PAID")) => return Paid::Earlier,
                (409, Some("IDEMPOTENCY_KEY_IN_USE")) if !self.over() => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                _ => return Paid::Refused,
            }
        }
    }

    /// Pays, then waits for CONFIRMED — at most `confirm_timeout` after the payment, the
    /// bound past which the platform has broken its promise (DESIGN §9.4).
    pub(super) async fn buy(&self, u: &User, reservation: i64) -> bool {
        let measured = match self.pay(u, reservation).await {
            Paid::Now => true,
            Paid::Earlier => false,
            Paid::Refused => {
                if !self.is_lost(u) {
                    self.payment_refused.fetch_add(1, Ordering::Relaxed);
                }
                return false;
            }
        };
        let paid_at = Instant::now();
        let path = format!("/api/reservations/{reservation}");
        while paid_at.elapsed() < self.confirm_timeout {
            tokio::time::sleep(CONFIRM_POLL).await;
            let reply = record(
                &self.rec,
                "GET /api/reservations/{id}",
                self.http.get(&path, u.auth()).await,
            );
            if self.note_lost(&u.auth(), &reply) {
                // Logged in again, the fan pays again: the payment is found, not repeated.
                return false;
            }
            if reply.is_fault() {
                // Polled again at the same pace: that is backoff enough.
                self.fault_retries.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match reply.json()["status"].as_str() {
                Some("CONFIRMED") => {
                    if measured {
                        self.rec.record_latency(
                            "payment → CONFIRMED (client, 250 ms polls)",
                            paid_at.elapsed(),
                        );
                    }
                    return true;
                }
                // Paid but not to be confirmed: the payment is refunded.
                Some("REJECTED" | "EXPIRED" | "CANCELLED") => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                _ => {}
            }
        }
        self.gave_up_confirm.fetch_add(1, Ordering::Relaxed);
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::scenarios::flash_sale::count;
    use crate::scenarios::flash_sale::fake::{Fake, fan, held, sale};

    #[tokio::test]
    async fn a_payment_is_repeated_with_its_idempotency_key_until_answered() {
        let fake = Fake::start(|seen, before| {
            assert_eq!(seen.path, "/api/payments");
            match before {
                0 => Some((
                    503,
                    json!({"status": 503, "code": "CONCERT_API_UNAVAILABLE"}),
                )),
                1 => Some((
                    409,
                    json!({"status": 409, "code": "IDEMPOTENCY_KEY_IN_USE"}),
                )),
                _ => Some((201, json!({"id": 5, "status": "COMPLETED"}))),
            }
        })
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        assert!(matches!(s.pay(&fan(), 7).await, Paid::Now));
        let tries = fake.seen("POST", "/api/payments");
        assert_eq!(tries.len(), 3);
        assert!(
            tries
                .iter()
                .all(|t| t.headers["idempotency-key"] == "sale-7")
        );
        assert_eq!(count(&s.fault_retries), 1);
    }

    #[tokio::test]
    async fn a_fan_gives_up_waiting_for_confirmation_after_the_bound_and_is_counted() {
        let fake = Fake::start(|seen, _| match seen.method.as_str() {
            "POST" => Some((201, json!({"id": 5}))),
            _ => Some((200, held(9))),
        })
        .await;
        let s = sale(&fake, Duration::from_millis(600));
        assert!(!s.buy(&fan(), 9).await);
        assert_eq!(count(&s.gave_up_confirm), 1);
        assert_eq!(count(&s.rejected), 0);
    }

    #[tokio::test]
    async fn a_rejected_reservation_ends_the_wait_and_faults_while_polling_are_retried() {
        let fake = Fake::start(|seen, before| match (seen.method.as_str(), before) {
            ("POST", _) => Some((201, json!({"id": 5}))),
            (_, 0) => Some((502, json!({}))),
            (_, 1) => Some((200, held(9))),
            _ => Some((200, json!({"id": 9, "status": "REJECTED"}))),
        })
        .await;
        let s = sale(&fake, Duration::from_secs(60));
        assert!(!s.buy(&fan(), 9).await);
        assert_eq!(count(&s.rejected), 1);
        assert_eq!(count(&s.gave_up_confirm), 0);
        assert_eq!(count(&s.fault_retries), 1);
    }

    #[tokio::test]
    async fn a_confirmed_purchase_is_measured() {
        let fake = Fake::start(|seen, _| match seen.method.as_str() {
            "POST" => Some((201, json!({"id": 5}))),
            _ => Some((200, json!({"id": 9, "status": "CONFIRMED"}))),
        })
        .await;
        let s = sale(&fake, Duration::from_secs(60));
        assert!(s.buy(&fan(), 9).await);
        let latencies = s.rec.summary(Duration::from_secs(1));
        assert!(
            latencies
                .iter()
                .any(|l| l.name.starts_with("payment → CONFIRMED (client") && l.requests == 1)
        );
    }
}
