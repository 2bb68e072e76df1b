//! Two batch processes: jobs run on exactly one; killing it hands over within the lease.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::testkit::eventually;

use crate::helpers::World;

struct Batch {
    child: Child,
    url: String,
}

impl Drop for Batch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(world: &World) -> Batch {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batch"));
    cmd.arg("serve")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in world.vars(&[
        ("BATCH_PORT", &port.to_string()),
        ("BATCH_LEASE_MS", "1000"),
        ("QUEUE_ADMIT_INTERVAL_MS", "100"),
        ("BATCH_EXPIRE_INTERVAL_MS", "100"),
        ("BATCH_RECONCILE_INTERVAL_MS", "100"),
        ("BATCH_OUTBOX_HEALTH_INTERVAL_MS", "100"),
        ("DATABASE_POOL_SIZE", "2"),
        ("HTTP_WORKERS", "1"),
    ]) {
        cmd.env(k, v);
    }
    Batch {
        child: cmd.spawn().expect("start batch"),
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// (leader gauge, expire-holds runs) read from a process's /metrics.
async fn observe(b: &Batch) -> Option<(i64, i64)> {
    let text = reqwest::get(format!("{}/metrics", b.url))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as i64)
    };
    Some((
        value("batch_leader{"),
        value(r#"batch_job_runs_total{job="expire_holds",outcome="ok""#),
    ))
}

#[tokio::test]
async fn jobs_run_on_one_process_only_and_a_killed_leader_is_replaced() {
    let world = World::new().await;
    let a = start(&world);
    let b = start(&world);
    let (first, second) = eventually("one leader among two", Duration::from_secs(30), || async {
        let (sa, sb) = (observe(&a).await?, observe(&b).await?);
        (sa.0 + sb.0 == 1 && sa.1 + sb.1 > 3).then_some((sa, sb))
    })
    .await;
    let (leader, standby) = if first.0 == 1 { (a, b) } else { (b, a) };
    let standby_runs = if first.0 == 1 { second.1 } else { first.1 };
    assert_eq!(standby_runs, 0, "the standby ran no job");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        observe(&standby).await.unwrap().1,
        0,
        "still none while the leader lives"
    );

    // SIGKILL: no release, the lease must run out.
    let killed_at = std::time::Instant::now();
    drop(leader);
    eventually(
        "the standby to take over",
        Duration::from_secs(60),
        || async {
            let s = observe(&standby).await?;
            (s.0 == 1 && s.1 > 0).then_some(())
        },
    )
    .await;
    // A figure, not a bound: the machine running the tests may be busy.
    eprintln!(
        "[leadership] the standby took over {:.1} s after the leader's SIGKILL (lease 1 s)",
        killed_at.elapsed().as_secs_f64()
    );
}
