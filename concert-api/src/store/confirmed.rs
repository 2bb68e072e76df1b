//! Reservations this process has seen CONFIRMED, answered from memory (DESIGN, "A confirmed
//! reservation is answered from memory"). CONFIRMED is final — no statement changes such a
//! reservation again, and archiving moves it unchanged — so a copy is never stale: the
//! owner's look at it right after paying (a web page waiting for CONFIRMED, one look a
//! purchase in the flash sale) needs no database read when the settlement ran here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::reservation::Reservation;
use crate::domain::status::ReservationStatus;

/// Reservations kept at most (some 150 bytes each); when full, the memory starts afresh.
const MAX_KEPT: usize = 50_000;

/// Shared by the settlement, which fills it, and the box office, which reads it.
#[derive(Clone, Default)]
pub struct ConfirmedReservations(Arc<Mutex<HashMap<i64, Reservation>>>);

impl ConfirmedReservations {
    /// Reservation `id`, if this process has seen it CONFIRMED.
    pub fn get(&self, id: i64) -> Option<Reservation> {
        self.0.lock().ok()?.get(&id).cloned()
    }

    /// Keeps `r` if it is CONFIRMED (any other status may still change).
    pub fn keep(&self, r: &Reservation) {
        if r.status != ReservationStatus::Confirmed {
            return;
        }
        let Ok(mut kept) = self.0.lock() else {
            return;
        };
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(r.id, r.clone());
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn reservation(id: i64, status: ReservationStatus) -> Reservation {
        Reservation {
            id,
            user_id: 1,
            schedule_id: 2,
            concert_id: 3,
            seat_nos: vec![4],
            amount: 1000,
            status,
            held_until: Utc::now(),
            payment_id: Some(5),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn only_a_confirmed_reservation_is_kept() {
        let kept = ConfirmedReservations::default();
        let confirmed = reservation(5, ReservationStatus::Confirmed);
        for status in [
            ReservationStatus::Held,
            ReservationStatus::Expired,
            ReservationStatus::Cancelled,
            ReservationStatus::Rejected,
        ] {
            kept.keep(&reservation(status as i64, status));
        }
        kept.keep(&confirmed);
        let seen: Vec<_> = (0..=5).filter_map(|id| kept.get(id)).collect();
        assert_eq!(seen, vec![confirmed]);
    }
}
