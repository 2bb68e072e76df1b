//! A fan getting a seat: a free seat of a schedule with seats left, held, retried on 409 and
//! on faults; after a fault the fan keeps exactly one of the holds it may have made.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::Method;
use rand::seq::IndexedRandom;
use serde::Deserialize;
use serde_json::json;

use super::Sale;
use super::retry::backoff;
use crate::fixture::User;
use crate::http::Auth;
use crate::scenarios::record;

/// The parts of the answers a fan choosing a seat reads, parsed straight into them: as
/// `serde_json::Value`s, the schedule list's 100 items and the seat map's 50 seats cost the
/// load generator a quarter of its CPU in malloc (perf over a sale), CPU the platform on the
/// same cores then lacked. An answer not of this shape, even in one item, reads as empty (no
/// schedule, no free seat: the fan looks again).
#[derive(Default, Deserialize)]
struct Listing {
    #[serde(default)]
    items: Vec<Listed>,
}

#[derive(Deserialize)]
struct Listed {
    id: Option<i64>,
}

#[derive(Default, Deserialize)]
struct SeatMap {
    #[serde(default)]
    seats: Vec<MapSeat>,
}

#[derive(Deserialize)]
struct MapSeat {
    seat_no: Option<i64>,
    #[serde(default)]
    status: SeatStatus,
}

#[derive(Default, PartialEq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum SeatStatus {
    Available,
    #[default]
    #[serde(other)]
    Other,
}

/// `body` as a `T`, or `T`'s default when it is not one.
fn read<T: Default + for<'de> Deserialize<'de>>(body: &[u8]) -> T {
    serde_json::from_slice(body).unwrap_or_default()
}

/// The ids in a schedule list's answer.
fn schedule_ids(body: &[u8]) -> Vec<i64> {
    read::<Listing>(body)
        .items
        .into_iter()
        .filter_map(|s| s.id)
        .collect()
}

/// The numbers of the AVAILABLE seats in a seat map's answer.
fn free_seats(body: &[u8]) -> Vec<i64> {
    read::<SeatMap>(body)
        .seats
        .into_iter()
        .filter(|s| s.status == SeatStatus::Available)
        .filter_map(|s| s.seat_no)
        .collect()
}

