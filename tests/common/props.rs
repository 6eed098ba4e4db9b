//! Properties that hold for any input of geolb's input surfaces — the
//! answer path, the client-subnet and cookie options, the zone reader, the
//! config loader and the tier's request rewriting. Checked on generated
//! inputs by `tests/properties.rs` (proptest) and on arbitrary bytes by
//! the fuzz targets in `fuzz/`, which include this file.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use geolb::config::Config;
use geolb::diag::Diagnostic;
use geolb::dns::answer::Transport;
use geolb::geo::{BadEcs, ClientSubnet};
use geolb::tier::plan::{HttpPlan, Mode};
use geolb::wire;
use geolb::zone::ZoneData;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::serialize::binary::BinEncodable;
use http::header::{self, HeaderMap, HeaderName};

/// Fails with the message when the condition does not hold.
macro_rules! ensure {
    ($c:expr, $($msg:tt)+) => {
        if !$c {
            return Err(format!($($msg)+));
        }
    };
}

/// The largest reply a query may get (RFC 1035 §4.2.1, RFC 6891 §6.2.5):
/// 512 bytes over UDP without EDNS, the size its OPT record advertises
/// (at least 512, at most the server's `udp_payload`) with it, 65535 over
/// TCP. A query that does not parse gets a header alone.
pub fn reply_limit(query: &[u8], transport: Transport, udp_payload: u16) -> usize {
    match (wire::parse_request(query), transport) {
        (Err(_), _) => 12,
        (Ok(_), Transport::Tcp) => 65535,
        (Ok(r), Transport::Udp) => match r.edns {
            None => 512,
            Some(e) => usize::from(e.payload.min(udp_payload)).max(512),
        },
    }
}

/// What every reply to `query` must be: the query's ID and opcode with QR
/// set, within [`reply_limit`], a message hickory-proto decodes, the
/// question echoed byte for byte, and — when the query's client-subnet
/// option was valid and the answer is NOERROR or NXDOMAIN — that option's
/// family, source prefix and address echoed (RFC 7871 §7.2.1).
pub fn check_reply(
    query: &[u8],
    reply: &[u8],
    transport: Transport,
    udp_payload: u16,
) -> Result<(), String> {
    ensure!(reply.len() >= 12, "reply of {} bytes", reply.len());
    ensure!(
        reply[..2] == query[..2],
        "reply ID differs from the query's"
    );
    ensure!(reply[2] & 0x80 != 0, "QR not set");
    ensure!(
        reply[2] & 0x78 == query[2] & 0x78,
        "opcode not echoed: {:#04x} for {:#04x}",
        reply[2],
        query[2]
    );
    let limit = reply_limit(query, transport, udp_payload);
    ensure!(
        reply.len() <= limit,
        "reply of {} bytes over the limit of {limit}",
        reply.len()
    );
    let m = Message::from_vec(reply).map_err(|e| format!("reply does not parse: {e}"))?;
    ensure!(
        m.metadata.message_type == MessageType::Response,
        "not a response"
    );
    let Ok(req) = wire::parse_request(query) else {
        return Ok(());
    };
    if m.queries.len() == 1 {
        let q = &query[12..req.question_end];
        ensure!(
            reply.get(12..12 + q.len()) == Some(q),
            "question not echoed as sent"
        );
    }
    let ecs = req
        .edns
        .and_then(|e| e.ecs)
        .and_then(|(a, b)| ClientSubnet::parse(&query[a..b]).ok());
    let answered = matches!(
        m.metadata.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    );
    if let (Some(sent), true) = (ecs, answered) {
        let echo = m
            .edns
            .as_ref()
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) => Some(*s),
                _ => None,
            });
        let echo = echo.ok_or("the client-subnet option is not echoed")?;
        ensure!(
            echo.source_prefix() == sent.source_prefix && echo.addr() == sent.addr,
            "client subnet echoed as {}/{}, sent {}/{}",
            echo.addr(),
            echo.source_prefix(),
            sent.addr,
            sent.source_prefix
        );
    }
    Ok(())
}

