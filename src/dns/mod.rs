//! The DNS data plane: wire format, answer semantics, UDP and TCP listeners.

pub mod affinity;
pub mod answer;
pub mod tcp;
pub mod udp;

/// The wire format lives below both the listeners and the snapshot compiler.
pub use crate::wire;

pub use answer::{handle, Outcome, Transport};

use std::net::SocketAddr;
use std::sync::Arc;

/// What the DNS listeners count, for status and metrics: one entry per
/// UDP worker, and the TCP listeners' counters.
#[derive(Debug, Default)]
pub struct DnsStats {
    /// The bound DNS addresses (UDP and TCP share each).
    pub addrs: Vec<SocketAddr>,
    pub udp: Vec<Arc<udp::WorkerStats>>,
    pub tcp: Arc<tcp::TcpStats>,
}