impl Sale {
    /// Picks a free seat of a schedule with seats left and holds it, retrying on 409 — as a
    /// fan does, until it has one or the sale is over (seats held by others may still be
    /// released, so an empty list is looked at again a second later). A 429 (the gateway's
    /// per-session hold limit, HOLD_RATE_LIMITED) is waited out for its `Retry-After` first.
    /// As in the web app's seat chooser, a fan who lost its seat (409) stays on that date and
    /// looks at its seat map again; only a map without a free seat sends it back to the list.
    ///
    /// A hold that failed with a fault may have been made all the same (the service died
    /// after its commit), and this fan sends its holds without an `Idempotency-Key` (the web
    /// app sends one; without it concert-api has no answer to replay): so after one the fan
    /// looks at its own reservations first, and once it has a hold cancels any other
    /// it made meanwhile — or that seat would stay HELD, unsold, until the hold expires.
    pub(super) async fn hold(&self, u: &User) -> Option<i64> {
        let list = format!(
            "/api/concerts/{}/schedules?available=true&limit=100",
            self.concert
        );
        let mut attempt = 0u64;
        // Faults so far, and whether the last try ended in one (its hold may exist).
        let (mut faults, mut look) = (0, false);
        // The date the fan is choosing seats of, once it has picked one from the list.
        let mut chosen = None;
        loop {
            if self.over() {
                return None;
            }
            if std::mem::take(&mut look)
                && let Some(&id) = self.own_holds(u).await?.first()
            {
                self.keep_only(u, id).await;
                return Some(id);
            }
            if attempt > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            attempt += 1;
            let schedule = match chosen {
                Some(schedule) => schedule,
                None => {
                    let open = self
                        .call(
                            "GET /api/concerts/{id}/schedules",
                            Method::GET,
                            &list,
                            Auth::default(),
                            None,
                        )
                        .await?;
                    let candidates = schedule_ids(&open.body);
                    let Some(&schedule) = candidates.choose(&mut rand::rng()) else {
                        // Nothing on sale in the (seconds-old) list: look again in a second.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    };
                    *chosen.insert(schedule)
                }
            };
            let map = self
                .call(
                    "GET /api/schedules/{id}/seats",
                    Method::GET,
                    &format!("/api/schedules/{schedule}/seats"),
                    u.auth(),
                    None,
                )
                .await?;
            let free = free_seats(&map.body);
            let Some(&seat) = free.choose(&mut rand::rng()) else {
                // Every seat of that schedule is taken (the list is seconds old): back to it.
                chosen = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let held = record(
                &self.rec,
                "POST /api/reservations",
                self.http
                    .post(
                        "/api/reservations",
                        u.auth(),
                        &json!({"schedule_id": schedule, "seat_nos": [seat]}),
                    )
                    .await,
            );
            if held.status == 429 {
                if !self.wait_out_limit(&held).await {
                    return None;
                }
                continue;
            }
            if self.note_lost(&u.auth(), &held) {
                return None;
            }
            if held.status == 201 {
                let id = held.json()["id"].as_i64();
                if faults > 0
                    && let Some(id) = id
                {
                    self.keep_only(u, id).await;
                }
                return id;
            }
            if held.is_fault() {
                self.fault_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(faults)).await;
                faults += 1;
                look = true;
            }
        }
    }

    /// The fan's HELD reservations of this concert, newest first.
    pub(super) async fn own_holds(&self, u: &User) -> Option<Vec<i64>> {
        let mine = self
            .call(
                "GET /api/reservations",
                Method::GET,
                "/api/reservations",
                u.auth(),
                None,
            )
            .await?
            .json();
        Some(
            mine["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|r| r["concert_id"] == self.concert && r["status"] == "HELD")
                        .filter_map(|r| r["id"].as_i64())
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// Cancels the fan's other holds of this concert (made by tries it thought had failed).
    pub(super) async fn keep_only(&self, u: &User, keep: i64) {
        let Some(holds) = self.own_holds(u).await else {
            return;
        };
        for id in holds.into_iter().filter(|id| *id != keep) {
            let _ = self
                .call(
                    "DELETE /api/reservations/{id}",
                    Method::DELETE,
                    &format!("/api/reservations/{id}"),
                    u.auth(),
                    None,
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use serde_json::{Value, json};

    use super::*;
    use crate::scenarios::flash_sale::count;
    use crate::scenarios::flash_sale::fake::{Fake, fan, held, sale};

    #[test]
    fn only_available_seats_with_a_number_are_free_and_another_shape_is_empty() {
        let free = free_seats(
            br#"{"schedule_id": 5, "seats": [
                {"seat_no": 1, "status": "AVAILABLE", "price": 50000},
                {"seat_no": 2, "status": "HELD"},
                {"seat_no": 3, "status": "SOLD"},
                {"seat_no": 4, "status": "SOMETHING_NEW"},
                {"status": "AVAILABLE"},
                {"seat_no": 6}
            ]}"#,
        );
        assert_eq!(free, [1]);
        let listing: Listing =
            read(br#"{"items": [{"id": 7, "price": 1}, {"name": "x"}], "next": null}"#);
        let ids: Vec<_> = listing.items.into_iter().map(|s| s.id).collect();
        assert_eq!(ids, [Some(7), None]);
        for body in [&b"null"[..], b"[]", b"{\"seats\": 3}", b"not json", b""] {
            assert!(read::<SeatMap>(body).seats.is_empty());
            assert!(read::<Listing>(body).items.is_empty());
        }
    }

    /// A platform with one open schedule of one free seat; `holds` answers
    /// POST /api/reservations, `mine` lists the fan's reservations (by how many POSTs came).
    async fn seat_platform(
        holds: impl Fn(usize) -> Option<(u16, Value)> + Send + Sync + 'static,
        mine: impl Fn(usize) -> Value + Send + Sync + 'static,
    ) -> Fake {
        let posts = Arc::new(AtomicU64::new(0));
        Fake::start(move |seen, before| {
            let path = seen.path.split('?').next().unwrap_or("");
            match (seen.method.as_str(), path) {
                ("GET", "/api/concerts/3/schedules") => Some((200, json!({"items": [{"id": 5}]}))),
                ("GET", "/api/schedules/5/seats") => Some((
                    200,
                    json!({"seats": [{"seat_no": 1, "status": "AVAILABLE"}]}),
                )),
                ("POST", "/api/reservations") => {
                    posts.fetch_add(1, Ordering::Relaxed);
                    holds(before)
                }
                ("GET", "/api/reservations") => {
                    Some((200, mine(posts.load(Ordering::Relaxed) as usize)))
                }
                ("DELETE", _) => Some((200, json!({"status": "CANCELLED"}))),
                _ => Some((404, json!({}))),
            }
        })
        .await
    }

    /// The GETs of the schedule list and of schedule 5's seat map a fan made.
    fn looks(fake: &Fake) -> (usize, usize) {
        let lists = fake
            .seen("GET", "/api/concerts/3/schedules?available=true&limit=100")
            .len();
        (lists, fake.seen("GET", "/api/schedules/5/seats").len())
    }

    #[tokio::test]
    async fn a_fan_who_lost_its_seat_looks_at_that_dates_map_again_not_the_list() {
        let fake = seat_platform(
            |before| match before {
                0 | 1 => Some((409, json!({"code": "SEAT_UNAVAILABLE"}))),
                _ => Some((201, held(44))),
            },
            |_| json!({"items": []}),
        )
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        assert_eq!(s.hold(&fan()).await, Some(44));
        assert_eq!(looks(&fake), (1, 3), "(lists, seat maps)");
        assert_eq!(count(&s.retries), 2);
    }

    #[tokio::test]
    async fn a_fan_whose_date_has_no_free_seat_left_goes_back_to_the_list() {
        // Schedule 5's map: a free seat, then none (taken meanwhile), then one again.
        let fake = Fake::start(|seen, before| match (seen.method.as_str(), before) {
            ("GET", _) if seen.path.starts_with("/api/concerts/3/schedules") => {
                Some((200, json!({"items": [{"id": 5}]})))
            }
            ("GET", 1) => Some((200, json!({"seats": [{"seat_no": 1, "status": "SOLD"}]}))),
            ("GET", _) => Some((
                200,
                json!({"seats": [{"seat_no": 1, "status": "AVAILABLE"}]}),
            )),
            ("POST", 0) => Some((409, json!({"code": "SEAT_UNAVAILABLE"}))),
            ("POST", _) => Some((201, held(45))),
            _ => Some((404, json!({}))),
        })
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        assert_eq!(s.hold(&fan()).await, Some(45));
        assert_eq!(looks(&fake), (2, 3), "(lists, seat maps)");
    }

    #[tokio::test]
    async fn a_hold_answered_with_a_fault_but_made_is_found_and_kept() {
        // The first hold is made, then the service dies before answering.
        let fake = seat_platform(
            |_| Some((502, json!({}))),
            |posts| {
                let items = if posts > 0 { vec![held(41)] } else { vec![] };
                json!({"items": items})
            },
        )
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        assert_eq!(s.hold(&fan()).await, Some(41));
        assert_eq!(fake.seen("POST", "/api/reservations").len(), 1);
        assert!(fake.seen("DELETE", "/api/reservations/41").is_empty());
        assert_eq!(count(&s.fault_retries), 1);
    }

    #[tokio::test]
    async fn a_fan_whose_hold_is_rate_limited_waits_its_retry_after_then_holds() {
        // SEAT_UNAVAILABLE, then the gateway's HOLD_RATE_LIMITED (Retry-After: 1), then 201.
        let fake = seat_platform(
            |before| match before {
                0 => Some((409, json!({"code": "SEAT_UNAVAILABLE"}))),
                1 => Some((429, json!({"code": "HOLD_RATE_LIMITED"}))),
                _ => Some((201, held(43))),
            },
            |_| json!({"items": []}),
        )
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        assert_eq!(s.hold(&fan()).await, Some(43));
        let posts = fake.seen("POST", "/api/reservations");
        assert_eq!(posts.len(), 3);
        assert!(
            posts[2].at - posts[1].at >= Duration::from_secs(1),
            "the hold after a 429 waits its Retry-After: {:?}",
            posts[2].at - posts[1].at
        );
        assert_eq!(count(&s.rate_limited), 1);
        assert_eq!(count(&s.fault_retries), 0);
    }

    #[tokio::test]
    async fn after_a_fault_a_fan_keeps_one_hold_and_cancels_the_other() {
        // The first try fails and its hold shows up only later (a slow commit); the second
        // is answered 201. The fan keeps the second and cancels the first.
        let fake = seat_platform(
            |before| match before {
                0 => Some((502, json!({}))),
                _ => Some((201, held(42))),
            },
            |posts| {
                let items = if posts > 1 {
                    vec![held(42), held(41)]
                } else {
                    vec![]
                };
                json!({"items": items})
            },
        )
        .await;
        let s = sale(&fake, Duration::from_secs(1));
        assert_eq!(s.hold(&fan()).await, Some(42));
        assert_eq!(fake.seen("DELETE", "/api/reservations/41").len(), 1);
        assert!(fake.seen("DELETE", "/api/reservations/42").is_empty());
    }
}
