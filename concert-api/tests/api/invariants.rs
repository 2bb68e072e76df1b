//! The seat invariant's check (`store::invariants`) as batch's watchdog runs it: every date
//! to come, or only the concerts whose reservations changed and those found broken before.

use chrono::{TimeDelta, Utc};
use concert_api::store::invariants::{SeatScope, seat_violations};
use sea_orm::ConnectionTrait;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_check_of_the_changes_reads_the_changed_and_the_suspect_concerts_only() {
    let s = spawn_app().await;
    // Two concerts with a date to come. Concert 1's seat 7 has been in two CONFIRMED
    // reservations since a write an hour ago.
    s.db.execute_unprepared(
        "INSERT INTO concerts (id, title, performer) VALUES (1, 'One', 'A'), (2, 'Two', 'B'); \
         INSERT INTO schedules (id, concert_id, starts_at, booking_opens_at, seat_count, price) \
           VALUES (1, 1, now() + interval '30 days', now() - interval '1 day', 10, 1000), \
                  (2, 2, now() + interval '30 days', now() - interval '1 day', 10, 1000); \
         INSERT INTO reservations (user_id, schedule_id, concert_id, seat_nos, amount, status, held_until, updated_at) \
           VALUES (1, 1, 1, '{7}', 1000, 'CONFIRMED', now(), now() - interval '1 hour'), \
                  (2, 1, 1, '{7, 8}', 2000, 'CONFIRMED', now(), now() - interval '1 hour')",
    )
    .await
    .unwrap();
    let since = Utc::now() - TimeDelta::days(1);
    let changed_since = async |changed_after, suspects: &[i64]| {
        seat_violations(
            &s.db,
            since,
            SeatScope::ChangedSince {
                changed_after,
                suspects,
            },
        )
        .await
        .unwrap()
    };

    let every = seat_violations(&s.db, since, SeatScope::Every)
        .await
        .unwrap();
    assert_eq!(every.violations.in_two_live_reservations, 1);
    assert_eq!(every.broken, vec![1]);

    // Nothing was written in the last ten minutes: concert 1 is not read...
    let quiet = changed_since(every.at - TimeDelta::minutes(10), &[]).await;
    assert_eq!(quiet.violations.total(), 0);
    assert!(quiet.broken.is_empty());
    // ...unless an earlier check found it broken: then it stays reported.
    let suspect = changed_since(every.at - TimeDelta::minutes(10), &every.broken).await;
    assert_eq!(suspect.violations, every.violations);
    assert_eq!(suspect.broken, vec![1]);

    // A write on concert 2 now: a seat SOLD to a reservation that is only HELD.
    s.db.execute_unprepared(
        "INSERT INTO reservations (id, user_id, schedule_id, concert_id, seat_nos, amount, status, held_until) \
           VALUES (900, 3, 2, 2, '{1}', 1000, 'HELD', now() + interval '5 minutes'); \
         INSERT INTO seats (schedule_id, seat_no, price, status, reservation_id) \
           VALUES (2, 1, 1000, 'SOLD', 900)",
    )
    .await
    .unwrap();
    let changed = changed_since(every.at - TimeDelta::minutes(1), &every.broken).await;
    assert_eq!(changed.broken, vec![1, 2]);
    assert_eq!(changed.violations.in_two_live_reservations, 1);
    assert_eq!(changed.violations.sold_unconfirmed, 1);
    assert!(changed.at >= every.at);
    let every_again = seat_violations(&s.db, since, SeatScope::Every)
        .await
        .unwrap();
    assert_eq!(every_again.violations, changed.violations);
    assert_eq!(every_again.broken, changed.broken);
}

#[tokio::test]
async fn a_seat_sold_to_a_reservation_that_is_not_there_is_a_violation() {
    // No foreign key keeps seats.reservation_id pointing at a row any more: the check does.
    let s = spawn_app().await;
    s.db.execute_unprepared(
        "INSERT INTO concerts (id, title, performer) VALUES (1, 'One', 'A'); \
         INSERT INTO schedules (id, concert_id, starts_at, booking_opens_at, seat_count, price) \
           VALUES (1, 1, now() + interval '30 days', now() - interval '1 day', 10, 1000); \
         INSERT INTO reservations (id, user_id, schedule_id, concert_id, seat_nos, amount, status, held_until) \
           VALUES (900, 1, 1, 1, '{1}', 1000, 'CONFIRMED', now()); \
         INSERT INTO seats (schedule_id, seat_no, price, status, reservation_id) \
           VALUES (1, 1, 1000, 'SOLD', 900), (1, 2, 1000, 'SOLD', 901); \
         INSERT INTO reservation_seats (reservation_id, seat_id) VALUES (901, 1)",
    )
    .await
    .expect("the rows a hold writes have no foreign keys");
    let since = Utc::now() - TimeDelta::days(1);
    let every = seat_violations(&s.db, since, SeatScope::Every)
        .await
        .unwrap();
    assert_eq!(every.violations.sold_unconfirmed, 1, "seat 2 only");
    assert_eq!(every.broken, vec![1]);
    let changed = seat_violations(
        &s.db,
        since,
        SeatScope::ChangedSince {
            changed_after: every.at - TimeDelta::minutes(1),
            suspects: &[],
        },
    )
    .await
    .unwrap();
    assert_eq!(changed.violations, every.violations);
}
