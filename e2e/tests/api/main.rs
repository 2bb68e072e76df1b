//! End-to-end tests: the services as separate processes over real PostgreSQL, Redis and
//! Kafka, the nginx gateway in front, batch admitting, the load tool, and the web app in a
//! browser.

mod audit;
mod browser;
mod contract;
mod faults;
mod gateway;
mod journey;
mod loadtest;
mod processes;
mod restore;
mod traces;
