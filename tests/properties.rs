//! Round trips over geolb's input surfaces on generated inputs — the same
//! properties the fuzz targets in `fuzz/` check on arbitrary bytes
//! (`tests/common/props.rs` holds them): any query hickory-proto builds
//! gets a reply with its ID that parses and fits; client subnets encode
//! and parse back; zone records read back as hickory-proto encodes them;
//! generated configs load and each mutation of one is an error on the
//! mutated line; no header set forwards a hop-by-hop field.

use crate::common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::OnceLock;

use common::{props, steering};
use geolb::config::Config;
use geolb::diag::Diagnostic;
use geolb::dns::answer::{handle, Outcome, Transport};
use geolb::geo::ClientSubnet;
use geolb::policy::Scratch;
use geolb::snapshot::Snapshot;
use geolb::tier::h1;
use geolb::tier::http::{admit, forward_head};
use geolb::tier::plan::HttpPlan;
use geolb::zone::{build_zone, read_zone_text, ZoneData};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet as HClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, MX, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use proptest::prelude::*;

/// The plain snapshot and the one with RRL and cookies (and their files).
fn snapshots() -> &'static [(tempfile::TempDir, Snapshot); 2] {
    static S: OnceLock<[(tempfile::TempDir, Snapshot); 2]> = OnceLock::new();
    S.get_or_init(|| {
        [
            steering::snapshot_with_records("", steering::MORE_RECORDS),
            steering::snapshot_with_records(
                "[rrl]\nenabled = true\nrate = 5\n[cookies]\nenabled = true\n",
                steering::MORE_RECORDS,
            ),
        ]
    })
}

fn qname() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("www.example.com.".to_string()),
        Just("near.example.com.".to_string()),
        Just("alias.example.com.".to_string()),
        Just("example.com.".to_string()),
        Just("a.sub.example.com.".to_string()),
        Just("example.org.".to_string()),
        (0..60u8).prop_map(|i| format!("host{i}.example.com.")),
        "[a-zA-Z0-9]{1,20}".prop_map(|l| format!("{l}.wild.example.com.")),
        "[a-z0-9]{1,63}".prop_map(|l| format!("{l}.example.com.")),
    ]
}

fn qtype() -> impl Strategy<Value = RecordType> {
    prop_oneof![
        Just(RecordType::A),
        Just(RecordType::AAAA),
        Just(RecordType::MX),
        Just(RecordType::TXT),
        Just(RecordType::ANY),
        Just(RecordType::SOA),
        Just(RecordType::NS),
        Just(RecordType::SRV),
        Just(RecordType::CNAME),
        any::<u16>().prop_map(RecordType::from),
    ]
}

/// A client subnet: address and source prefix within the family.
fn subnet() -> impl Strategy<Value = (IpAddr, u8)> {
    prop_oneof![
        (any::<[u8; 4]>(), 0..=32u8).prop_map(|(a, p)| (IpAddr::from(a), p)),
        (any::<[u8; 16]>(), 0..=128u8).prop_map(|(a, p)| (IpAddr::from(a), p)),
    ]
}

/// `addr` with the bits past `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

#[derive(Debug, Clone)]
struct Opt {
    payload: u16,
    dnssec_ok: bool,
    ecs: Option<(IpAddr, u8)>,
    cookie: Option<Vec<u8>>,
}

fn opt() -> impl Strategy<Value = Option<Opt>> {
    let cookie = prop_oneof![
        prop::collection::vec(any::<u8>(), 8),
        prop::collection::vec(any::<u8>(), 24),
    ];
    proptest::option::of(
        (
            any::<u16>(),
            any::<bool>(),
            proptest::option::of(subnet()),
            proptest::option::of(cookie),
        )
            .prop_map(|(payload, dnssec_ok, ecs, cookie)| Opt {
                payload,
                dnssec_ok,
                ecs,
                cookie,
            }),
    )
}

