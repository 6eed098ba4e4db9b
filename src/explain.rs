//! `explain`: why a client gets the answer it gets. It sends a real query
//! (with the client as EDNS Client Subnet) through the answer path, and
//! replays the service's chain with a trace and the same random seed, so
//! what it shows is what a resolver would get.

use std::fmt;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet as HClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use ipnet::IpNet;
use serde::Serialize;

use crate::dns::answer::{find_service, handle, Outcome, Transport};
use crate::geo::Location;
use crate::policy::{decide, Client, Family, Scratch, Trace};
use crate::snapshot::{name_key, Snapshot};

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub enum ClientSpec {
    /// One address (sent as ECS with a full-length prefix).
    Addr(IpAddr),
    /// A client subnet (sent as ECS with its prefix).
    Subnet(IpNet),
}

impl ClientSpec {
    /// Parses "203.0.113.7" or "203.0.113.0/24".
    pub fn parse(s: &str) -> Result<ClientSpec, ExplainError> {
        if s.contains('/') {
            s.parse::<IpNet>()
                .map(|n| ClientSpec::Subnet(n.trunc()))
                .map_err(|e| ExplainError::BadClient(format!("{s}: {e}")))
        } else {
            s.parse::<IpAddr>()
                .map(ClientSpec::Addr)
                .map_err(|e| ExplainError::BadClient(format!("{s}: {e}")))
        }
    }
    fn addr_prefix(&self) -> (IpAddr, u8) {
        match self {
            ClientSpec::Addr(a) => (*a, if a.is_ipv4() { 32 } else { 128 }),
            ClientSpec::Subnet(n) => (n.network(), n.prefix_len()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    #[error("not a domain name: {0}")]
    BadName(String),
    #[error("not a record type: {0}")]
    BadType(String),
    #[error("not an address or CIDR: {0}")]
    BadClient(String),
    #[error("cannot build the query: {0}")]
    Query(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct LocationView {
    pub address: String,
    /// Private, loopback and similar addresses are never located.
    pub special: bool,
    pub found: bool,
    pub continent: Option<String>,
    pub country: Option<String>,
    pub subdivision: Option<String>,
    pub coordinates: Option<[f64; 2]>,
    pub asn: Option<u32>,
    /// Prefix length of the matching City/Country database network.
    pub network_prefix: u8,
    pub asn_prefix: u8,
    pub database: Option<String>,
    pub asn_database: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    pub endpoint: String,
    pub up: bool,
    pub state: String,
    /// Per-vantage votes (filled by a running node; empty offline).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub votes: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A group's load and share, as the `capacity` step used them.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityView {
    pub group: String,
    pub region: String,
    /// The load as a fraction of the region's capacity (None: no fresh
    /// report, or no capacity configured).
    pub load: Option<f64>,
    pub connections: Option<f64>,
    pub rps: Option<f64>,
    /// Tier nodes whose reports were summed.
    pub reporters: u32,
    /// What it was judged against (the step's watermarks).
    pub low: f64,
    pub high: f64,
    /// The share of client subnets that keep the group in place, where it
    /// is going, and why.
    pub share: f64,
    pub target: f64,
    pub why: String,
    /// The load in words.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub ttl: u32,
    pub ecs: bool,
    pub chain: Vec<String>,
    pub endpoints: Vec<EndpointView>,
    /// With a `capacity` step: each group's load and share.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capacity: Vec<CapacityView>,
}

/// Everything `explain` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub name: String,
    pub qtype: String,
    pub client: String,
    pub location: LocationView,
    pub zone: Option<String>,
    pub service: Option<ServiceView>,
    pub trace: Option<Trace>,
    pub rcode: String,
    pub answer: Vec<String>,
    pub authority: Vec<String>,
    pub ecs_scope: Option<u8>,
    /// For a service whose location decision is compiled: the address
    /// range around the client that shares it (the ECS scope is the largest
    /// prefix around the client inside it).
    pub compiled_range: Option<String>,
    /// The consensus id of the health epoch the answer was given under
    /// (the snapshot's; None offline, where every endpoint is up).
    pub health_epoch: Option<String>,
}

fn opt_code(s: &[u8]) -> Option<String> {
    let t = crate::geo::code_str(s);
    (!t.is_empty()).then(|| t.to_string())
}

fn location_view(snap: &Snapshot, addr: IpAddr, loc: &Location) -> LocationView {
    let db = |d: &Option<std::sync::Arc<crate::geo::Db>>| {
        d.as_ref().map(|d| {
            format!(
                "{} ({}, built {})",
                d.path.display(),
                d.database_type,
                d.build_epoch
            )
        })
    };
    LocationView {
        address: addr.to_string(),
        special: loc.special,
        found: loc.found,
        continent: opt_code(&loc.continent),
        country: opt_code(&loc.country),
        subdivision: opt_code(&loc.subdivision).map(|s| format!("{}-{s}", loc.country())),
        coordinates: loc.coords.map(|(a, b)| [a, b]),
        asn: (loc.asn != 0).then_some(loc.asn),
        network_prefix: loc.prefix,
        asn_prefix: loc.asn_prefix,
        database: db(&snap.geo.city),
        asn_database: db(&snap.geo.asn),
    }
}

/// Each group's load and share, when the service has a `capacity` step.
fn capacity_view(snap: &Snapshot, svc: &crate::policy::Service) -> Vec<CapacityView> {
    let Some(step) = svc.capacity() else {
        return Vec::new();
    };
    let shares = svc
        .capacity_slot
        .and_then(|s| snap.health.shares.get(s as usize));
    svc.groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let load = snap.health.region_load(g.region);
            let sh = shares.and_then(|l| l.get(i)).copied().unwrap_or_default();
            CapacityView {
                group: g.name.clone(),
                region: snap.topology.regions[g.region as usize].name.clone(),
                load: load.and_then(|l| l.fraction),
                connections: load.map(|l| l.connections),
                rps: load.map(|l| l.rps),
                reporters: load.map_or(0, |l| l.reporters),
                low: step.low,
                high: step.high,
                share: sh.share,
                target: sh.target,
                why: sh.why.as_str().to_string(),
                detail: crate::policy::steps::capacity::describe_load(load),
            }
        })
        .collect()
}

/// Explains the answer to `name`/`qtype` for `client` from `snap`.
pub fn explain(
    snap: &Snapshot,
    name: &str,
    qtype: &str,
    client: ClientSpec,
) -> Result<Explanation, ExplainError> {
    let mut qname =
        Name::from_ascii(name).map_err(|e| ExplainError::BadName(format!("{name}: {e}")))?;
    qname.set_fqdn(true);
    let rtype: RecordType = qtype
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| ExplainError::BadType(qtype.to_string()))?;
    let (addr, prefix) = client.addr_prefix();
    let mut m = Message::query();
    m.metadata.id = 0x4558;
    m.add_query(Query::query(qname.clone(), rtype));
    let mut e = Edns::new();
    e.set_max_payload(65535);
    e.options_mut()
        .insert(EdnsOption::Subnet(HClientSubnet::new(addr, prefix, 0)));
    m.edns = Some(e);
    let bytes = m.to_vec().map_err(|e| ExplainError::Query(e.to_string()))?;

    let seed = 0x0067_656f_6c62_u64;
    let mut out = Vec::new();
    let outcome = handle(
        snap,
        &bytes,
        addr,
        Transport::Tcp,
        &mut out,
        &mut Scratch::seeded(seed),
    );
    let reply = match outcome {
        Outcome::Reply => Message::from_vec(&out).ok(),
        _ => None,
    };
    let loc = snap.geo.locate(addr);
    let key = name_key(&qname);
    let zone = snap.zones.find_name(&key).map(|z| z.origin.to_string());
    let mut service = None;
    let mut trace = None;
    let mut compiled_range = None;
    if let Some((_, svc)) = find_service(snap, &key) {
        // The query carries the client as both source and ECS address.
        if let (Some(slot), Some(cg)) = (svc.compiled, &snap.geo_index) {
            if !crate::geo::is_special(addr) {
                compiled_range = cg.range(slot, addr).map(|(lo, hi)| format!("{lo} - {hi}"));
            }
        }
        let family = match rtype {
            RecordType::AAAA => Family::V6,
            RecordType::A | RecordType::ANY => Family::V4,
            _ if svc.cname => Family::Any,
            _ => Family::V4,
        };
        let c = Client { addr, loc };
        let mut t = Trace::default();
        if !(svc.cname || matches!(rtype, RecordType::A | RecordType::AAAA | RecordType::ANY)) {
            t.notes.push(format!(
                "{rtype} is not steered: static records of the zone answer it"
            ));
        } else {
            decide(
                &snap.topology,
                svc,
                &c,
                family,
                &snap.health,
                &mut Scratch::seeded(seed),
                Some(&mut t),
            );
        }
        trace = Some(t);
        let endpoints = svc
            .groups
            .iter()
            .flat_map(|g| g.pools.iter())
            .flat_map(|&p| snap.topology.pools[p as usize].endpoints.clone())
            .map(|e| {
                let h = snap.health.get(e);
                let state = if h.up() && h.partial > 0 {
                    let moved = !h.up_for(addr);
                    format!(
                        "partially drained by an operator ({:.0} % of client subnets): this client's subnet {}",
                        h.partial_share() * 100.0,
                        if moved {
                            "is moved away by the partial drain"
                        } else {
                            "keeps it"
                        }
                    )
                } else {
                    h.reason().to_string()
                };
                EndpointView {
                    endpoint: snap.topology.endpoints[e as usize].identity.clone(),
                    up: h.up(),
                    state,
                    votes: Default::default(),
                    last_error: None,
                }
            })
            .collect::<Vec<_>>();
        let capacity = capacity_view(snap, svc);
        let mut seen = std::collections::BTreeSet::new();
        service = Some(ServiceView {
            name: svc.name.clone(),
            ttl: svc.ttl,
            ecs: svc.ecs,
            chain: svc.steps.iter().map(|s| s.name().to_string()).collect(),
            endpoints: endpoints
                .into_iter()
                .filter(|e| seen.insert(e.endpoint.clone()))
                .collect(),
            capacity,
        });
    }
    let (rcode, answer, authority, scope) = match &reply {
        Some(r) => {
            let scope = r
                .edns
                .as_ref()
                .and_then(|e| match e.option(EdnsCode::Subnet) {
                    Some(EdnsOption::Subnet(s)) => Some(s.scope_prefix()),
                    _ => None,
                });
            (
                format!("{:?}", r.metadata.response_code).to_uppercase(),
                r.answers.iter().map(|x| x.to_string()).collect(),
                r.authorities.iter().map(|x| x.to_string()).collect(),
                scope,
            )
        }
        None => ("no reply".to_string(), Vec::new(), Vec::new(), None),
    };
    Ok(Explanation {
        name: qname.to_string(),
        qtype: rtype.to_string(),
        client: format!("{addr}/{prefix}"),
        location: location_view(snap, addr, &loc),
        zone,
        service,
        trace,
        rcode,
        answer,
        authority,
        ecs_scope: scope,
        compiled_range,
        health_epoch: (snap.health.epoch.seq > 0).then(|| snap.health.epoch.hex()),
    })
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {} for client {}", self.name, self.qtype, self.client)?;
        let l = &self.location;
        write!(f, "location: ")?;
        if l.special {
            writeln!(
                f,
                "{} is a private/loopback/special address: not located (service defaults apply)",
                l.address
            )?;
        } else if !l.found {
            writeln!(
                f,
                "{} not found in the City database (no continent, country or coordinates)",
                l.address
            )?;
        } else {
            let mut parts = Vec::new();
            if let Some(c) = &l.continent {
                parts.push(format!("continent {c}"));
            }
            if let Some(c) = &l.country {
                parts.push(format!("country {c}"));
            }
            if let Some(c) = &l.subdivision {
                parts.push(format!("subdivision {c}"));
            }
            if let Some([a, b]) = l.coordinates {
                parts.push(format!("at ({a:.2}, {b:.2})"));
            }
            writeln!(f, "{} (network /{})", parts.join(", "), l.network_prefix)?;
        }
        if let Some(asn) = l.asn {
            writeln!(f, "          AS{asn} (network /{})", l.asn_prefix)?;
        }
        match &l.database {
            Some(d) => writeln!(f, "          database {d}")?,
            None => writeln!(f, "          no GeoIP database configured")?,
        }
        match (&self.zone, &self.service) {
            (None, _) => writeln!(f, "zone: none of the served zones contains this name")?,
            (Some(z), None) => writeln!(f, "zone: {z} (static records; not a steered name)")?,
            (Some(z), Some(s)) => {
                writeln!(
                    f,
                    "zone: {z}; service {} (ttl {}, ECS {})",
                    s.name,
                    s.ttl,
                    if s.ecs { "used" } else { "ignored" }
                )?;
                writeln!(f, "endpoints:")?;
                for e in &s.endpoints {
                    let votes: Vec<String> =
                        e.votes.iter().map(|(v, x)| format!("{v}={x}")).collect();
                    write!(f, "  {:<32} {}", e.endpoint, e.state)?;
                    if !votes.is_empty() {
                        write!(f, " [{}]", votes.join(" "))?;
                    }
                    match &e.last_error {
                        Some(err) => writeln!(f, " (last error: {err})")?,
                        None => writeln!(f)?,
                    }
                }
            }
        }
        if let Some(t) = &self.trace {
            if !t.steps.is_empty() {
                writeln!(f, "chain:")?;
            }
            for (i, s) in t.steps.iter().enumerate() {
                writeln!(f, "  {}. {:<9} {}", i + 1, s.step, s.detail)?;
                writeln!(
                    f,
                    "     kept:    {}",
                    if s.kept.is_empty() {
                        "(nothing)".to_string()
                    } else {
                        s.kept.join(", ")
                    }
                )?;
                for d in &s.dropped {
                    writeln!(f, "     dropped: {} ({})", d.candidate, d.why)?;
                }
            }
            for n in &t.notes {
                writeln!(f, "note: {n}")?;
            }
        }
        if let Some(s) = self.service.as_ref().filter(|s| !s.capacity.is_empty()) {
            writeln!(f, "capacity (the load the capacity step used):")?;
            for c in &s.capacity {
                let moving = if c.target == c.share {
                    String::new()
                } else {
                    format!(" -> {:.2}", c.target)
                };
                writeln!(
                    f,
                    "  {:<16} {}; share {:.2}{moving} ({}; low {}, high {})",
                    c.group, c.detail, c.share, c.why, c.low, c.high
                )?;
            }
        }
        writeln!(f, "answer: {}", self.rcode)?;
        for a in &self.answer {
            writeln!(f, "  {a}")?;
        }
        for a in &self.authority {
            writeln!(f, "  (authority) {a}")?;
        }
        match self.ecs_scope {
            Some(s) => writeln!(f, "ECS scope: /{s}")?,
            None => writeln!(f, "ECS scope: none")?,
        }
        match &self.health_epoch {
            Some(e) => writeln!(f, "answered under health epoch {e}")?,
            None => writeln!(
                f,
                "health: every endpoint up (offline; a node's GET /v1/explain answers under its own health epoch)"
            )?,
        }
        if let Some(r) = &self.compiled_range {
            writeln!(
                f,
                "compiled: every client in {r} gets this location decision (the scope is the largest prefix around the client inside it)"
            )?;
        }
        Ok(())
    }
}
