//! Holds under true concurrency: exactly one winner per seat, all-or-nothing multi-seat
//! holds, expiry after hold + grace, cancel, bad input.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{Spawned, spawn_app};

/// No seat is in two active reservations, and held seats are exactly the active ones.
async fn assert_no_double_booking(s: &Spawned) {
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM (SELECT seat_id FROM reservation_seats WHERE active GROUP BY seat_id HAVING count(*) > 1) d").await,
        0
    );
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM seats se WHERE se.status <> 'AVAILABLE' AND NOT EXISTS (SELECT 1 FROM reservation_seats rs WHERE rs.seat_id = se.id AND rs.active AND rs.reservation_id = se.reservation_id)").await,
        0,
        "every taken seat is backed by its active reservation row"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_holds_of_one_seat_make_one_winner() {
    let s = spawn_app().await;
    let (concert, schedule) = s.concert_with_schedule(50, -60, 3600).await;
    let buyers = s.buyers(200, concert).await;
    let results = join_all(buyers.iter().map(|b| s.hold(b, schedule, &[7]))).await;
    let won = results.iter().filter(|(st, _)| *st == 201).count();
    let lost: Vec<&Value> = results
        .iter()
        .filter(|(st, _)| *st == 409)
        .map(|(_, b)| b)
        .collect();
    assert_eq!((won, lost.len()), (1, 199));
    assert!(lost.iter().all(|b| b["code"] == "SEAT_UNAVAILABLE" && b["detail"].as_str().unwrap().contains('7')));
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM reservations")
            .await,
        1
    );
    assert_no_double_booking(&s).await;
}

#[tokio::test]
async fn five_hundred_users_on_three_seats_make_exactly_three_holds() {
    let s = spawn_app().await;
    let (concert, schedule) = s.concert_with_schedule(50, -60, 3600).await;
    let buyers = s.buyers(500, concert).await;
    let results = join_all(
        buyers
            .iter()
            .enumerate()
            .map(|(i, b)| s.hold(b, schedule, vec![[10, 20, 30][i % 3]])),
    )
    .await;
    let winners: Vec<i64> = results
        .iter()
        .filter(|(st, _)| *st == 201)
        .map(|(_, b)| b["seat_nos"][0].as_i64().unwrap())
        .collect();
    assert_eq!(winners.len(), 3);
    assert_eq!(
        winners.into_iter().collect::<HashSet<_>>(),
        HashSet::from([10, 20, 30])
    );
    assert!(results.iter().all(|(st, _)| *st == 201 || *st == 409));
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM seats WHERE status = 'HELD'")
            .await,
        3
    );
    assert_no_double_booking(&s).await;
}

#[tokio::test]
async fn fifty_users_on_fifty_seats_all_win() {
    let s = spawn_app().await;
    let (concert, schedule) = s.concert_with_schedule(50, -60, 3600).await;
    let buyers = s.buyers(50, concert).await;
    let results = join_all(
        buyers
            .iter()
            .enumerate()
            .map(|(i, b)| s.hold(b, schedule, vec![i as i64 + 1])),
    )
    .await;
    assert!(results.iter().all(|(st, _)| *st == 201), "{results:?}");
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM seats WHERE status = 'HELD'")
            .await,
        50
    );
    assert_no_double_booking(&s).await;
}

