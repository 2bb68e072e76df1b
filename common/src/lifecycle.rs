//! Running a service and stopping it cleanly: on SIGTERM/SIGINT (or a test's trigger) stop
//! accepting, drain in-flight requests, stop consumers and the relay, flush the producer.
//!
//! The whole shutdown has one deadline (`SHUTDOWN_TIMEOUT_SECS`, [`Deadline`]): every step
//! gets what is left of it, a step still running when it passes is cut off (the HTTP server
//! stopped at once, a background task aborted), and `run_main` ends the process if anything
//! still hangs after it.

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
    /// Further listeners of the service's own, by name (users-api's `stream`).
    other_ports: Vec<(&'static str, u16)>,
    server: Server,
    cancel: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    kafka: Option<KafkaClient>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// The deadline of the whole shutdown, from the moment it starts.
    drain: Duration,
}

/// One deadline shared by every step of a shutdown: each step gets what is left of it.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: tokio::time::Instant,
}

impl Deadline {
    /// `total` from now.
    pub fn after(total: Duration) -> Self {
        Self {
            at: tokio::time::Instant::now() + total,
        }
    }

    pub fn at(&self) -> tokio::time::Instant {
        self.at
    }

    /// What is left of it (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.at
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// Runs `step` until it completes or the deadline passes: `None` (and a warning naming
    /// the step) if it was cut off. A step that is already complete still counts when the
    /// deadline has passed.
    pub async fn run<T>(
        &self,
        service: &str,
        step: &str,
        fut: impl Future<Output = T>,
    ) -> Option<T> {
        match tokio::time::timeout_at(self.at, fut).await {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(service, step, "shutdown deadline passed: step cut off");
                None
            }
        }
    }
}

impl Service {
    pub fn new(name: &'static str, port: u16, server: Server, drain: Duration) -> Self {
        Self {
            name,
            port,
            other_ports: Vec::new(),
            server,
            cancel: CancellationToken::new(),
            tasks: Vec::new(),
            kafka: None,
            metrics: None,
            drain,
        }
    }

    /// The deadline of the whole shutdown (`SHUTDOWN_TIMEOUT_SECS`).
    pub fn shutdown_timeout(&self) -> Duration {
        self.drain
    }

    /// The port actually bound (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Records a further listener the service serves on (its task is spawned apart).
    pub fn add_port(&mut self, name: &'static str, port: u16) {
        self.other_ports.push((name, port));
    }

    /// The further listeners, by name.
    pub fn other_ports(&self) -> &[(&'static str, u16)] {
        &self.other_ports
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

    /// Runs a Kafka consumer for `topics` as this service's group until shutdown, its
    /// messages fetched as `delivery` says.
    pub fn spawn_consumer<H: crate::kafka::EventHandler>(
        &mut self,
        what: &'static str,
        kafka: KafkaClient,
        topics: &'static [&'static str],
        delivery: crate::kafka::Delivery,
        handler: H,
    ) {
        let (group, cancel) = (self.name, self.cancel.clone());
        let stats = std::sync::Arc::new(crate::kafka::ConsumerStats::default());
        if let Some(m) = &self.metrics {
            m.track_consumer(&kafka.topic(group), stats.clone());
        }
        self.spawn(what, async move {
            if let Err(e) =
                crate::kafka::run_consumer(kafka, group, topics, delivery, handler, stats, cancel)
                    .await
            {
                tracing::error!(consumer = what, error = %e, "consumer stopped");
            }
        });
    }

    /// The producer to flush at shutdown.
    pub fn flush_on_shutdown(&mut self, kafka: KafkaClient) {
        self.kafka = Some(kafka);
    }

    /// Serves until the server fails or `shutdown` completes, then shuts down in order, all
    /// within one deadline of `SHUTDOWN_TIMEOUT_SECS`: drain in-flight requests, stop the
    /// background tasks (consumers, relay, jobs), flush the producer. A step still running
    /// when the deadline passes is cut off, so this returns by the deadline.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let name = self.name;
        let handle = self.server.handle();
        // The server future drives the server itself (including handling `stop`), so it runs
        // as its own task and keeps being polled while we wait for it to drain.
        let mut server = tokio::spawn(self.server);
        let (result, deadline) = tokio::select! {
            r = &mut server => (r, Deadline::after(self.drain)),
            () = shutdown => {
                let deadline = Deadline::after(self.drain);
                tracing::info!(service = name, "shutting down: draining in-flight requests");
                // Graceful: stop accepting, let in-flight requests finish (up to the deadline;
                // actix's own drain timeout is the same length, so it never outlasts it).
                if deadline.run(name, "http drain", handle.stop(true)).await.is_none() {
                    // Sends the command at once; the returned future only awaits completion.
                    drop(handle.stop(false));
                }
                let r = match deadline.run(name, "http server", &mut server).await {
                    Some(r) => r,
                    None => {
                        server.abort();
                        Ok(Ok(()))
                    }
                };
                (r, deadline)
            }
        };
        let result = result.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.cancel.cancel();
        for (what, mut task) in self.tasks {
            if deadline.run(name, what, &mut task).await.is_none() {
                task.abort();
            }
        }
        if let Some(kafka) = self.kafka {
            let left = deadline.remaining();
            let flush = tokio::task::spawn_blocking(move || kafka.flush(left));
            let _ = deadline.run(name, "producer flush", flush).await;
        }
        tracing::info!(service = name, "stopped");
        result
    }
}