fn build_query(id: u16, name: &str, t: RecordType, rd: bool, o: &Option<Opt>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = rd;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    if let Some(o) = o {
        let mut e = Edns::new();
        e.set_max_payload(o.payload);
        e.set_dnssec_ok(o.dnssec_ok);
        if let Some((a, p)) = o.ecs {
            let sub = HClientSubnet::new(masked(a, p), p, 0);
            e.options_mut().insert(EdnsOption::Subnet(sub));
        }
        if let Some(c) = &o.cookie {
            let code = u16::from(EdnsCode::Cookie);
            e.options_mut().insert(EdnsOption::Unknown(code, c.clone()));
        }
        m.edns = Some(e);
    }
    m.to_vec().expect("query encodes")
}

fn answer(
    snap: &Snapshot,
    q: &[u8],
    client: IpAddr,
    t: Transport,
    reference: bool,
) -> (Outcome, Vec<u8>) {
    let mut out = Vec::new();
    let mut sc = Scratch::seeded(7);
    sc.reference = reference;
    let o = handle(snap, q, client, t, &mut out, &mut sc);
    (o, out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any query hickory-proto builds — names inside and outside the zone,
    /// any type, EDNS with any payload size, client subnets of both
    /// families, cookies — gets a reply over UDP and TCP with its ID and
    /// question that parses, fits the size the query allows and echoes its
    /// client subnet; the reference path answers the same bytes.
    #[test]
    fn any_built_query_gets_a_reply_with_its_id_that_parses_and_fits(
        id in any::<u16>(),
        name in qname(),
        t in qtype(),
        rd in any::<bool>(),
        o in opt(),
        client in any::<[u8; 4]>(),
        guarded in any::<bool>(),
    ) {
        let (_, snap) = &snapshots()[usize::from(guarded)];
        let q = build_query(id, &name, t, rd, &o);
        let client = IpAddr::from(client);
        for tr in [Transport::Udp, Transport::Tcp] {
            let (outcome, reply) = answer(snap, &q, client, tr, false);
            if outcome == Outcome::Drop {
                prop_assert!(guarded && tr == Transport::Udp, "dropped without RRL");
                continue;
            }
            prop_assert_eq!(outcome, Outcome::Reply);
            let checked = props::check_reply(&q, &reply, tr, snap.udp_payload);
            prop_assert!(checked.is_ok(), "{:?}", checked);
            if !guarded {
                let (o2, again) = answer(snap, &q, client, tr, true);
                prop_assert_eq!(o2, outcome);
                prop_assert_eq!(again, reply);
            }
        }
    }

    /// RFC 7871 §6: a subnet encoded as option data parses back to its
    /// family, prefix and (masked) address; a bit set past the prefix or
    /// an address byte too many or too few is refused.
    #[test]
    fn client_subnet_encodes_and_parses_back((addr, prefix) in subnet(), extra in any::<u8>()) {
        let a = masked(addr, prefix);
        let data = props::encode_ecs(a, prefix);
        let c = ClientSubnet::parse(&data).expect("a well-formed option parses");
        prop_assert_eq!(c.addr, a);
        prop_assert_eq!(c.source_prefix, prefix);
        prop_assert_eq!(c.family, if a.is_ipv4() { 1 } else { 2 });
        let checked = props::check_ecs(&data, Ok(c));
        prop_assert!(checked.is_ok(), "{:?}", checked);
        if prefix % 8 != 0 {
            let mut dirty = data.clone();
            let last = dirty.len() - 1;
            dirty[last] |= 1;
            prop_assert!(ClientSubnet::parse(&dirty).is_err());
        }
        let mut long = data.clone();
        long.push(extra);
        prop_assert!(ClientSubnet::parse(&long).is_err());
        if prefix > 0 {
            prop_assert!(ClientSubnet::parse(&data[..data.len() - 1]).is_err());
        }
    }
}

/// A record to write in a zone file, and the RDATA hickory-proto builds
/// for it.
#[derive(Debug, Clone)]
struct Rec {
    owner: String,
    ttl: u32,
    text: String,
    rdata: RData,
}

fn origin() -> Name {
    Name::from_ascii("example.com.").expect("origin")
}

/// Presentation form of a character-string (RFC 1035 §5.1 quoting).
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn record() -> impl Strategy<Value = Rec> {
    let owner = "[a-z][a-z0-9-]{0,10}";
    let target = || "[a-z][a-z0-9]{0,10}";
    let rdata = prop_oneof![
        any::<[u8; 4]>().prop_map(|a| {
            let ip = Ipv4Addr::from(a);
            (format!("A {ip}"), RData::A(A(ip)))
        }),
        any::<[u8; 16]>().prop_map(|a| {
            let ip = Ipv6Addr::from(a);
            (format!("AAAA {ip}"), RData::AAAA(AAAA(ip)))
        }),
        (any::<u16>(), target()).prop_map(|(p, t)| {
            let n = Name::from_ascii(format!("{t}.example.com.")).expect("name");
            (format!("MX {p} {t}"), RData::MX(MX::new(p, n)))
        }),
        prop::collection::vec("[ -~]{0,40}", 1..4).prop_map(|ss| {
            let text: Vec<String> = ss.iter().map(|s| quoted(s)).collect();
            (format!("TXT {}", text.join(" ")), RData::TXT(TXT::new(ss)))
        }),
        (any::<u16>(), any::<u16>(), any::<u16>(), target()).prop_map(|(a, b, c, t)| {
            let n = Name::from_ascii(format!("{t}.example.com.")).expect("name");
            (
                format!("SRV {a} {b} {c} {t}"),
                RData::SRV(SRV::new(a, b, c, n)),
            )
        }),
    ];
    (owner, 0..=2_147_483_647u32, rdata).prop_map(|(owner, ttl, (text, rdata))| Rec {
        owner,
        ttl,
        text,
        rdata,
    })
}

const ZONE_HEAD: &str =
    "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.1\n";

fn load_zone_text(text: &str) -> (ZoneData, Vec<Diagnostic>) {
    let path = Path::new("/nonexistent/example.com.zone");
    let mut diags = Vec::new();
    let records = read_zone_text(&origin(), path, text, &mut diags);
    let z = build_zone(&origin(), path, records, &mut diags);
    (z, diags)
}

fn error_lines(d: &[Diagnostic]) -> Vec<String> {
    d.iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Records written in presentation form read back as the RDATA
    /// hickory-proto encodes for the same values (A, AAAA, MX, quoted TXT
    /// with escapes, SRV), TTLs kept; the zone printed in the generic form
    /// of RFC 3597 reads back the same.
    #[test]
    fn zone_records_read_back_as_hickory_encodes_them(recs in prop::collection::vec(record(), 1..12)) {
        let mut text = ZONE_HEAD.to_string();
        for r in &recs {
            text.push_str(&format!("{} {} IN {}\n", r.owner, r.ttl, r.text));
        }
        let (zone, diags) = load_zone_text(&text);
        let errors = error_lines(&diags);
        // Records of one RRset with different TTLs are refused or unified;
        // generated TTLs differ, so compare each RRset's RDATA only.
        prop_assume!(errors.is_empty());
        for r in &recs {
            let owner = Name::from_ascii(format!("{}.example.com.", r.owner)).expect("owner");
            let key = (LowerName::new(&owner), r.rdata.record_type());
            let set = zone.rrsets.get(&key);
            prop_assert!(set.is_some(), "{} {} missing", owner, r.rdata.record_type());
            let want = r.rdata.to_bytes().expect("encodes");
            let got: Vec<Vec<u8>> = set
                .map(|s| s.rdatas.iter().filter_map(|d| d.to_bytes().ok()).collect())
                .unwrap_or_default();
            prop_assert!(got.contains(&want), "{}: {:?} not in {:?}", r.text, want, got);
        }
        let printed = props::zone_as_generic(&zone).expect("prints");
        let (again, d2) = load_zone_text(&printed);
        let e2 = error_lines(&d2);
        prop_assert!(e2.is_empty(), "{:?}", e2);
        let same = props::same_zone(&zone, &again);
        prop_assert!(same.is_ok(), "{:?}", same);
    }
}

/// A generated config: regions, their pools, a zone with a service over
/// the pools, as TOML lines.
fn config_lines() -> impl Strategy<Value = Vec<String>> {
    let region = (-80.0..80.0f64, -170.0..170.0f64, 1..4usize, 1..5u32);
    prop::collection::vec(region, 1..5).prop_map(|regions| {
        let mut l = vec![
            "[server]".to_string(),
            "dns = [\"127.0.0.1:5353\"]".to_string(),
            "admin_enabled = false".to_string(),
        ];
        let mut pools = Vec::new();
        for (i, (lat, lon, eps, weight)) in regions.iter().enumerate() {
            l.push(format!("[regions.r{i}]"));
            l.push(format!("location = [{lat:.2}, {lon:.2}]"));
            l.push(format!("[pools.p{i}]"));
            l.push(format!("region = \"r{i}\""));
            l.push("endpoints = [".to_string());
            for e in 0..*eps {
                l.push(format!(
                    "  {{ address = \"192.0.{i}.{e}\", weight = {weight} }},"
                ));
            }
            l.push("]".to_string());
            pools.push(format!("\"p{i}\""));
        }
        l.push("[zones.\"example.com\"]".to_string());
        l.push("file = \"example.com.zone\"".to_string());
        l.push("[zones.\"example.com\".services.www]".to_string());
        l.push(format!("pools = [{}]", pools.join(", ")));
        l.push("chain = [\"healthy\", \"nearest\", \"failover\", \"weighted\"]".to_string());
        l
    })
}

/// Where the generated configs are read from: a directory holding the
/// zone file they name.
fn config_path() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("example.com.zone"), ZONE_HEAD).expect("zone");
        d
    });
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| dir.path().join("geolb.toml"))
}

