//! Reading a dnstap log: each data frame decoded (prost) into the query it
//! records — the resolver (`query_address`), the question and the client
//! subnet — with the answer path's own request parser (`wire`).

use std::fmt::Write as _;
use std::net::IpAddr;

use prost::Message as _;

use super::proto::{Dnstap, DnstapType, MessageType};
use crate::geo::ClientSubnet;
use crate::wire::{self, TYPE_OPT};

/// Whether a message records a query or its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Query,
    Response,
}

/// One logged query, as a data frame records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub direction: Direction,
    /// The resolver (`query_address`).
    pub resolver: IpAddr,
    /// The client subnet the query carried (address, source prefix).
    pub ecs: Option<(IpAddr, u8)>,
    /// The question's type.
    pub qtype: u16,
}

/// What a frame holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// An authoritative server's or a resolver's client-side message
    /// (`AUTH_*`, `CLIENT_*`); the name is in the decoder's buffer.
    Query(Logged),
    /// Another message type (a resolver's upstream queries, forwarders,
    /// tools): not a query a GeoDNS server is asked.
    Other,
}

/// Decodes frames, reusing its buffers.
#[derive(Default)]
pub struct Decoder {
    copy: Vec<u8>,
    /// The last decoded query name, in presentation form with a trailing
    /// dot, as it came (case kept).
    pub name: String,
}

