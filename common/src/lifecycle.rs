//! Running a service and stopping it cleanly: on SIGTERM/SIGINT (or a test's trigger) stop
//! accepting, drain in-flight requests, stop consumers and the relay, flush the producer.

use std::future::Future;
use std::time::Duration;

use actix_web::dev::Server;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::kafka::KafkaClient;

/// A built service: its HTTP server plus the background tasks it owns.
pub struct Service {
    name: &'static str,
    port: u16,
    server: Server,
    cancel: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    kafka: Option<KafkaClient>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    drain: Duration,
}

impl Service {
    pub fn new(name: &'static str, port: u16, server: Server, drain: Duration) -> Self {
        Self {
            name,
            port,
            server,
            cancel: CancellationToken::new(),
            tasks: Vec::new(),
            kafka: None,
            metrics: None,
            drain,
        }
    }

    /// The port actually bound (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Background tasks watch this token and return when it fires.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs `task` until shutdown; it must end soon after the cancel token fires.
    pub fn spawn<F>(&mut self, what: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push((what, tokio::spawn(task)));
    }

    /// Where the consumers' figures are exported (`/metrics`).
    pub fn export_metrics(&mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) {
        self.metrics = Some(metrics);
    }

    /// Runs a Kafka consumer for `topics` as this service's group until shutdown.
    pub fn spawn_consumer<H: crate::kafka::EventHandler>(
        &mut self,
        what: &'static str,
        kafka: KafkaClient,
        topics: &'static [&'static str],
        handler: H,
    ) {
        let (group, cancel) = (self.name, self.cancel.clone());
        let stats = std::sync::Arc::new(crate::kafka::ConsumerStats::default());
        if let Some(m) = &self.metrics {
            m.track_consumer(&kafka.topic(group), stats.clone());
        }
        self.spawn(what, async move {
            if let Err(e) =
                crate::kafka::run_consumer(kafka, group, topics, handler, stats, cancel).await
            {
                tracing::error!(consumer = what, error = %e, "consumer stopped");
            }
        });
    }

    /// The producer to flush at shutdown.
    pub fn flush_on_shutdown(&mut self, kafka: KafkaClient) {
        self.kafka = Some(kafka);
    }

    /// Serves until the server fails or `shutdown` completes, then shuts down in order.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        // The server future drives the server itself (including handling `stop`), so it runs
        // as its own task and keeps being polled while we wait for it to drain.
        let mut server = tokio::spawn(self.server);
        let result = tokio::select! {
            r = &mut server => r,
            () = shutdown => {
                tracing::info!(service = self.name, "shutting down: draining in-flight requests");
                // Graceful: stop accepting, let in-flight requests finish (up to the drain time).
                handle.stop(true).await;
                server.await
            }
        };
        let result = result.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.cancel.cancel();
        for (what, task) in self.tasks {
            if tokio::time::timeout(self.drain, task).await.is_err() {
                tracing::warn!(
                    service = self.name,
                    task = what,
                    "background task did not stop in time"
                );
            }
        }
        if let Some(kafka) = self.kafka {
            let drain = self.drain;
            let _ = tokio::task::spawn_blocking(move || kafka.flush(drain)).await;
        }
        tracing::info!(service = self.name, "stopped");
        result
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
