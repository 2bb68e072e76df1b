//! End-to-end tests: the services as separate processes over real PostgreSQL, Redis and
//! Kafka, the nginx gateway in front, batch admitting, and the load tool.

mod contract;
mod gateway;
mod journey;
mod loadtest;
mod processes;
