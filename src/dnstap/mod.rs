//! dnstap (dnstap.info): DNS messages logged as protobuf in Frame Streams,
//! as Knot's `mod-dnstap`, CoreDNS and dnsdist write them. `reader` turns
//! a log into the queries `geolb replay` replays; `writer` logs the
//! server's own sampled queries and responses off the answer path.

pub mod encode;
pub mod fstrm;
pub mod proto;
pub mod reader;
pub mod writer;
