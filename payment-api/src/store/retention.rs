//! What payment-api keeps only for a while, and the statements that forget it afterwards
//! (batch's cleanup runs them with its clock's time).

use chrono::TimeDelta;

/// An `Idempotency-Key` is honoured for 24 hours, then forgotten (API.md, Idempotency).
pub const IDEMPOTENCY_KEYS_KEPT: TimeDelta = TimeDelta::hours(24);

/// Deletes idempotency keys created before `before`; returns how many went. A retry with a
/// forgotten key is processed afresh.
pub use common::idempotency::delete_before as delete_idempotency_keys_before;