/// Ends the process if it is still running `after` from now: the backstop of the shutdown
/// deadline for what a deadline cannot cut off (a blocking call the runtime waits for as it
/// drops). Only for a service's `main`, never in a test process.
pub fn exit_after(service: &'static str, after: Duration) {
    let spawned = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            std::thread::sleep(after);
            tracing::error!(service, "shutdown deadline passed: exiting now");
            eprintln!("{service}: shutdown deadline passed: exiting now");
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(service, error = %e, "could not arm the shutdown deadline");
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Steps run one after another share one deadline: a slow step is cut off at it, and
    /// the steps after it get nothing more (the old per-step timeouts added up).
    #[tokio::test(start_paused = true)]
    async fn steps_share_one_deadline() {
        let start = tokio::time::Instant::now();
        let deadline = Deadline::after(Duration::from_secs(10));
        let first = deadline
            .run("svc", "first", tokio::time::sleep(Duration::from_secs(4)))
            .await;
        assert_eq!(first, Some(()));
        assert_eq!(deadline.remaining(), Duration::from_secs(6));
        // Would take 20 s: cut off when the deadline passes, 6 s later.
        let second = deadline
            .run("svc", "second", tokio::time::sleep(Duration::from_secs(20)))
            .await;
        assert_eq!(second, None);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(deadline.remaining(), Duration::ZERO);
        // A later step gets no time of its own: cut off at once...
        let third = deadline
            .run("svc", "third", tokio::time::sleep(Duration::from_secs(1)))
            .await;
        assert_eq!(third, None);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // ... unless it is already complete.
        assert_eq!(deadline.run("svc", "done", async { 7 }).await, Some(7));
    }

    /// Sets its flag when dropped (a task aborted, or finished).
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A whole service: background tasks that ignore cancellation are aborted at the shared
    /// deadline, a cooperating one finishes, and `run_until` returns.
    #[tokio::test]
    async fn stuck_tasks_are_cut_off_at_the_deadline_and_shutdown_ends() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = actix_web::HttpServer::new(actix_web::App::new)
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .listen(listener)
            .unwrap()
            .run();
        let mut service = Service::new("test", port, server, Duration::from_secs(1));
        let mut stuck = Vec::new();
        let mut finished = Vec::new();
        for what in ["stuck-1", "stuck-2", "stuck-3"] {
            let (dropped, done) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let (guard, mark) = (DropFlag(dropped.clone()), done.clone());
            service.spawn(what, async move {
                let _guard = guard;
                // Ignores the cancel token: longer than any test runs.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                mark.store(true, Ordering::SeqCst);
            });
            stuck.push((dropped, done));
        }
        let cancel = service.cancel_token();
        let cooperated = Arc::new(AtomicBool::new(false));
        let mark = cooperated.clone();
        service.spawn("cooperative", async move {
            cancel.cancelled().await;
            mark.store(true, Ordering::SeqCst);
        });
        finished.push(cooperated);
        let outcome = tokio::time::timeout(
            // A generous bound on the whole shutdown (its deadline is 1 s).
            Duration::from_secs(60),
            service.run_until(async {}),
        )
        .await
        .expect("shutdown ends");
        outcome.expect("clean server stop");
        for (dropped, done) in &stuck {
            // Aborting takes effect when the runtime next reaches the task.
            for _ in 0..1000 {
                if dropped.load(Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(dropped.load(Ordering::SeqCst), "a stuck task was aborted");
            assert!(!done.load(Ordering::SeqCst), "a stuck task never finished");
        }
        assert!(
            finished[0].load(Ordering::SeqCst),
            "the cooperating task finished"
        );
    }
}
