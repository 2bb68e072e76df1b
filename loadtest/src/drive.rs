//! Runs one request function on many workers at once: closed loop (each worker sends its next
//! request when the last one answered) or, with a rate, paced to that many requests a second.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How hard and how long.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub concurrency: usize,
    pub duration: Duration,
    /// Requests a second over all workers; `None`: as fast as answers come.
    pub rate: Option<f64>,
}

/// Calls `work(i)` for i = 0, 1, 2, ... on `load.concurrency` workers until the duration is
/// over or `work` returns false (nothing left to do). Returns the measured wall time.
pub async fn drive<F, Fut>(load: Load, work: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + load.duration;
    let workers: Vec<_> = (0..load.concurrency)
        .map(|_| {
            let (work, next, done) = (work.clone(), next.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if let Some(rate) = load.rate {
                        let at = started + Duration::from_secs_f64(i as f64 / rate);
                        if at >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                    }
                    if !work(i).await {
                        done.store(true, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    started.elapsed()
}
