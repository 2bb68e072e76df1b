//! End-to-end fixtures, written once: the services as OS processes ([`process`]), the three
//! APIs with their databases and batch ([`platform`]), the nginx gateway in front of them
//! ([`gateway`]), a client that speaks the public contract ([`client`]), the load tool's
//! fault proxy in front of a dependency ([`proxy`]), and an OTLP receiver for the services'
//! traces ([`otlp`]).

use std::path::PathBuf;

pub mod client;
pub mod gateway;
pub mod otlp;
pub mod platform;
pub mod process;
pub mod proxy;

pub use client::Client;
pub use gateway::Gateway;
pub use platform::Platform;
pub use proxy::FaultProxy;

/// The repository's root (the workspace: `deploy/`, `web/`, `docs/` are beneath it).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}
