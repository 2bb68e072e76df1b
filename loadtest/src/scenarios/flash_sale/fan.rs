//! One fan's way through the sale: arrive, wait in line until ACTIVE, hold a seat, buy it.
//! Each step gives up once the sale is over, and the fan is counted where it stopped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::Method;
use serde_json::json;

use super::Sale;
use crate::fixture::User;

impl Sale {
    /// One fan, from arrival after `arrive_after` to a bought seat, counted where it stopped.
    pub(super) async fn fan(self: Arc<Self>, mut u: User, arrive_after: Duration) {
        tokio::time::sleep(arrive_after).await;
        if self.wait(&mut u).await.is_none() {
            self.left_waiting.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(reservation) = self.hold(&u).await else {
            self.left_active.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.buy(&u, reservation).await {
            self.sold.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A queue token for the concert, asked for up to ten times half a second apart; None when
    /// none came or the sale ended.
    async fn join(&self, u: &User) -> Option<String> {
        let body = json!({"concert_id": self.concert});
        for _ in 0..10 {
            let reply = self
                .call(
                    "POST /api/queue/tokens",
                    Method::POST,
                    "/api/queue/tokens",
                    u.auth(),
                    Some(&body),
                )
                .await?;
            if let Some(t) = reply.json()["token"].as_str() {
                return Some(t.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    /// Waits in line (polling at the pace the ETA suggests) until ACTIVE; None when the sale
    /// ended first.
    async fn wait(&self, u: &mut User) -> Option<()> {
        let mut pass = self.join(u).await?;
        let mut pause = self.poll;
        loop {
            let jitter = rand::random_range(0.8..1.2);
            tokio::time::sleep(pause.mul_f64(jitter)).await;
            if self.over() {
                return None;
            }
            let path = format!("/api/queue/tokens/{pass}");
            let status = self
                .call(
                    "GET /api/queue/tokens/{token}",
                    Method::GET,
                    &path,
                    u.auth(),
                    None,
                )
                .await?
                .json();
            match status["status"].as_str() {
                Some("ACTIVE") => {
                    u.pass = Some(pass);
                    return Some(());
                }
                Some("EXPIRED") => pass = self.join(u).await?,
                _ => {
                    let eta = status["eta_seconds"].as_f64().unwrap_or(0.0);
                    pause = Duration::from_secs_f64(
                        (eta / 2.0).clamp(self.poll.as_secs_f64(), 5.0 * self.poll.as_secs_f64()),
                    );
                }
            }
        }
    }
}