/// RFC 7871 §6 option data for a client subnet: FAMILY, SOURCE
/// PREFIX-LENGTH, SCOPE 0, the address cut to ceil(prefix / 8) bytes.
pub fn encode_ecs(addr: IpAddr, prefix: u8) -> Vec<u8> {
    let (family, bytes) = match addr {
        IpAddr::V4(a) => (1u16, a.octets().to_vec()),
        IpAddr::V6(a) => (2u16, a.octets().to_vec()),
    };
    let mut out = family.to_be_bytes().to_vec();
    out.extend_from_slice(&[prefix, 0]);
    out.extend_from_slice(&bytes[..usize::from(prefix).div_ceil(8)]);
    out
}

/// An accepted client-subnet option is a known family with a prefix no
/// longer than the family's, exactly ceil(prefix / 8) address bytes, no
/// bit set past the prefix, and encodes back to the same bytes.
pub fn check_ecs(data: &[u8], parsed: Result<ClientSubnet, BadEcs>) -> Result<(), String> {
    let Ok(c) = parsed else { return Ok(()) };
    let max = match (c.family, c.addr) {
        (1, IpAddr::V4(_)) => 32,
        (2, IpAddr::V6(_)) => 128,
        _ => return Err(format!("family {} with address {}", c.family, c.addr)),
    };
    ensure!(
        c.source_prefix <= max,
        "prefix {} over {max}",
        c.source_prefix
    );
    ensure!(
        data.len() == 4 + usize::from(c.source_prefix).div_ceil(8),
        "{} address bytes for /{}",
        data.len() - 4,
        c.source_prefix
    );
    ensure!(
        encode_ecs(c.addr, c.source_prefix) == data,
        "{}/{} does not encode back to the option",
        c.addr,
        c.source_prefix
    );
    let bits = match c.addr {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    };
    let host = u128::MAX
        .checked_shr(u32::from(c.source_prefix))
        .unwrap_or(0);
    ensure!(bits & host == 0, "bits set past /{}", c.source_prefix);
    Ok(())
}

/// Every error of a load points into the file it read: the file's path,
/// and a line within the text, or line 0 only where `whole_file` says the
/// error is about the file as a whole.
pub fn check_diagnostics(
    path: &Path,
    text: &str,
    diags: &[Diagnostic],
    whole_file: impl Fn(&Diagnostic) -> bool,
) -> Result<(), String> {
    let lines = text.lines().count().max(1) + 1;
    for d in diags.iter().filter(|d| d.is_error()) {
        ensure!(d.file == path, "error in another file: {d}");
        ensure!(d.line <= lines, "line past the end ({lines} lines): {d}");
        ensure!(d.line > 0 || whole_file(d), "error without a line: {d}");
    }
    Ok(())
}

/// A validated zone printed as master-file text, every record in the
/// generic form of RFC 3597 §5 (`\# LENGTH HEX`, the wire RDATA as
/// hickory-proto encodes it), owners absolute, TTLs explicit.
pub fn zone_as_generic(z: &ZoneData) -> Result<String, String> {
    let mut out = String::new();
    for set in z.rrsets.values() {
        for rd in &set.rdatas {
            let bytes = rd
                .to_bytes()
                .map_err(|e| format!("{} {}: {e}", set.name, set.rtype))?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let owner = set.name.to_string();
            let owner = if owner.ends_with('.') {
                owner
            } else {
                format!("{owner}.")
            };
            let _ = writeln!(
                out,
                "{owner} {} IN TYPE{} \\# {} {hex}",
                set.ttl,
                u16::from(set.rtype),
                bytes.len()
            );
        }
    }
    Ok(out)
}

/// Two zones hold the same RRsets: owners (case-insensitively), types,
/// TTLs and RDATA wire bytes.
pub fn same_zone(a: &ZoneData, b: &ZoneData) -> Result<(), String> {
    let wire = |z: &ZoneData| -> Result<Vec<_>, String> {
        z.rrsets
            .iter()
            .map(|(k, s)| {
                let mut rd = Vec::new();
                for r in &s.rdatas {
                    rd.push(r.to_bytes().map_err(|e| e.to_string())?);
                }
                rd.sort();
                Ok((k.clone(), s.ttl, rd))
            })
            .collect()
    };
    let (wa, wb) = (wire(a)?, wire(b)?);
    ensure!(
        wa.len() == wb.len(),
        "{} RRsets became {}",
        wa.len(),
        wb.len()
    );
    for (x, y) in wa.iter().zip(&wb) {
        ensure!(x == y, "{:?} became {:?}", x, y);
    }
    Ok(())
}

