//! Encoding a DNS message as a dnstap data frame.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;

use super::fstrm;
use super::proto::{Dnstap, DnstapType, Message, MessageType, SocketFamily, SocketProtocol};

/// One DNS message an authoritative server received or sent.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// `AUTH_QUERY` or `AUTH_RESPONSE` (any type encodes).
    pub kind: MessageType,
    pub tcp: bool,
    /// The resolver (`query_address`, `query_port`).
    pub client: SocketAddr,
    /// The server's address (`response_address`, `response_port`).
    pub server: SocketAddr,
    /// When the query arrived.
    pub query_time: SystemTime,
    /// When the response left (responses).
    pub response_time: Option<SystemTime>,
    /// The DNS message: the query for a query type, else the response.
    pub message: &'a [u8],
}

fn ip_bytes(a: SocketAddr) -> Vec<u8> {
    match a.ip().to_canonical() {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn split(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

/// Appends `r` as a Frame Streams data frame (length, then the `Dnstap`
/// protobuf).
pub fn put_frame(out: &mut Vec<u8>, identity: &[u8], version: &[u8], r: &Record<'_>) {
    let family = if r.client.ip().to_canonical().is_ipv4() {
        SocketFamily::Inet
    } else {
        SocketFamily::Inet6
    };
    let (qs, qn) = split(r.query_time);
    let response = r.response_time.map(split);
    let query = r.kind.is_query();
    let d = Dnstap {
        identity: (!identity.is_empty()).then(|| identity.to_vec()),
        version: (!version.is_empty()).then(|| version.to_vec()),
        r#type: DnstapType::Message as i32,
        message: Some(Message {
            r#type: r.kind as i32,
            socket_family: Some(family as i32),
            socket_protocol: Some(if r.tcp {
                SocketProtocol::Tcp
            } else {
                SocketProtocol::Udp
            } as i32),
            query_address: Some(ip_bytes(r.client)),
            response_address: Some(ip_bytes(r.server)),
            query_port: Some(u32::from(r.client.port())),
            response_port: Some(u32::from(r.server.port())),
            query_time_sec: Some(qs),
            query_time_nsec: Some(qn),
            query_message: query.then(|| r.message.to_vec()),
            query_zone: None,
            response_time_sec: response.map(|x| x.0),
            response_time_nsec: response.map(|x| x.1),
            response_message: (!query).then(|| r.message.to_vec()),
        }),
    };
    fstrm::put_data_len(out, d.encoded_len());
    // Encoding into a Vec cannot run out of room.
    let _ = d.encode(out);
}

/// A whole dnstap file: START, one frame per record, STOP.
pub fn file(identity: &[u8], version: &[u8], records: &[Record<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    fstrm::put_control(&mut out, fstrm::Control::Start, Some(fstrm::CONTENT_TYPE));
    for r in records {
        put_frame(&mut out, identity, version, r);
    }
    fstrm::put_control(&mut out, fstrm::Control::Stop, None);
    out
}