fn read_config(text: &str) -> Vec<Diagnostic> {
    match Config::read(config_path(), text) {
        Err(e) => e.0,
        Ok((c, mut diags)) => {
            if !diags.iter().any(Diagnostic::is_error) {
                geolb::snapshot::steering::compile(&c, &mut diags);
            }
            diags
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Generated configs load and compile without an error; one mutation —
    /// an unknown key, a value of the wrong type, a reference to a pool
    /// that does not exist — is an error on the mutated line.
    #[test]
    fn generated_configs_load_and_each_mutation_is_an_error_on_its_line(
        lines in config_lines(),
        kind in 0..3usize,
        pick in any::<prop::sample::Index>(),
    ) {
        let text = lines.join("\n");
        let errors = error_lines(&read_config(&text));
        prop_assert!(errors.is_empty(), "{:?}\n{}", errors, text);
        let mut bad = lines.clone();
        let line = match kind {
            0 => {
                // An unknown key in a table.
                let tables: Vec<usize> = (0..bad.len()).filter(|&i| bad[i].starts_with('[')).collect();
                let at = tables[pick.index(tables.len())] + 1;
                bad.insert(at, "no_such_key = 1".into());
                at
            }
            1 => {
                let regions: Vec<usize> = (0..bad.len()).filter(|&i| bad[i].starts_with("region =")).collect();
                let at = regions[pick.index(regions.len())];
                bad[at] = "region = 7".into();
                at
            }
            _ => {
                let at = bad.iter().position(|l| l.starts_with("pools = [")).expect("pools");
                bad[at] = "pools = [\"nowhere\"]".into();
                at
            }
        };
        let text = bad.join("\n");
        let diags = read_config(&text);
        let errs: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
        prop_assert!(!errs.is_empty(), "no error for\n{}", text);
        let checked = props::check_diagnostics(config_path(), &text, &diags, |_| false);
        prop_assert!(checked.is_ok(), "{:?}", checked);
        prop_assert!(
            errs.iter().any(|d| d.line == line + 1),
            "no error on line {}: {:?}\n{}", line + 1, errs, text
        );
    }
}

/// HTTP listener plans with `forwarded_for` off, replace and append.
fn plans() -> &'static [HttpPlan; 3] {
    static P: OnceLock<[HttpPlan; 3]> = OnceLock::new();
    P.get_or_init(|| ["off", "replace", "append"].map(props::http_plan))
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(props::HOP_BY_HOP.to_vec()).prop_map(str::to_string),
        prop::sample::select(vec![
            "host",
            "content-length",
            "x-forwarded-for",
            "forwarded",
            "via",
            "x-request-id",
            "cookie",
        ])
        .prop_map(str::to_string),
        "x-[a-z]{1,6}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever header set a client sends — hop-by-hop fields, fields its
    /// Connection names, several Hosts, Content-Length beside
    /// Transfer-Encoding — a request that is admitted reaches the backend
    /// without a hop-by-hop field, with one Host (the routed host), and
    /// without a Content-Length conflict.
    #[test]
    fn random_header_sets_never_forward_hop_by_hop_fields(
        headers in prop::collection::vec((header_name(), "[ -~]{0,20}"), 0..12),
        named in prop::collection::vec(header_name(), 0..4),
        absolute in proptest::option::of("[a-z]{1,8}\\.example\\.com(:[0-9]{1,4})?"),
        h2 in any::<bool>(),
        mode in 0..3u8,
        trusted in any::<bool>(),
    ) {
        let uri = match &absolute {
            Some(a) => format!("http://{a}/p"),
            None => "/p".to_string(),
        };
        let mut b = http::Request::builder()
            .uri(uri)
            .version(if h2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 });
        for (n, v) in &headers {
            b = b.header(n.as_str(), v.as_str());
        }
        if !named.is_empty() {
            b = b.header("connection", named.join(", "));
        }
        let Ok(req) = b.body(()) else { return Ok(()) };
        let Ok(host) = admit(&req) else { return Ok(()) };
        let plan = &plans()[usize::from(mode)];
        let client: SocketAddr = if trusted { "10.0.0.9:1" } else { "192.0.2.9:1" }.parse().expect("addr");
        let sent = req.headers().clone();
        let (mut parts, ()) = req.into_parts();
        forward_head(plan, &mut parts, client, host.as_deref());
        let checked = props::check_forwarded(&sent, &parts.headers, host.as_deref());
        prop_assert!(checked.is_ok(), "{:?}\nsent {:?}\nforwarded {:?}", checked, sent, parts.headers);
    }
}