/// Fields that describe one connection (RFC 9110 §7.6.1), never forwarded.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// What a backend may receive, given the client's head (`sent`) and the
/// head after `geolb::tier::http::forward_head` (`fwd`): no hop-by-hop
/// field and none that the client's Connection named (unless the rewrite
/// set it itself), exactly one Host whose host is the one the request was
/// routed by (`routed`), at most one Content-Length, and never both
/// Content-Length and Transfer-Encoding.
pub fn check_forwarded(
    sent: &HeaderMap,
    fwd: &HeaderMap,
    routed: Option<&str>,
) -> Result<(), String> {
    for h in HOP_BY_HOP {
        ensure!(!fwd.contains_key(h), "hop-by-hop {h} forwarded");
    }
    // Fields the rewrite sets itself (the fuzz and test plans' request id
    // is `x-request-id`).
    let ours = [
        "host",
        "forwarded",
        "via",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    ];
    for v in sent.get_all(header::CONNECTION) {
        let Ok(v) = v.to_str() else { continue };
        for n in v.split(',') {
            let Ok(n) = HeaderName::from_bytes(n.trim().as_bytes()) else {
                continue;
            };
            if ours.contains(&n.as_str()) {
                continue;
            }
            ensure!(!fwd.contains_key(&n), "{n}, named by Connection, forwarded");
        }
    }
    let hosts: Vec<_> = fwd.get_all(header::HOST).iter().collect();
    if let Some(r) = routed {
        ensure!(hosts.len() == 1, "{} Host fields forwarded", hosts.len());
        let h = hosts[0]
            .to_str()
            .map_err(|_| "Host is not text")?
            .to_ascii_lowercase();
        let bare = if h.starts_with('[') {
            &h[..h.find(']').map_or(h.len(), |i| i + 1)]
        } else {
            h.split(':').next().unwrap_or(&h)
        };
        ensure!(
            bare.trim_end_matches('.') == r,
            "forwarded Host {h} is not the routed host {r}"
        );
    } else {
        ensure!(hosts.len() <= 1, "{} Host fields forwarded", hosts.len());
    }
    let lengths = fwd.get_all(header::CONTENT_LENGTH).iter().count();
    ensure!(lengths <= 1, "{lengths} Content-Length fields forwarded");
    ensure!(
        !(lengths > 0 && fwd.contains_key(header::TRANSFER_ENCODING)),
        "Content-Length and Transfer-Encoding forwarded together"
    );
    Ok(())
}

/// The plan of an HTTP listener, compiled from a config as a running tier
/// compiles it: routes by host and path prefix and by header,
/// `forwarded_for` as given ("append", "replace", "off"), trusted proxies
/// 10.0.0.0/8, `forwarded`, `via` and `request_id = "x-request-id"`.
pub fn http_plan(forwarded_for: &str) -> HttpPlan {
    let text = format!(
        "[server]\ndns = [\"127.0.0.1:5353\"]\nadmin_enabled = false\n\
         [regions.eu]\nlocation = [50.1, 8.7]\n\
         [groups.g]\nregion = \"eu\"\nmembers = [{{ address = \"127.0.1.11:80\" }}]\n\
         [listeners.h]\nregion = \"eu\"\nbind = \"127.0.1.1:8080\"\nmode = \"http\"\ngroup = \"g\"\n\
         forwarded_for = \"{forwarded_for}\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
         forwarded = true\nvia = true\nrequest_id = \"x-request-id\"\n\
         routes = [{{ host = \"api.example.com\", path_prefix = \"/v2\", group = \"g\" }},\n\
         {{ host = \"*.example.com\", header = {{ name = \"x-canary\", value = \"1\" }}, group = \"g\" }},\n\
         {{ path_prefix = \"/static/\", group = \"g\" }}]\n"
    );
    // No zones: read as far as it goes (that error is not the tier's).
    let (config, _) = Config::read(Path::new("/nonexistent/geolb.toml"), &text).expect("config");
    let mut diags = Vec::new();
    let plan = geolb::snapshot::tier::compile(&config, &Default::default(), &mut diags);
    assert!(!diags.iter().any(Diagnostic::is_error), "{diags:?}");
    let listener = plan.listeners.into_iter().next().expect("listener");
    match listener.mode {
        Mode::Http(p) => *p,
        Mode::Tcp => panic!("not an HTTP listener"),
    }
}