fn address(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

impl Decoder {
    /// Decodes one data frame; the error says why it is not a query.
    pub fn decode(&mut self, frame: &[u8]) -> Result<Frame, String> {
        let d = Dnstap::decode(frame).map_err(|e| format!("not a dnstap message: {e}"))?;
        if d.r#type != DnstapType::Message as i32 {
            return Err(format!("dnstap type {}, not MESSAGE", d.r#type));
        }
        let m = d.message.ok_or("a MESSAGE without its message")?;
        let t =
            MessageType::try_from(m.r#type).map_err(|_| format!("message type {}", m.r#type))?;
        let direction = match t {
            MessageType::AuthQuery | MessageType::ClientQuery => Direction::Query,
            MessageType::AuthResponse | MessageType::ClientResponse => Direction::Response,
            _ => return Ok(Frame::Other),
        };
        let resolver = m
            .query_address
            .as_deref()
            .and_then(address)
            .ok_or("no query_address (4 or 16 bytes)")?;
        let raw = match direction {
            Direction::Query => m.query_message.as_deref().ok_or("no query_message")?,
            Direction::Response => m.response_message.as_deref().ok_or("no response_message")?,
        };
        let (qtype, ecs) = self.question(raw, direction)?;
        Ok(Frame::Query(Logged {
            direction,
            resolver,
            ecs,
            qtype,
        }))
    }

    /// The question and client subnet of a DNS message, into `self.name`.
    fn question(
        &mut self,
        raw: &[u8],
        direction: Direction,
    ) -> Result<(u16, Option<(IpAddr, u8)>), String> {
        // The request parser takes queries only: a response is read as the
        // query it answers (QR cleared on a copy).
        let raw = if direction == Direction::Response {
            self.copy.clear();
            self.copy.extend_from_slice(raw);
            if let Some(flags) = self.copy.get_mut(2) {
                *flags &= 0x7f;
            }
            &self.copy[..]
        } else {
            raw
        };
        let mut req = wire::Request::blank(raw);
        wire::parse_request_in(&mut req).map_err(|e| match e {
            wire::ParseError::Drop => "a DNS message shorter than its header, or not a query",
            wire::ParseError::FormErr => "a DNS message that does not parse",
            wire::ParseError::NotImp => "a DNS message of another opcode",
        })?;
        if req.fault == Some(wire::Fault::NoQuestion) {
            return Err("a DNS message without a question".into());
        }
        self.name.clear();
        let name = req.qname();
        let mut at = 0;
        while let Some(&len) = name.get(at) {
            if len == 0 {
                break;
            }
            for &b in name.get(at + 1..at + 1 + len as usize).unwrap_or_default() {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    self.name.push(b as char);
                } else {
                    let _ = write!(self.name, "\\{b:03}");
                }
            }
            self.name.push('.');
            at += 1 + len as usize;
        }
        if self.name.is_empty() {
            self.name.push('.');
        }
        let ecs = match req.edns.and_then(|e| e.ecs) {
            None => None,
            Some((s, e)) => {
                let data = raw.get(s..e).unwrap_or_default();
                Some(subnet(data, direction)?)
            }
        };
        debug_assert_ne!(req.qtype, TYPE_OPT);
        Ok((req.qtype, ecs))
    }
}

/// A client-subnet option's address and source prefix; in a response the
/// scope prefix is the server's and is ignored.
fn subnet(data: &[u8], direction: Direction) -> Result<(IpAddr, u8), String> {
    let mut b = [0u8; 20];
    let Some(head) = b.get_mut(..data.len()) else {
        return Err("a client-subnet option longer than an IPv6 one".into());
    };
    head.copy_from_slice(data);
    if direction == Direction::Response && data.len() >= 4 {
        b[3] = 0;
    }
    let cs = ClientSubnet::parse(&b[..data.len()])
        .map_err(|_| "a malformed client-subnet option".to_string())?;
    Ok((cs.addr, cs.source_prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnstap::proto::{Message, SocketFamily, SocketProtocol};

    /// A query for `name` (wire form), with a client-subnet option when
    /// `ecs` is given (its option data).
    fn query(name: &[u8], qtype: u16, ecs: Option<&[u8]>) -> Vec<u8> {
        let mut q = vec![
            0x12,
            0x34,
            0x00,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(ecs.is_some()),
        ];
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if let Some(data) = ecs {
            q.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0]);
            q.extend_from_slice(&((data.len() + 4) as u16).to_be_bytes());
            q.extend_from_slice(&[0, 8]);
            q.extend_from_slice(&(data.len() as u16).to_be_bytes());
            q.extend_from_slice(data);
        }
        q
    }

    fn frame(t: MessageType, addr: &[u8], q: Option<Vec<u8>>, r: Option<Vec<u8>>) -> Vec<u8> {
        Dnstap {
            identity: Some(b"ns1".to_vec()),
            version: None,
            r#type: DnstapType::Message as i32,
            message: Some(Message {
                r#type: t as i32,
                socket_family: Some(SocketFamily::Inet as i32),
                socket_protocol: Some(SocketProtocol::Udp as i32),
                query_address: Some(addr.to_vec()),
                query_message: q,
                response_message: r,
                ..Default::default()
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_query_frame_gives_its_resolver_question_and_client_subnet() {
        let mut d = Decoder::default();
        let www = b"\x03WWW\x07example\x03com\x00";
        let f = frame(
            MessageType::AuthQuery,
            &[192, 0, 2, 1],
            Some(query(www, 28, Some(&[0, 1, 24, 0, 81, 0, 9]))),
            None,
        );
        assert_eq!(
            d.decode(&f).expect("decode"),
            Frame::Query(Logged {
                direction: Direction::Query,
                resolver: "192.0.2.1".parse().expect("addr"),
                ecs: Some(("81.0.9.0".parse().expect("addr"), 24)),
                qtype: 28,
            })
        );
        assert_eq!(d.name, "www.example.com.");
        // A response: QR set, the scope prefix filled in.
        let mut r = query(www, 1, Some(&[0, 1, 24, 16, 81, 0, 9]));
        r[2] = 0x84;
        let f = frame(
            MessageType::ClientResponse,
            &[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            None,
            Some(r),
        );
        let Frame::Query(l) = d.decode(&f).expect("response") else {
            panic!("not a query")
        };
        assert_eq!(l.direction, Direction::Response);
        assert_eq!(l.resolver, "2001:db8::1".parse::<IpAddr>().expect("addr"));
        assert_eq!(l.ecs, Some(("81.0.9.0".parse().expect("addr"), 24)));
        let f = frame(
            MessageType::ResolverQuery,
            &[192, 0, 2, 1],
            Some(query(www, 1, None)),
            None,
        );
        assert_eq!(d.decode(&f).expect("other"), Frame::Other);
    }

    #[test]
    fn frames_that_are_not_queries_are_errors() {
        let mut d = Decoder::default();
        let www = b"\x03www\x00";
        for (f, why) in [
            (b"\xff\xff\xff".to_vec(), "not a dnstap"),
            (
                frame(
                    MessageType::AuthQuery,
                    &[1, 2, 3],
                    Some(query(www, 1, None)),
                    None,
                ),
                "query_address",
            ),
            (
                frame(MessageType::AuthQuery, &[1, 2, 3, 4], None, None),
                "no query_message",
            ),
            (
                frame(
                    MessageType::AuthQuery,
                    &[1, 2, 3, 4],
                    Some(vec![0; 5]),
                    None,
                ),
                "shorter",
            ),
            (
                frame(
                    MessageType::AuthQuery,
                    &[1, 2, 3, 4],
                    Some(query(www, 1, Some(&[0, 1, 33, 0, 1, 2, 3, 4, 5]))),
                    None,
                ),
                "client-subnet",
            ),
        ] {
            let e = d.decode(&f).expect_err(why);
            assert!(e.contains(why), "{e} / {why}");
        }
    }
}
