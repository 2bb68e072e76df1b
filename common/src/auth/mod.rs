//! Who is calling: the session (`Authorization: Bearer`, [`session`]) and the waiting-room
//! pass (`X-Queue-Token`, [`pass`]), both read from Redis (DESIGN §2, §5).
//!
//! users-api writes sessions and queue tokens through the same types, so what it writes and
//! what every service reads cannot drift apart.

mod pass;
mod session;

pub use pass::{ActiveQueuePass, QueueKeys, new_queue_token, queue_token, queue_token_concert};
pub use session::{
    AuthUser, DEFAULT_MAX_LIFETIME, MAX_SESSIONS_PER_USER, Opened, Role, Session, SessionStore,
    bearer_value, random_token,
};
