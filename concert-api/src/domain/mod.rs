//! The rules of concert-api: the hold policy, holding and cancelling, settling payments,
//! what an admin may create. Free of HTTP; storage is called, never decided in.

pub mod archive;
pub mod box_office;
pub mod catalogue;
pub mod hold;
pub mod idempotency;
pub mod policy;
pub mod reservation;
pub mod sale;
pub mod settlement;
pub mod status;
