//! HTTP routes of users-api: extract, call the domain, map to the contract's responses.

pub mod accounts;
pub mod queue;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    accounts::configure(cfg);
    queue::configure(cfg);
}
