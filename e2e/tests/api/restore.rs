//! The restore drill at small scale (docs/OPERATIONS.md, "The restore drill"): a backup
//! taken in the middle of a sale, the platform killed, the backup restored into fresh
//! databases and a fresh stack (its own Redis prefix and topics) started on them.
//!
//! The backup is spread (`batch backup --spread-secs`): fans pay while the concert database
//! is already dumped and the payment database not yet, so the restored payment database
//! holds payments the restored concert database never saw settle — some for reservations
//! still HELD there, some for reservations it does not have at all. The drill shows that
//! reconciliation and the settlement backstop bring every one of them to an end (confirmed,
//! or refunded), that no seat is sold twice and not one unit of money is made or lost, and
//! that the restored platform sells again without reusing an id of the lost minutes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::testkit::{TestDatabase, eventually, unique_id};
use e2e::process::binary;
use e2e::{Client, Platform};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::audit::Money;

const PRICE: i64 = 10_000;
const FUNDS: i64 = 30_000;
const SEATS: i64 = 30;
/// Fans per group: paid before the backup, held before it and paid during it, and both held
/// and paid during it.
const GROUP: usize = 5;
/// The pause between two databases of the backup: the gap the second group pays in.
const SPREAD_SECS: &str = "5";
/// `backup::ID_GAP`: how far a restore moves every sequence ahead.
const ID_GAP: i64 = 1_000_000_000;
const WAIT: Duration = Duration::from_secs(60);

/// A directory removed with everything in it when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Urls {
    users: String,
    concert: String,
    payment: String,
}

impl Urls {
    fn of(platform: &Platform) -> Self {
        Self {
            users: platform.users.url.clone(),
            concert: platform.concert.url.clone(),
            payment: platform.payment.url.clone(),
        }
    }
}

/// A fan: a session (and, once admitted, a queue pass) on the users-api client.
struct Fan {
    name: String,
    me: Client,
}

impl Fan {
    fn password(name: &str) -> String {
        format!("{name}-password")
    }

    /// Signs up, charges [`FUNDS`], joins the line for `concert` and waits to be admitted.
    async fn ready(name: String, urls: &Urls, concert: i64) -> Self {
        let mut me = Client::new(&urls.users);
        me.sign_up(&name, &Self::password(&name)).await;
        let (status, charged) = me
            .at(&urls.payment)
            .post_once(
                "/api/wallet/charges",
                &format!("charge-{name}"),
                json!({ "amount": FUNDS }),
            )
            .await;
        assert_eq!(status, 201, "{name} charges: {charged}");
        let fan = Self { name, me };
        fan.admitted(urls, concert).await
    }

    async fn admitted(mut self, urls: &Urls, concert: i64) -> Self {
        let token = self.me.at(&urls.users).join(concert).await;
        self.me
            .until_pass(&token, "ACTIVE", &format!("{} admitted", self.name))
            .await;
        self.me.pass = Some(token);
        self
    }

    async fn hold(&self, urls: &Urls, schedule: i64, seat: i64) -> i64 {
        let (status, r) = self
            .me
            .at(&urls.concert)
            .post_once(
                "/api/reservations",
                &format!("hold-{}-{seat}", self.name),
                json!({"schedule_id": schedule, "seat_nos": [seat]}),
            )
            .await;
        assert_eq!(status, 201, "{} holds seat {seat}: {r}", self.name);
        r["id"].as_i64().expect("reservation id")
    }

    async fn pay(&self, urls: &Urls, reservation: i64) -> i64 {
        let (status, p) = self
            .me
            .at(&urls.payment)
            .post_once(
                "/api/payments",
                &format!("pay-{reservation}"),
                json!({ "reservation_id": reservation }),
            )
            .await;
        assert_eq!(status, 201, "{} pays {reservation}: {p}", self.name);
        p["id"].as_i64().expect("payment id")
    }

    async fn reservation(&self, urls: &Urls, reservation: i64) -> Value {
        let (status, r) = self
            .me
            .at(&urls.concert)
            .get(&format!("/api/reservations/{reservation}"))
            .await;
        assert_eq!(status, 200, "{r}");
        r
    }