/// Requests the native-head property got past the parser (most must).
static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A head's fields as (lower-case name, value) pairs, sorted, without the
/// generated request id (its value is random).
fn field_set(headers: &http::HeaderMap, sent_rid: bool) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(n, _)| sent_rid || n.as_str() != "x-request-id")
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The native engine's backend head (written from the parsed request
    /// with no header map) has the same fields as the hyper engine's
    /// (`forward_head` on the same request as hyper parses it), for every
    /// request the native engine takes; the ones it refuses the hyper
    /// engine refuses too.
    #[test]
    fn the_native_backend_head_has_the_fields_of_the_hyper_engines(
        headers in prop::collection::vec((header_name(), "([!-~]([ -~]{0,18}[!-~])?)?"), 0..12),
        named in prop::collection::vec(header_name(), 0..4),
        mode in 0..3u8,
        trusted in any::<bool>(),
        host in "[a-zA-Z0-9.]{0,12}(:[0-9]{1,4})?",
        cookies in prop::collection::vec(
            prop::sample::select(vec!["geo=t", "a=1; geo=x", "a=1;b=2", "geo", "x=geo; geo=\"q\"", ""]),
            0..3,
        ),
        sticky in any::<bool>(),
    ) {
        let mut headers = headers;
        headers.insert(0, ("host".to_string(), host));
        headers.extend(cookies.iter().map(|c| ("cookie".to_string(), c.to_string())));
        // A group with cookie persistence named "geo": its cookie is
        // removed before forwarding.
        let strip = sticky.then_some("geo");
        let mut raw = String::from("GET /p?q=1 HTTP/1.1\r\n");
        for (n, v) in &headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        if !named.is_empty() {
            raw.push_str(&format!("connection: {}\r\n", named.join(", ")));
        }
        raw.push_str("\r\n");
        let plan = &plans()[usize::from(mode)];
        let client: SocketAddr = if trusted { "10.0.0.9:1" } else { "192.0.2.9:1" }.parse().expect("addr");
        let mut fields = h1::fields();
        let native = h1::parse_request(raw.as_bytes(), &mut fields);
        // The same request as hyper hands it over.
        let mut b = http::Request::builder().uri("/p?q=1");
        for (n, v) in &headers {
            b = b.header(n.as_str(), v.as_str());
        }
        if !named.is_empty() {
            b = b.header("connection", named.join(", "));
        }
        let req = b.body(()).expect("request");
        TAKEN.fetch_add(u64::from(native.is_ok()), std::sync::atomic::Ordering::Relaxed);
        let head = match native {
            Ok(h) => h,
            Err(h1::Verdict::Refuse(..)) => {
                prop_assert!(admit(&req).is_err(), "refused natively, admitted by hyper: {raw:?}");
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        let host = admit(&req);
        prop_assert!(host.is_ok(), "taken natively, refused by hyper: {raw:?}");
        let host = host.unwrap_or_default();
        let mut out = Vec::new();
        let routed = h1::routing_host(head.host);
        let mut ipb = [0u8; 48];
        let n = h1::ip_text(client.ip(), &mut ipb);
        h1::write_backend_head(&head, &h1::Forward {
            plan,
            client,
            client_text: &ipb[..n],
            host: routed.as_deref(),
            strip_cookie: strip,
        }, &mut out);
        out.extend_from_slice(b"\r\n");
        let mut back = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut back);
        prop_assert!(matches!(parsed.parse(&out), Ok(httparse::Status::Complete(_))), "{}", String::from_utf8_lossy(&out));
        prop_assert_eq!(parsed.path, Some("/p?q=1"));
        let mut native_map = http::HeaderMap::new();
        for h in parsed.headers.iter() {
            native_map.append(
                http::HeaderName::from_bytes(h.name.as_bytes()).expect("name"),
                http::HeaderValue::from_bytes(h.value).expect("value"),
            );
        }
        // The client's own request id is kept unless its Connection names it.
        let sent_rid = req.headers().contains_key("x-request-id")
            && !named.iter().any(|n| n == "x-request-id");
        let (mut parts, ()) = req.into_parts();
        if let Some(name) = strip {
            geolb::tier::sticky::strip_cookie(&mut parts.headers, name);
        }
        forward_head(plan, &mut parts, client, host.as_deref());
        prop_assert_eq!(native_map.get_all("x-request-id").iter().count(), parts.headers.get_all("x-request-id").iter().count());
        prop_assert_eq!(
            field_set(&native_map, sent_rid),
            field_set(&parts.headers, sent_rid),
            "{}", raw
        );
    }
}

