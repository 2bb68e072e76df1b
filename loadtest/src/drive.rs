//! Runs one request function on many workers at once: closed loop (each worker sends its next
//! request when the last one answered) or, with a rate, paced to that many requests a second.
//!
//! With a rate, each call's first request is timed from when it was due, not from when it
//! went out: when the platform falls behind, the workers are all busy and the next requests
//! leave late; timing them from their sending would hide that wait (coordinated omission).
//! [`take_due`] hands the due time to the HTTP client. In a closed loop there is no schedule
//! to fall behind: the time runs from the sending, and the report says which clock it used.

use std::cell::Cell;
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

tokio::task_local! {
    /// When the current call of a paced run was due; taken by its first request.
    static DUE: Cell<Option<Instant>>;
}

/// The due time of the current paced call, once: the first request of the call is timed from
/// it, later ones (a call that sends several) from their own sending. `None` in a closed loop.
pub fn take_due() -> Option<Instant> {
    DUE.try_with(Cell::take).ok().flatten()
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
                    let due = load
                        .rate
                        .map(|rate| started + Duration::from_secs_f64(i as f64 / rate));
                    if !DUE.scope(Cell::new(due), work(i)).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// One worker at 200 calls a second, each call taking 20 ms: every call leaves later than
    /// it was due, by more each time, and its time is counted from when it was due.
    #[tokio::test]
    async fn a_paced_run_times_calls_from_when_they_were_due() {
        let lags = Arc::new(Mutex::new(Vec::new()));
        let seen = lags.clone();
        let load = Load {
            concurrency: 1,
            duration: Duration::from_millis(300),
            rate: Some(200.0),
        };
        drive(load, move |_| {
            let seen = seen.clone();
            async move {
                let due = take_due().expect("a paced call has a due time");
                assert_eq!(take_due(), None, "only the first request takes it");
                seen.lock().unwrap().push(due.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
                true
            }
        })
        .await;
        let lags = lags.lock().unwrap().clone();
        assert!(lags.len() >= 3, "{lags:?}");
        assert!(
            lags.windows(2).all(|w| w[1] > w[0]),
            "the lag grows: {lags:?}"
        );
    }

    #[tokio::test]
    async fn a_closed_loop_has_no_due_time() {
        let load = Load {
            concurrency: 2,
            duration: Duration::from_millis(50),
            rate: None,
        };
        drive(load, |_| async {
            assert_eq!(take_due(), None);
            tokio::time::sleep(Duration::from_millis(5)).await;
            true
        })
        .await;
    }
}
