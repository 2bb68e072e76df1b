//! Log-in throttling against real Redis: a guesser backs off exponentially from their own
//! address, a botnet flooding one account stops new addresses but never one that logged in
//! before, and an unknown username is throttled exactly like a real one. Addresses are
//! simulated with `X-Forwarded-For`, whose last entry is the gateway's.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Spawned, spawn_app_with};

const PASSWORD: &str = "fan-of-the-band-2026";

/// A log-in from `address` (as the gateway would forward it): status, `Retry-After`, code.
async fn log_in(
    s: &Spawned,
    forwarded_for: &str,
    username: &str,
    password: &str,
) -> (u16, Option<u64>, Option<String>) {
    let res = reqwest::Client::new()
        .post(s.url("/api/sessions"))
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body: Value = res.json().await.unwrap();
    (status, retry, body["code"].as_str().map(str::to_owned))
}

async fn sign_up(s: &Spawned, username: &str) {
    let res = reqwest::Client::new()
        .post(s.url("/api/users"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "sign up {username}");
}

fn throttled(retry_after: u64) -> (u16, Option<u64>, Option<String>) {
    (429, Some(retry_after), Some("LOGIN_THROTTLED".to_owned()))
}

fn bad_credentials() -> (u16, Option<u64>, Option<String>) {
    (401, None, Some("BAD_CREDENTIALS".to_owned()))
}

#[tokio::test]
async fn sixty_wrong_passwords_back_off_the_guesser_but_not_the_owner_elsewhere() {
    let s = spawn_app_with(|env| env.with("LOGIN_BACKOFF_MAX_SECS", "3")).await;
    sign_up(&s, "fan").await;
    let home = "198.51.100.10";
    assert_eq!(log_in(&s, home, "fan", PASSWORD).await.0, 201);

    // The attacker also forges an earlier entry naming the fan's address: only the last
    // entry (the gateway's) counts.
    let attacker = "198.51.100.10, 203.0.113.66";
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(log_in(&s, attacker, "fan", "wrong-guess-123").await);
    }
    assert_eq!(statuses[..5], vec![bad_credentials(); 5][..]);
    assert_eq!(statuses[5..], vec![throttled(1); 55][..]);

    // The right password inside the delay is refused too, and costs no hash: with every
    // hashing slot taken it is still 429, not 503 LOGIN_BUSY.
    let full = s.config.hashing.fill().expect("the slots are free");
    assert_eq!(log_in(&s, attacker, "fan", PASSWORD).await, throttled(1));
    drop(full);

    // The fan, from home, is not slowed down at all.
    assert_eq!(log_in(&s, home, "fan", PASSWORD).await.0, 201);

    // The delay doubles with each further failure, up to the cap (3 s here).
    let mut waits = Vec::new();
    for _ in 0..4 {
        let (_, Some(wait), _) = log_in(&s, attacker, "fan", "wrong-guess-123").await else {
            panic!("a throttled attempt says how long to wait");
        };
        waits.push(wait);
        s.clock.advance(Duration::from_secs(wait));
        assert_eq!(
            log_in(&s, attacker, "fan", "wrong-guess-123").await,
            bad_credentials()
        );
    }
    assert_eq!(waits, [1, 2, 3, 3]);

    // Once the delay has passed the right password works, and clears the backoff.
    s.clock.advance(Duration::from_secs(3));
    assert_eq!(log_in(&s, attacker, "fan", PASSWORD).await.0, 201);
    assert_eq!(
        log_in(&s, attacker, "fan", "wrong-guess-123").await,
        bad_credentials()
    );
}

#[tokio::test]
async fn a_flood_from_many_addresses_stops_new_addresses_but_never_a_trusted_one() {
    let s = spawn_app_with(|env| env.with("LOGIN_ACCOUNT_FAILURE_LIMIT", "10")).await;
    sign_up(&s, "idol_fan").await;
    let trusted = "192.0.2.1";
    assert_eq!(log_in(&s, trusted, "idol_fan", PASSWORD).await.0, 201);

    for i in 0..10 {
        let bot = format!("203.0.113.{i}");
        assert_eq!(
            log_in(&s, &bot, "idol_fan", "wrong-guess-123").await,
            bad_credentials(),
            "failure {i} is still free"
        );
    }

    // The account's limit is reached: an address that never logged in is refused even with
    // the right password, until the window (LOGIN_FAILURE_WINDOW_SECS) ends...
    for address in ["198.51.100.77", "203.0.113.0"] {
        let (status, retry, code) = log_in(&s, address, "idol_fan", PASSWORD).await;
        assert_eq!((status, code.as_deref()), (429, Some("LOGIN_THROTTLED")));
        let retry = retry.expect("Retry-After");
        assert!((1..=3600).contains(&retry), "{retry}");
    }
    // ...while the fan's own address logs in as always.
    assert_eq!(log_in(&s, trusted, "idol_fan", PASSWORD).await.0, 201);

    // Another account is untouched.
    sign_up(&s, "other_fan").await;
    assert_eq!(
        log_in(&s, "198.51.100.77", "other_fan", PASSWORD).await.0,
        201
    );
}

#[tokio::test]
async fn unknown_usernames_are_throttled_exactly_like_real_ones() {
    let s = spawn_app_with(|env| env.with("LOGIN_ACCOUNT_FAILURE_LIMIT", "7")).await;
    sign_up(&s, "real_user").await;
    let mut seen = Vec::new();
    for username in ["real_user", "ghost_user"] {
        let mut statuses = Vec::new();
        for _ in 0..7 {
            statuses.push(log_in(&s, "203.0.113.5", username, "wrong-guess-123").await);
        }
        // Throttled attempts are not failures: 5 so far. Two more addresses make 7, the
        // limit, so a third address is refused.
        for bot in ["203.0.113.6", "203.0.113.7"] {
            statuses.push(log_in(&s, bot, username, "wrong-guess-123").await);
        }
        statuses.push(log_in(&s, "198.51.100.1", username, "wrong-guess-123").await);
        seen.push(statuses);
    }
    let expected: Vec<_> = std::iter::repeat_n(bad_credentials(), 5)
        .chain(std::iter::repeat_n(throttled(1), 2))
        .chain(std::iter::repeat_n(bad_credentials(), 2))
        .collect();
    assert_eq!(seen[0][..9], expected[..]);
    assert_eq!(
        seen[0][..9],
        seen[1][..9],
        "no difference to tell the accounts apart by"
    );
    for statuses in &seen {
        assert_eq!(
            (statuses[9].0, statuses[9].2.as_deref()),
            (429, Some("LOGIN_THROTTLED"))
        );
    }
}