#[tokio::test]
async fn overlapping_multi_seat_holds_are_all_or_nothing() {
    let s = spawn_app().await;
    let (concert, schedule) = s.concert_with_schedule(12, -60, 3600).await;
    let buyers = s.buyers(120, concert).await;
    // Every buyer wants a window of 2–4 adjacent seats; windows overlap heavily.
    let wants: Vec<Vec<i64>> = (0..120)
        .map(|i| {
            let len = 2 + (i % 3) as i64;
            let start = 1 + (i * 7 % (12 - len as usize + 1)) as i64;
            (start..start + len).collect()
        })
        .collect();
    let results = join_all(
        buyers
            .iter()
            .zip(&wants)
            .map(|(b, w)| s.hold(b, schedule, w)),
    )
    .await;
    let mut owner: HashMap<i64, usize> = HashMap::new();
    for (i, (status, body)) in results.iter().enumerate() {
        match status {
            201 => {
                let got: Vec<i64> = body["seat_nos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect();
                assert_eq!(got, wants[i], "a winner holds exactly what it asked for");
                for seat in got {
                    assert!(owner.insert(seat, i).is_none(), "seat {seat} won twice");
                }
            }
            409 => assert_eq!(body["code"], "SEAT_UNAVAILABLE"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!owner.is_empty());
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM seats WHERE status = 'HELD'")
            .await,
        owner.len() as i64,
        "losers hold nothing"
    );
    assert_no_double_booking(&s).await;
}

#[tokio::test]
async fn an_unpaid_hold_frees_its_seats_after_hold_plus_grace_not_before() {
    let s = spawn_app().await;
    let (hold, grace) = (s.config.reservation.hold, s.config.reservation.grace);
    let (concert, schedule) = s.concert_with_schedule(10, -60, 3600).await;
    let buyers = s.buyers(2, concert).await;
    let (status, first) = s.hold(&buyers[0], schedule, &[5, 6]).await;
    assert_eq!(status, 201);
    assert_eq!(s.hold(&buyers[1], schedule, &[5]).await.0, 409, "held");
    s.clock.advance(hold + grace / 2);
    assert_eq!(
        s.hold(&buyers[1], schedule, &[5]).await.0,
        409,
        "past held_until but within grace"
    );
    s.clock.advance(grace / 2 + Duration::from_secs(1));
    let (status, second) = s.hold(&buyers[1], schedule, &[5]).await;
    assert_eq!(status, 201, "free after hold + grace: {second}");

    let old = s
        .reservation(&buyers[0], first["id"].as_i64().unwrap())
        .await;
    assert_eq!(old["status"], "EXPIRED");
    // The dead hold still has seat 6, so the sweep ends it (and writes `reservation.expired`)
    // once that seat is freed: settlement.rs, a dead hold partly taken over.
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM outbox WHERE topic = 'reservation.expired'")
            .await,
        0
    );
    // Seat 6 of the dead hold reads as available too, before any sweep.
    let map: Value = reqwest::Client::new()
        .get(s.url(&format!("/api/schedules/{schedule}/seats")))
        .bearer_auth(&buyers[1].session)
        .header("x-queue-token", &buyers[1].pass)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status_of = |n: i64| {
        map["seats"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["seat_no"] == n)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(
        (status_of(5), status_of(6)),
        (json!("HELD"), json!("AVAILABLE"))
    );
    assert_no_double_booking(&s).await;
}

#[tokio::test]
async fn cancel_frees_seats_once_and_other_users_see_nothing() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let (concert, schedule) = s.concert_with_schedule(10, -60, 3600).await;
    let buyers = s.buyers(2, concert).await;
    let (_, held) = s.hold(&buyers[0], schedule, &[1, 2]).await;
    let id = held["id"].as_i64().unwrap();
    assert_eq!(held["status"], "HELD");
    assert_eq!(held["amount"], 2000);

    for req in [
        c.get(s.url(&format!("/api/reservations/{id}")))
            .bearer_auth(&buyers[1].session),
        c.delete(s.url(&format!("/api/reservations/{id}")))
            .bearer_auth(&buyers[1].session),
        c.get(s.url("/api/reservations/999999"))
            .bearer_auth(&buyers[1].session),
    ] {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 404);
        assert_eq!(res.json::<Value>().await.unwrap()["code"], "NOT_FOUND");
    }
    let mine: Value = c
        .get(s.url("/api/reservations"))
        .bearer_auth(&buyers[1].session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(mine["items"].as_array().unwrap().is_empty());

    let res = c
        .delete(s.url(&format!("/api/reservations/{id}")))
        .bearer_auth(&buyers[0].session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "CANCELLED");
    let res = c
        .delete(s.url(&format!("/api/reservations/{id}")))
        .bearer_auth(&buyers[0].session)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            res.status().as_u16(),
            res.json::<Value>().await.unwrap()["code"].clone()
        ),
        (409, json!("NOT_CANCELLABLE"))
    );
    assert_eq!(
        s.hold(&buyers[1], schedule, &[1, 2]).await.0,
        201,
        "the seats are free again"
    );
    assert_no_double_booking(&s).await;
}

#[tokio::test]
async fn bad_bodies_wrong_passes_and_closed_booking_hold_nothing() {
    let s = spawn_app().await;
    let c = reqwest::Client::new();
    let (concert, schedule) = s.concert_with_schedule(50, -60, 3600).await;
    let later = s.schedule(concert, 50, 600, 7200).await["id"]
        .as_i64()
        .unwrap();
    let (other, other_schedule) = s.concert_with_schedule(50, -60, 3600).await;
    let buyer = s.buyers(1, concert).await.remove(0);
    let stranger = s.buyers(1, other).await.remove(0);
    for (seats, field) in [
        (json!([]), "seat_nos"),
        (json!([1, 2, 3, 4, 5]), "seat_nos"),
        (json!([3, 3]), "seat_nos[1]"),
        (json!([0]), "seat_nos[0]"),
        (json!([51]), "seat_nos[0]"),
        (json!(["1"]), "seat_nos[0]"),
        (json!("1,2"), "seat_nos"),
    ] {
        let res = c
            .post(s.url("/api/reservations"))
            .bearer_auth(&buyer.session)
            .header("x-queue-token", &buyer.pass)
            .json(&json!({"schedule_id": schedule, "seat_nos": seats}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{seats}");
        let p: Value = res.json().await.unwrap();
        assert!(
            p["detail"].as_str().unwrap().contains(field),
            "{field}: {p}"
        );
    }
    assert_eq!(
        s.hold(&buyer, 999_999, &[1]).await.1["code"],
        "SCHEDULE_NOT_FOUND"
    );
    let (status, p) = s.hold(&buyer, later, &[1]).await;
    assert_eq!((status, p["code"].as_str()), (409, Some("BOOKING_CLOSED")));
    let (status, p) = s.hold(&buyer, other_schedule, &[1]).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (401, Some("QUEUE_TOKEN_INVALID")),
        "pass for another concert"
    );
    let (status, _) = s
        .hold(
            &crate::helpers::Buyer {
                pass: buyer.pass.clone(),
                ..stranger.clone()
            },
            schedule,
            &[1],
        )
        .await;
    assert_eq!(status, 401, "someone else's pass");
    let res = c
        .post(s.url("/api/reservations"))
        .bearer_auth(&buyer.session)
        .json(&json!({"schedule_id": schedule, "seat_nos": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "no pass");
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM reservations")
            .await,
        0
    );
    assert_eq!(
        s.count("SELECT count(*)::bigint AS n FROM seats WHERE status <> 'AVAILABLE'")
            .await,
        0
    );
}
