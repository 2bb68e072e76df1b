//! HTTP routes of users-api: extract, call the domain, map to the contract's responses.

pub mod accounts;
pub mod queue;
pub mod rooms;

use actix_web::web;
use common::auth::SessionStore;
use common::clock::Clock;
use sea_orm::DatabaseConnection;

use crate::concerts::ConcertDirectory;
use crate::domain::queue::{Lines, WaitingRoom};

/// What the handlers work with.
pub struct AppState {
    pub db: DatabaseConnection,
    pub sessions: SessionStore,
    pub room: WaitingRoom,
    /// The lines this process's status streams follow (one ticker per concert).
    pub lines: Lines,
    pub concerts: ConcertDirectory,
    /// The service's time source; the session store and the waiting room hold the same one.
    pub clock: Clock,
    /// The password-hashing slots log-in and sign-up share.
    pub hashing: crate::domain::account::HashGate,
    /// Failed log-ins per (username, address) and per username.
    pub throttle: crate::domain::throttle::LoginThrottle,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    accounts::configure(cfg);
    queue::configure(cfg);
    rooms::configure(cfg);
}
