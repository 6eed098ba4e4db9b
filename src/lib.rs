//! geolb: a GeoDNS global server load balancer.
//!
//! Data flow: config + zone files are parsed and validated ([`config`],
//! [`zone`]), compiled into an immutable [`snapshot::Snapshot`], and swapped
//! in atomically; the DNS listeners ([`dns`]) answer every query from the
//! current snapshot without locks. See ARCHITECTURE.md.

pub mod admin;
pub mod balance;
pub mod config;
pub mod control;
pub mod diag;
pub mod dns;
pub mod dnstap;
pub mod drill;
pub mod explain;
pub mod geo;
pub mod guard;
pub mod health;
pub mod lab;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod sim;
pub mod snapshot;
pub mod sock;
pub mod tier;
pub mod wire;
pub mod zone;
