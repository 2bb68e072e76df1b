//! How many status streams one user may hold open in this process.
//!
//! Each open stream costs the process a connection, a task and their memory; one account
//! opening hundreds of them (a script, a buggy tab reloading) would take a share of the line
//! meant for everybody. The gateway caps streams per session token; this caps them per user,
//! which a user with several sessions cannot get round, per process (with N replicas a user
//! may hold up to N × the cap, still a small constant).
//!
//! A stream whose client went away is only noticed when the server next writes to it, and a
//! stream writes only on a change or every keep-alive period (up to 15 s): a fan who closed a
//! tab and opened another would be refused for that long. So a refusal asks the user's open
//! streams to write an SSE comment (ignored by every client) at each of their next checks
//! for [`PROBE_FOR`] (the refusal wakes them): a dead one fails its write and frees its slot
//! within two checks, before the refused client's `Retry-After` is up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long after a refusal the user's streams probe their clients.
pub const PROBE_FOR: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
struct UserStreams {
    open: u32,
    /// Until when the user's streams probe their clients (set by a refusal).
    probe_until: Option<Instant>,
    /// Wakes the user's streams at a refusal, however far they are from their next look.
    probe: Arc<Notify>,
}

type Open = Arc<Mutex<HashMap<i64, UserStreams>>>;

/// The open streams per user of this process.
#[derive(Clone, Debug)]
pub struct StreamSlots {
    per_user: u32,
    open: Open,
}

/// One open stream; dropping it (the stream ended or its client went away) frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    user_id: i64,
    open: Open,
}

impl StreamSlots {
    pub fn new(per_user: u32) -> Self {
        Self {
            per_user,
            open: Arc::default(),
        }
    }

    /// A slot for one more stream of `user_id`, or `None` when the user already has
    /// `per_user` open (which makes those streams probe their clients for [`PROBE_FOR`]).
    pub fn try_open(&self, user_id: i64) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let user = open.entry(user_id).or_default();
        if user.open >= self.per_user {
            user.probe_until = Some(Instant::now() + PROBE_FOR);
            user.probe.notify_waiters();
            return None;
        }
        user.open += 1;
        Some(StreamSlot {
            user_id,
            open: self.open.clone(),
        })
    }

    /// Streams `user_id` has open in this process.
    pub fn open_for(&self, user_id: i64) -> u32 {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&user_id).map_or(0, |u| u.open)
    }
}

impl StreamSlot {
    /// What a refusal of this user's next stream signals (see [`StreamSlot::should_probe`]).
    pub fn probe_signal(&self) -> Arc<Notify> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&self.user_id)
            .map_or_else(Arc::default, |u| u.probe.clone())
    }

    /// Whether this stream should write something now to find out if its client is gone.
    pub fn should_probe(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&self.user_id)
            .and_then(|u| u.probe_until)
            .is_some_and(|until| Instant::now() < until)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(user) = open.get_mut(&self.user_id) {
            user.open -= 1;
            if user.open == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_the_cap_and_a_closed_stream_gives_its_slot_back() {
        let slots = StreamSlots::new(3);
        let mut held: Vec<_> = (0..3)
            .map(|_| slots.try_open(7).expect("under the cap"))
            .collect();
        assert!(!held[0].should_probe(), "nobody was refused yet");
        assert!(slots.try_open(7).is_none(), "a fourth stream is refused");
        assert!(
            held.iter().all(StreamSlot::should_probe),
            "the refusal makes the user's streams check on their clients"
        );
        let other = slots.try_open(8).expect("another user is not affected");
        assert!(!other.should_probe());
        held.pop();
        assert_eq!(slots.open_for(7), 2);
        let again = slots.try_open(7);
        assert!(again.is_some(), "a closed stream frees its slot");
        drop(again);
        assert_eq!(slots.open_for(7), 2);
        drop(held);
        assert_eq!(slots.open_for(7), 0);
    }

    #[test]
    fn users_with_no_stream_leave_no_entry() {
        let slots = StreamSlots::new(1);
        drop(slots.try_open(1));
        assert!(slots.open.lock().unwrap().is_empty());
    }
}
