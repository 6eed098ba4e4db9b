//! The integration tests, one module per file of `tests/`, linked into one
//! binary: one link of the server and its dependencies instead of one per
//! file, which keeps `cargo test`'s build time and disk use down. Tests that
//! measure the whole process (a counting global allocator, RSS) keep binaries
//! of their own: `alloc`, `barrage`, `tcp_memory`, `tier_http_memory`.
//!
//! Run one file's tests with `cargo test --test integration FILE::`, e.g.
//! `cargo test --test integration tier_http::`.

mod common;

mod architecture;
mod capacity;
mod cookies;
mod deploy;
mod drill;
mod fastpath;
mod faults;
mod geo;
mod health;
mod health_epoch;
mod lab;
mod lifecycle;
mod map;
mod page_map;
mod properties;
mod protocol;
mod reload_load;
mod replay;
mod resolvers;
mod rfc8906;
mod rrl;
mod simulate;
mod status_page;
mod svcb;
mod tcp_limits;
mod tier;
mod tier_h2;
mod tier_http;
mod tier_tls;
mod workers;
