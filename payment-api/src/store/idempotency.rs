//! Idempotency keys: the table, statements and rules of [`common::idempotency`] (shared with
//! concert-api's hold keys). The first request with a key does the work and stores its
//! response in the same transaction; a repeat with the same body gets that response again, a
//! repeat with another body is refused. Concurrent requests with one key serialize on the
//! key's row: a repeat waits for the first to commit, up to [`IN_FLIGHT_WAIT`].
//!
//! Nothing of payment-api's own is needed here: the wait is bounded by the connection's
//! `lock_timeout`, which payment-api's pool sets to [`IN_FLIGHT_WAIT`] at connect (`config`),
//! so the claim is [`common::idempotency::claim`] as is. (concert-api's pool sets none, and
//! its claim bounds the key's insert itself.)

pub use common::idempotency::{Claim, IN_FLIGHT_WAIT, claim, record};
