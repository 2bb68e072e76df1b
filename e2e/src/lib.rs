//! End-to-end fixtures, written once: the services as OS processes ([`process`]), the three
//! APIs with their databases and batch ([`platform`]), the nginx gateway in front of them
//! ([`gateway`]), and a client that speaks the public contract ([`client`]).

pub mod client;
pub mod gateway;
pub mod platform;
pub mod process;

pub use client::Client;
pub use gateway::Gateway;
pub use platform::Platform;