    async fn confirmed(&self, urls: &Urls, reservation: i64) {
        let what = format!("{}'s reservation {reservation} CONFIRMED", self.name);
        eventually(&what, WAIT, || async {
            let r = self.reservation(urls, reservation).await;
            (r["status"] == "CONFIRMED").then_some(())
        })
        .await;
    }
}

/// What the restored payment database says of a payment before the restored platform runs,
/// compared with the restored concert database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    /// Its reservation is CONFIRMED by it: settled before both dumps.
    Settled,
    /// Its reservation is still HELD in the concert dump.
    Held,
    /// The concert dump has no such reservation.
    Missing,
}

/// A restored payment: (id, reservation, user, amount, status).
type PaymentRow = (i64, i64, i64, i64, String);
/// A reservation: (id, user, status, payment, seat_nos, amount).
type ReservationRow = (i64, i64, String, Option<i64>, Vec<i32>, i64);

async fn payments(db: &PgPool) -> Vec<PaymentRow> {
    sqlx::query_as("SELECT id, reservation_id, user_id, amount, status FROM payments ORDER BY id")
        .fetch_all(db)
        .await
        .unwrap()
}

async fn reservations(db: &PgPool) -> BTreeMap<i64, ReservationRow> {
    let rows: Vec<ReservationRow> = sqlx::query_as(
        "SELECT id, user_id, status, payment_id, seat_nos, amount FROM reservations ORDER BY id",
    )
    .fetch_all(db)
    .await
    .unwrap();
    rows.into_iter().map(|r| (r.0, r)).collect()
}

