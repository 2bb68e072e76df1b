//! users DB: schema migrations (and, as the service grows, its queries).

pub mod migration;
