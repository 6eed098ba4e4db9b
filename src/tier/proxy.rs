//! The PROXY protocol (v1 text, v2 binary): read from trusted peers,
//! written to backends that ask for it. Parsing and encoding are the `ppp`
//! crate's; this module reads the header off the socket (bounded in size
//! and time) and keeps whatever followed it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::plan::ProxyVersion;

/// The largest header we accept (v1 is at most 107 bytes; v2 headers with
/// TLVs from load balancers stay well under this).
const MAX_HEADER: usize = 4096;

/// Why a trusted peer's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before the end of the PROXY header")]
    Closed,
    #[error("not a valid PROXY header: {0}")]
    Invalid(String),
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// What a PROXY header said, and the bytes that came after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Source and destination, or None for `LOCAL` / `UNKNOWN` (the
    /// connection's own addresses stand).
    pub addrs: Option<(SocketAddr, SocketAddr)>,
    pub rest: Vec<u8>,
}

fn addrs_v1(a: &ppp::v1::Addresses) -> Option<(SocketAddr, SocketAddr)> {
    match a {
        ppp::v1::Addresses::Tcp4(a) => Some((
            SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
            SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
        )),
        ppp::v1::Addresses::Tcp6(a) => Some((
            SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
            SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
        )),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn addrs_v2(h: &ppp::v2::Header<'_>) -> Option<(SocketAddr, SocketAddr)> {
    if h.command == ppp::v2::Command::Local {
        return None;
    }
    match h.addresses {
        ppp::v2::Addresses::IPv4(a) => Some((
            SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
            SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
        )),
        ppp::v2::Addresses::IPv6(a) => Some((
            SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
            SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
        )),
        _ => None,
    }
}

/// Parses a header at the start of `buf`: Ok(None) when more bytes are
/// needed, else the header's addresses and its length.
#[allow(clippy::type_complexity)]
pub fn parse(buf: &[u8]) -> Result<Option<(Option<(SocketAddr, SocketAddr)>, usize)>, String> {
    use ppp::PartialResult;
    match ppp::HeaderResult::parse(buf) {
        r if r.is_incomplete() => Ok(None),
        ppp::HeaderResult::V1(Ok(h)) => Ok(Some((addrs_v1(&h.addresses), h.header.len()))),
        ppp::HeaderResult::V2(Ok(h)) => Ok(Some((addrs_v2(&h), h.header.len()))),
        ppp::HeaderResult::V1(Err(e)) => Err(e.to_string()),
        ppp::HeaderResult::V2(Err(e)) => Err(e.to_string()),
    }
}

/// Reads a PROXY header (v1 or v2) from a trusted peer.
pub async fn read(stream: &mut TcpStream, within: Duration) -> Result<Received, HeaderError> {
    let work = async {
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(HeaderError::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse(&buf) {
                Ok(Some((addrs, len))) => {
                    return Ok(Received {
                        addrs,
                        rest: buf.split_off(len),
                    })
                }
                Ok(None) if buf.len() >= MAX_HEADER => return Err(HeaderError::TooLong),
                Ok(None) => {}
                Err(e) => return Err(HeaderError::Invalid(e)),
            }
        }
    };
    tokio::time::timeout(within, work)
        .await
        .map_err(|_| HeaderError::Timeout(within))?
}

/// Both addresses in one family (an IPv4 one as IPv4-mapped IPv6 when the
/// other is IPv6), as a header needs them.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if src.is_ipv4() == dst.is_ipv4() {
        (src, dst)
    } else {
        (v6(src), v6(dst))
    }
}

/// The header that tells a backend who the client is (`src`) and which
/// address it connected to (`dst`).
pub fn encode(version: ProxyVersion, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    match version {
        ProxyVersion::V1 => ppp::v1::Addresses::from((src, dst))
            .to_string()
            .into_bytes(),
        ProxyVersion::V2 => ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        // Building into a Vec cannot fail; fall back to the fixed layout's
        // LOCAL form (the backend then uses the connection's addresses).
        .unwrap_or_else(|_| {
            let mut v = super::relay::V2_SIG.to_vec();
            v.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
            v
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_header_bytes_follow_the_spec_for_ipv4_and_ipv6() {
        let src: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        let dst: SocketAddr = "127.0.1.1:9000".parse().expect("addr");
        let h = encode(ProxyVersion::V2, src, dst);
        let mut want = V2.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 127, 0, 1, 1]);
        want.extend_from_slice(&40000u16.to_be_bytes());
        want.extend_from_slice(&9000u16.to_be_bytes());
        assert_eq!(h, want);
        let dst6: SocketAddr = "[2001:db8::1]:443".parse().expect("addr");
        let h6 = encode(ProxyVersion::V2, src, dst6);
        assert_eq!(&h6[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(
            &h6[16..32],
            &"::ffff:192.0.2.7"
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets()
        );
        assert_eq!(parse(&h6).expect("valid").map(|(_, n)| n), Some(52));
    }

    const V2: &[u8; 12] = super::super::relay::V2_SIG;

    #[test]
    fn v1_header_is_the_text_line_and_parses_back_with_what_follows() {
        let src: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        let dst: SocketAddr = "127.0.1.1:9000".parse().expect("addr");
        let h = encode(ProxyVersion::V1, src, dst);
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 127.0.1.1 40000 9000\r\n");
        let mut with_data = h.clone();
        with_data.extend_from_slice(b"hello");
        assert_eq!(parse(&with_data), Ok(Some((Some((src, dst)), h.len()))));
        assert_eq!(parse(&h[..10]), Ok(None));
        assert!(parse(b"PROXY TCP9 x y\r\n").is_err());
    }
}