/// Runs `batch <args>` with the platform's settings plus `extra`; panics unless it exits 0.
async fn batch_command(platform: &Platform, args: &[&str], extra: &[(&str, &str)], log: &Path) {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = tokio::process::Command::new(binary("batch"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true);
    for (k, v) in platform.env() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let status = cmd.status().await.unwrap();
    assert!(
        status.success(),
        "batch {args:?}: {status}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test]
async fn a_platform_restored_from_a_backup_taken_mid_sale_gets_back_every_invariant() {
    let dir = TempDir(std::env::temp_dir().join(format!("restore-drill-{}", unique_id())));
    let backups = dir.0.join("backups");
    std::fs::create_dir_all(&backups).unwrap();

    // The sale: 3 × GROUP fans, admitted, each with FUNDS in the wallet.
    let mut platform = Platform::start().await;
    let mut batch = platform
        .start_batch(&[("QUEUE_ADMIT_INTERVAL_MS", "100")])
        .await;
    let urls = Urls::of(&platform);
    let admin = platform.admin(&urls.users).await;
    let (concert, schedule) = admin
        .at(&urls.concert)
        .concert_on_sale("Restore drill", SEATS, PRICE)
        .await;
    let fans: Vec<Fan> = futures_util::future::join_all(
        (0..3 * GROUP).map(|i| Fan::ready(format!("drill{i}"), &urls, concert)),
    )
    .await;
    let (paid_before, rest) = fans.split_at(GROUP);
    let (held_before, held_during) = rest.split_at(GROUP);
    let seat = |i: usize| i as i64 + 1;

    // Before the backup: one group has paid (and is confirmed), one only holds.
    futures_util::future::join_all(paid_before.iter().enumerate().map(|(i, f)| {
        let urls = &urls;
        async move {
            let r = f.hold(urls, schedule, seat(i)).await;
            f.pay(urls, r).await;
            f.confirmed(urls, r).await;
        }
    }))
    .await;
    let held: Vec<i64> = futures_util::future::join_all(
        held_before
            .iter()
            .enumerate()
            .map(|(i, f)| f.hold(&urls, schedule, seat(GROUP + i))),
    )
    .await;

    // The backup, spread: the concert database first, then a pause, then the others.
    let backup_log = dir.0.join("backup.log");
    let backup = {
        let (platform, backups, log) = (&platform, backups.to_str().unwrap(), &backup_log);
        async move {
            batch_command(
                platform,
                &["backup", "--spread-secs", SPREAD_SECS],
                &[("BACKUP_DIR", backups), ("RUST_LOG", "info")],
                log,
            )
            .await
        }
    };
    let during = async {
        eventually("the concert database dumped", WAIT, || async {
            let log = std::fs::read_to_string(&backup_log).unwrap_or_default();
            log.contains("spreading the backup").then_some(())
        })
        .await;
        // In the gap: the holders pay, the last group holds and pays.
        let paid_held = held_before
            .iter()
            .zip(&held)
            .map(|(f, r)| async { f.pay(&urls, *r).await });
        let bought = held_during.iter().enumerate().map(|(i, f)| {
            let urls = &urls;
            async move {
                let r = f.hold(urls, schedule, seat(2 * GROUP + i)).await;
                f.pay(urls, r).await
            }
        });
        futures_util::future::join(
            futures_util::future::join_all(paid_held),
            futures_util::future::join_all(bought),
        )
        .await
    };
    futures_util::future::join(backup, during).await;

    // The disaster: every process of the platform gone at once.
    for p in [
        &mut platform.concert,
        &mut platform.users,
        &mut platform.payment,
        &mut batch,
    ] {
        p.crash();
    }

    // The restore, into fresh databases (dropped by these guards at the end).
    let folder = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("manifest.json").is_file())
        .expect("a complete backup");
    let suffix = format!("_drill{}", &unique_id()[1..7]);
    let restored_dbs = [
        &platform.users_db,
        &platform.concert_db,
        &platform.payment_db,
    ]
    .map(|d| TestDatabase::named(&format!("{}{suffix}", d.name)));
    batch_command(
        &platform,
        &["restore", folder.to_str().unwrap(), "--suffix", &suffix],
        &[],
        &dir.0.join("restore.log"),
    )
    .await;

    // What the restored databases disagree on, before anything runs on them.
    let concert_db = PgPool::connect(&restored_dbs[1].url).await.unwrap();
    let payment_db = PgPool::connect(&restored_dbs[2].url).await.unwrap();
    let restored_reservations = reservations(&concert_db).await;
    let seen: BTreeMap<i64, Seen> = payments(&payment_db)
        .await
        .into_iter()
        .map(|p| {
            let seen = match restored_reservations.get(&p.1) {
                Some(r) if r.2 == "CONFIRMED" && r.3 == Some(p.0) => Seen::Settled,
                Some(r) if r.2 == "HELD" => Seen::Held,
                Some(r) => panic!("payment {p:?} of a reservation {r:?}"),
                None => Seen::Missing,
            };
            assert_eq!(p.4, "COMPLETED", "{p:?}");
            (p.0, seen)
        })
        .collect();
    let mut by_kind = BTreeMap::new();
    for kind in seen.values() {
        *by_kind.entry(*kind).or_insert(0) += 1;
    }
    assert_eq!(by_kind.get(&Seen::Settled), Some(&GROUP), "{seen:?}");
    assert!(
        by_kind.contains_key(&Seen::Held) && by_kind.contains_key(&Seen::Missing),
        "the spread backup holds payments its concert dump never saw settle: {seen:?}"
    );
    let confirmed_without_payment: Vec<_> = restored_reservations
        .values()
        .filter(|r| r.2 == "CONFIRMED" && !r.3.is_some_and(|p| seen.contains_key(&p)))
        .collect();
    assert!(
        confirmed_without_payment.is_empty(),
        "dumped in order, no seat is confirmed by a payment the backup lacks: {confirmed_without_payment:?}"
    );

    // A fresh stack on the restored databases: its own Redis prefix, its own topics.
    drop(platform);
    let restored = Platform::start_on(restored_dbs, &[]).await;
    let batch = restored
        .start_batch(&[
            ("QUEUE_ADMIT_INTERVAL_MS", "100"),
            ("PAYMENT_RECONCILE_AFTER_SECS", "1"),
            ("PAYMENT_SETTLE_DIRECT_AFTER_SECS", "2"),
            ("BATCH_RECONCILE_INTERVAL_MS", "500"),
            ("BATCH_INVARIANTS_INTERVAL_MS", "1000"),
        ])
        .await;
    let urls = Urls::of(&restored);

    // Every payment comes to an end: the ones of a live hold confirm it, the ones of a
    // reservation the concert database never had are refunded.
    let expected: BTreeMap<i64, &str> = seen
        .iter()
        .map(|(id, kind)| {
            (
                *id,
                if *kind == Seen::Missing {
                    "REFUNDED"
                } else {
                    "COMPLETED"
                },
            )
        })
        .collect();
    eventually("every restored payment settled", WAIT, || async {
        let unsettled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM payments WHERE status = 'COMPLETED' AND confirmed_at IS NULL",
        )
        .fetch_one(&payment_db)
        .await
        .unwrap();
        let now: BTreeMap<i64, String> = payments(&payment_db)
            .await
            .into_iter()
            .map(|p| (p.0, p.4))
            .collect();
        let ended = expected
            .iter()
            .all(|(id, s)| now.get(id).map(String::as_str) == Some(*s));
        (unsettled == 0 && ended).then_some(())
    })
    .await;

    // The audit: each payment and its reservation name each other.
    let reservations_now = reservations(&concert_db).await;
    for p in payments(&payment_db).await {
        let r = reservations_now.get(&p.1);
        match p.4.as_str() {
            "COMPLETED" => {
                let r = r.unwrap_or_else(|| panic!("{p:?} without its reservation"));
                assert_eq!(
                    (r.1, r.2.as_str(), r.3, r.5),
                    (p.2, "CONFIRMED", Some(p.0), p.3),
                    "a completed payment confirms its reservation"
                );
            }
            _ => assert!(
                r.is_none_or(|r| r.2 != "CONFIRMED"),
                "a refunded payment confirms nothing: {p:?} {r:?}"
            ),
        }
    }
    let confirmed: Vec<&ReservationRow> = reservations_now
        .values()
        .filter(|r| r.2 == "CONFIRMED")
        .collect();
    assert_eq!(
        confirmed.len(),
        expected.values().filter(|s| **s == "COMPLETED").count(),
        "each confirmed reservation has its completed payment"
    );
    // No seat twice: the live reservations' seats are distinct, and the SOLD seats are the
    // confirmed ones'.
    let mut live_seats: Vec<i32> = reservations_now
        .values()
        .filter(|r| r.2 == "CONFIRMED" || r.2 == "HELD")
        .flat_map(|r| r.4.clone())
        .collect();
    let live = live_seats.len();
    live_seats.sort_unstable();
    live_seats.dedup();
    assert_eq!(live_seats.len(), live, "a seat in two live reservations");
    let mut sold: Vec<i32> = sqlx::query_scalar(
        "SELECT seat_no FROM seats WHERE schedule_id = $1 AND status = 'SOLD' ORDER BY seat_no",
    )
    .bind(schedule)
    .fetch_all(&concert_db)
    .await
    .unwrap();
    let mut confirmed_seats: Vec<i32> = confirmed.iter().flat_map(|r| r.4.clone()).collect();
    confirmed_seats.sort_unstable();
    sold.sort_unstable();
    assert_eq!(
        sold, confirmed_seats,
        "the SOLD seats are the confirmed ones"
    );
    Money::read(&payment_db).await.assert_conserved();

    // The watchdog agrees: every invariant holds on the restored platform.
    eventually("batch's watchdog sees no violation", WAIT, || async {
        let metrics = reqwest::get(format!("{}/metrics", batch.url))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let checks: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("invariant_violations{"))
            .collect();
        (checks.len() >= 4 && checks.iter().all(|l| l.ends_with(" 0"))).then_some(())
    })
    .await;

    // The restored platform sells again: a fan whose payment was refunded logs in (the
    // sessions went with the old Redis), joins, buys a seat, and the new reservation's id
    // lies past every id of the lost minutes.
    let refunded_fan = &held_during[0];
    let mut me = Client::new(&urls.users);
    me.log_in(&refunded_fan.name, &Fan::password(&refunded_fan.name))
        .await;
    let fan = Fan {
        name: refunded_fan.name.clone(),
        me,
    }
    .admitted(&urls, concert)
    .await;
    let free = (1..=SEATS)
        .find(|s| !live_seats.contains(&(*s as i32)))
        .expect("a free seat");
    let r = fan.hold(&urls, schedule, free).await;
    assert!(
        r > ID_GAP,
        "reservation {r} reuses an id of the lost minutes"
    );
    let p = fan.pay(&urls, r).await;
    assert!(p > ID_GAP, "payment {p} reuses an id of the lost minutes");
    fan.confirmed(&urls, r).await;
    Money::read(&payment_db).await.assert_conserved();

    concert_db.close().await;
    payment_db.close().await;
}
