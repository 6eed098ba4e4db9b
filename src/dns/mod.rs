//! The DNS data plane: wire format, answer semantics, UDP and TCP listeners.

pub mod affinity;
pub mod answer;
pub mod tcp;
pub mod udp;
pub mod wire;

pub use answer::{handle, Outcome, Transport};