/// The property above compared heads, not only refusals.
#[test]
fn the_native_head_property_compares_heads() {
    the_native_backend_head_has_the_fields_of_the_hyper_engines();
    let taken = TAKEN.load(std::sync::atomic::Ordering::Relaxed);
    assert!(taken >= 64, "only {taken} of 256 requests were taken");
}

/// Heads the byte-string property got past the parser.
static PARSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The property below took heads, not only refusals.
#[test]
fn the_native_parser_property_takes_heads() {
    the_native_parser_takes_only_heads_it_can_forward_cleanly();
    let n = PARSED.load(std::sync::atomic::Ordering::Relaxed);
    assert!(n >= 32, "only {n} of 512 byte strings were taken as heads");
}

/// Pieces of request heads, for byte strings that come close to one.
fn head_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        9 => prop::sample::select(vec![
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x?y HTTP/1.1\r\n",
            b"Host: a.example\r\n",
            b"host: B.example:81\r\n",
            b"Content-Length: 3\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Connection: x-a, close\r\n",
            b"Connection: host\r\n",
            b"X-A: 1\r\n",
            b"X-Forwarded-For: 1.2.3.4\r\n",
            b"Forwarded: for=1.2.3.4\r\n",
            b" folded\r\n",
            b"\r\n",
            b"\n",
            b"3\r\nabc\r\n0\r\n\r\n",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever bytes a client sends, the native engine's parser either
    /// refuses them, leaves them to hyper, waits for more, or takes a head
    /// whose backend head parses back and passes the forwarding checks
    /// (`props::check_forwarded`); the chunked validator never takes more
    /// than it was given.
    #[test]
    fn the_native_parser_takes_only_heads_it_can_forward_cleanly(
        pieces in prop::collection::vec(head_piece(), 0..8),
        mode in 0..3u8,
        trusted in any::<bool>(),
        line in any::<bool>(),
    ) {
        let mut raw: Vec<u8> = Vec::new();
        if line {
            raw.extend_from_slice(b"GET /p HTTP/1.1\r\nHost: h.example\r\n");
        }
        raw.extend(pieces.concat());
        raw.extend_from_slice(b"\r\n");
        let plan = &plans()[usize::from(mode)];
        let client: SocketAddr = if trusted { "10.0.0.9:1" } else { "192.0.2.9:1" }.parse().expect("addr");
        let mut fields = h1::fields();
        let Ok(head) = h1::parse_request(&raw, &mut fields) else { return Ok(()) };
        PARSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        prop_assert!(head.len <= raw.len());
        let mut sent = http::HeaderMap::new();
        for f in head.headers {
            sent.append(
                http::HeaderName::from_bytes(f.name.as_bytes()).expect("name"),
                http::HeaderValue::from_bytes(f.value).expect("value"),
            );
        }
        let mut ipb = [0u8; 48];
        let n = h1::ip_text(client.ip(), &mut ipb);
        let routed = h1::routing_host(head.host);
        let mut out = Vec::new();
        h1::write_backend_head(&head, &h1::Forward {
            plan,
            client,
            client_text: &ipb[..n],
            host: routed.as_deref(),
            strip_cookie: None,
        }, &mut out);
        out.extend_from_slice(b"\r\n");
        let mut back = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut back);
        prop_assert!(
            matches!(parsed.parse(&out), Ok(httparse::Status::Complete(k)) if k == out.len()),
            "{}", String::from_utf8_lossy(&out)
        );
        let mut fwd = http::HeaderMap::new();
        for f in parsed.headers.iter() {
            fwd.append(
                http::HeaderName::from_bytes(f.name.as_bytes()).expect("name"),
                http::HeaderValue::from_bytes(f.value).expect("value"),
            );
        }
        // The framing of the body passed through is the engine's own (as
        // hyper's client writes it for a streamed body), never the client's
        // field: exactly `chunked` for a chunked body, else nothing.
        let te: Vec<_> = fwd.get_all("transfer-encoding").iter().cloned().collect();
        if head.framing == h1::Framing::Chunked {
            prop_assert_eq!(te, vec![http::HeaderValue::from_static("chunked")]);
            fwd.remove("transfer-encoding");
        } else {
            prop_assert!(te.is_empty());
        }
        let checked = props::check_forwarded(&sent, &fwd, routed.as_deref());
        prop_assert!(checked.is_ok(), "{:?}\n{}", checked, String::from_utf8_lossy(&out));
        let body = &raw[head.len..];
        let mut c = h1::Chunked::default();
        if let Ok(k) = c.feed(body) {
            prop_assert!(k <= body.len());
        }
    }
}
