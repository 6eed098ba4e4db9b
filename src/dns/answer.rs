//! Authoritative answer semantics over a [`Snapshot`]: zone selection,
//! delegations, CNAME chasing, wildcards (RFC 4592), negative answers with
//! the SOA (RFC 2308), minimal ANY (RFC 8482), EDNS (RFC 6891) and
//! truncation. One function, [`handle`], turns a received packet into a
//! reply in a caller-owned buffer; it takes no locks and does not allocate
//! once the buffer has grown to size.

use std::net::IpAddr;

use crate::config::AllDown;
use crate::geo::ClientSubnet;
use crate::guard::cookie::{self, Check};
use crate::guard::rrl::{Class, Verdict};
use crate::guard::Now;
use crate::policy::{
    decide_from, Answer, Client, Family, Scratch, Service, Target as PolicyTarget,
};
use crate::snapshot::{NodeRef, SetRef, Snapshot, Zone};
use crate::wire::{
    self, Fault, NoRoom, ParseError, Request, Section, Writer, MAX_LABELS, MAX_NAME,
};

/// How a query arrived; decides the size limit and transfer handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send nothing.
    Drop,
    /// Send the reply written to the buffer.
    Reply,
    /// A permitted zone transfer: stream it with [`transfer`] (TCP only).
    Transfer(usize),
}

/// Longest CNAME chain followed inside our zones.
const MAX_CHAIN: usize = 8;
/// UDP reply size without EDNS (RFC 1035 §4.2.1).
const PLAIN_UDP: usize = 512;

/// Answers one packet. The reply (when there is one) is left in `out`.
pub fn handle(
    snap: &Snapshot,
    raw: &[u8],
    client: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) -> Outcome {
    let now = Now::for_guard(&snap.guard);
    handle_at(snap, raw, client, transport, out, scratch, now)
}

/// [`handle`] at `now`, the time the caller read for its batch of queries
/// ([`Now::for_guard`]).
pub fn handle_at(
    snap: &Snapshot,
    raw: &[u8],
    client: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
    now: Now,
) -> Outcome {
    let mut req = Request::blank(raw);
    match wire::parse_request_in(&mut req) {
        Ok(()) => {}
        Err(ParseError::Drop) => return Outcome::Drop,
        Err(e) => {
            let Some((id, flags)) = wire::header_id_flags(raw) else {
                return Outcome::Drop;
            };
            let mut w = Writer::header_only(out, id, flags);
            let rcode = if e == ParseError::NotImp {
                wire::RCODE_NOTIMP
            } else {
                wire::RCODE_FORMERR
            };
            w.set_rcode(rcode);
            w.finish();
            snap.counters.query(scratch.slot, None, 0, rcode);
            return limit_error(snap, client, transport, scratch.slot, now, out);
        }
    }
    let nsid = match req.edns {
        Some(e) if e.nsid => snap.nsid.as_deref(),
        _ => None,
    };
    let limit = match (transport, req.edns) {
        (Transport::Tcp, _) => 65535,
        (Transport::Udp, None) => PLAIN_UDP,
        (Transport::Udp, Some(e)) => (e.payload.min(snap.udp_payload) as usize).max(PLAIN_UDP),
    };
    // RFC 7873 §5.4: no question, a COOKIE option and cookies on is a
    // client asking for a server cookie (answered below); any other query
    // without a question is a FORMERR (RFC 9619 §3).
    let cookie_only = req.fault == Some(Fault::NoQuestion)
        && snap.guard.cookies.is_some()
        && req.edns.is_some_and(|e| e.cookie.is_some());
    if let Some(fault) = req.fault.filter(|_| !cookie_only) {
        refuse(snap, &req, fault, limit, out, scratch);
        return limit_error(snap, client, transport, scratch.slot, now, out);
    }
    // RFC 7871 §7.1.1: a malformed client-subnet option is a FORMERR. The
    // options of an opcode we do not implement are not looked at: it gets
    // NOTIMP whatever they hold.
    let query = req.opcode() == 0;
    let ecs_raw = req
        .edns
        .and_then(|e| e.ecs)
        .filter(|_| query)
        .map(|(a, b)| &raw[a..b]);
    let ecs = match ecs_raw.map(ClientSubnet::parse) {
        Some(Ok(e)) => Some(e),
        Some(Err(_)) => {
            refuse(snap, &req, Fault::FormErr, limit, out, scratch);
            return limit_error(snap, client, transport, scratch.slot, now, out);
        }
        None => None,
    };
    let ecs_addr = ecs_raw.map(|d| &d[4..]);
    // DNS cookies (RFC 7873 §5.2): the reply's COOKIE, and whether the
    // query's server cookie is one of ours.
    let mut cookie_out = [0u8; COOKIE_REPLY];
    let mut has_cookie = false;
    let mut cookie_ok = false;
    let cookie_in = req.edns.and_then(|e| e.cookie).filter(|_| query);
    if let (Some(c), Some((a, b))) = (&snap.guard.cookies, cookie_in) {
        let data = &raw[a..b];
        let cookie::Reply { check, server } = cookie::reply(&c.secrets, data, client, now.unix);
        c.stats.seen(scratch.slot, check);
        // §5.2.2: a length that is no cookie's is a FORMERR (any other
        // length holds a client cookie in its first 8 bytes).
        let theirs = <[u8; 8]>::try_from(data.get(..8).unwrap_or_default());
        let (Ok(theirs), false) = (theirs, check == Check::Malformed) else {
            refuse(snap, &req, Fault::FormErr, limit, out, scratch);
            return limit_error(snap, client, transport, scratch.slot, now, out);
        };
        cookie_out[..8].copy_from_slice(&theirs);
        cookie_out[8..].copy_from_slice(&server);
        has_cookie = true;
        cookie_ok = check == Check::Valid;
        // §5.4: a query for a server cookie alone gets NOERROR with one,
        // or BADCOOKIE when the server cookie it sent is not valid.
        if cookie_only {
            let rcode = if check == Check::Invalid {
                c.stats.badcookie(scratch.slot);
                wire::RCODE_BADCOOKIE
            } else {
                wire::RCODE_NOERROR
            };
            cookie_reply(snap, &req, limit, &cookie_out, rcode, out, scratch);
            if cookie_ok {
                return Outcome::Reply;
            }
            return limit_error(snap, client, transport, scratch.slot, now, out);
        }
        // §5.2.3 (2), §5.2.4: a server that requires cookies answers
        // BADCOOKIE with a fresh one, which the client retries with; TCP
        // needs no cookie (the handshake proves the address).
        if c.require && !cookie_ok && transport == Transport::Udp {
            c.stats.badcookie(scratch.slot);
            let rcode = wire::RCODE_BADCOOKIE;
            cookie_reply(snap, &req, limit, &cookie_out, rcode, out, scratch);
            return limit_error(snap, client, transport, scratch.slot, now, out);
        }
    }
    let cookie_len = if has_cookie { 4 + COOKIE_REPLY } else { 0 };
    let cookie = |w: &mut Writer<'_>| {
        if has_cookie {
            w.put_option(wire::OPT_COOKIE, &cookie_out);
        }
    };
    let mut w = Writer::new(out, &req, limit, true);
    // RFC 5001 leaves NSID optional: one that would not fit beside the
    // header, the question and the rest of the OPT record is left out
    // rather than pushing the reply past the client's limit.
    let ecs_len = ecs_addr.map(<[u8]>::len);
    let nsid = nsid.filter(|id| w.len() + wire::opt_len(Some(id), ecs_len) + cookie_len <= limit);
    if let Some(e) = req.edns {
        w.set_reserve(wire::opt_len(nsid, ecs_len) + cookie_len);
        // RFC 6891 §6.1.3: a version we do not implement gets BADVERS,
        // answered with the highest version we do (0).
        if e.version > 0 {
            w.set_rcode(wire::RCODE_BADVERS);
            w.put_opt(
                snap.udp_payload,
                wire::RCODE_BADVERS,
                e.dnssec_ok,
                nsid,
                None,
            );
            cookie(&mut w);
            w.finish();
            snap.counters
                .query(scratch.slot, None, req.qtype, wire::RCODE_BADVERS);
            if cookie_ok {
                return Outcome::Reply;
            }
            return limit_error(snap, client, transport, scratch.slot, now, out);
        }
    }
    if req.opcode() != 0 {
        w.set_rcode(wire::RCODE_NOTIMP);
        if let Some(e) = req.edns {
            w.put_opt(
                snap.udp_payload,
                wire::RCODE_NOTIMP,
                e.dnssec_ok,
                nsid,
                None,
            );
            cookie(&mut w);
        }
        w.finish();
        snap.counters
            .query(scratch.slot, None, req.qtype, wire::RCODE_NOTIMP);
        if cookie_ok {
            return Outcome::Reply;
        }
        return limit_error(snap, client, transport, scratch.slot, now, out);
    }
    let mut ctx = Ctx {
        source: client,
        ecs,
        scope: 0,
        zone: None,
        scratch,
    };
    let after_question = w.mark();
    let (rcode, outcome) = match answer(snap, &req, &mut ctx, transport, &mut w) {
        Ok(r) => r,
        Err(NoRoom) => {
            // The required sections do not fit: send what tells the client
            // to retry over TCP (RFC 2181 §9).
            w.rollback(after_question);
            w.set_tc();
            (wire::RCODE_NOERROR, Outcome::Reply)
        }
    };
    // Response rate limiting: UDP only (TCP is the way around it), and
    // not for a client that proved its address with our cookie.
    if let (Some(l), Transport::Udp, false) = (&snap.guard.rrl, transport, cookie_ok) {
        let (class, name) = rrl_class(snap, &req, ctx.zone, rcode, &w);
        match l.check_at(client, class, name, ctx.scratch.slot, now) {
            Verdict::Pass => {}
            Verdict::Slip => {
                // The header and question only (AA and RCODE as they
                // were), TC=1: a resolver retries over TCP.
                w.rollback(after_question);
                w.set_tc();
            }
            Verdict::Drop => {
                snap.counters
                    .query(ctx.scratch.slot, ctx.zone, req.qtype, rcode);
                return Outcome::Drop;
            }
        }
    }
    w.set_rcode(rcode);
    if let Some(e) = req.edns {
        let echo = match (ecs, ecs_addr) {
            (Some(c), Some(addr)) => Some(wire::EcsEcho {
                family: c.family,
                source_prefix: c.source_prefix,
                scope: ctx.scope,
                addr,
            }),
            _ => None,
        };
        w.put_opt(snap.udp_payload, rcode, e.dnssec_ok, nsid, echo);
        cookie(&mut w);
    }
    w.finish();
    snap.counters
        .query(ctx.scratch.slot, ctx.zone, req.qtype, rcode);
    outcome
}

/// Rate-limits an error reply already written to `out` (FORMERR, NOTIMP,
/// BADVERS, BADCOOKIE, NOTAUTH) in the error class, as Knot does: a flood
/// of malformed queries with a forged source is reflection too. A slipped
/// reply keeps its few bytes and gets TC=1.
#[cold]
fn limit_error(
    snap: &Snapshot,
    client: IpAddr,
    transport: Transport,
    slot: usize,
    now: Now,
    out: &mut [u8],
) -> Outcome {
    let (Some(l), Transport::Udp) = (&snap.guard.rrl, transport) else {
        return Outcome::Reply;
    };
    match l.check_at(client, Class::Error, &[], slot, now) {
        Verdict::Pass => Outcome::Reply,
        Verdict::Slip => {
            if let Some(b) = out.get_mut(2) {
                *b |= (wire::FLAG_TC >> 8) as u8;
            }
            Outcome::Reply
        }
        Verdict::Drop => Outcome::Drop,
    }
}

/// Length of the COOKIE option a reply carries: the client cookie and an
/// RFC 9018 server cookie.
const COOKIE_REPLY: usize = 24;

/// The response class RRL accounts a reply to, and the name it is
/// accounted under (RFC-free, as Knot and BIND do it: NXDOMAIN and
/// referrals per zone, so a flood of random names shares one allowance).
fn rrl_class<'a>(
    snap: &'a Snapshot,
    req: &'a Request<'_>,
    zone: Option<usize>,
    rcode: u16,
    w: &Writer<'_>,
) -> (Class, &'a [u8]) {
    let apex = zone
        .and_then(|z| snap.zones.zones.get(z))
        .map_or(&[][..], |z| &z.apex[..]);
    match rcode {
        wire::RCODE_NXDOMAIN => (Class::Nxdomain, apex),
        wire::RCODE_NOERROR if req.qtype == wire::TYPE_ANY || w.len() > LARGE => {
            (Class::Large, req.qname())
        }
        wire::RCODE_NOERROR if w.count(Section::Answer) > 0 => (Class::Positive, req.qname()),
        wire::RCODE_NOERROR if !w.aa() && w.count(Section::Authority) > 0 => {
            (Class::Referral, apex)
        }
        wire::RCODE_NOERROR => (Class::Nodata, req.qname()),
        _ => (Class::Error, &[]),
    }
}

/// Replies over this size are rate-limited as "large".
const LARGE: usize = 1024;

/// A reply of `rcode` that is only about cookies: BADCOOKIE (RFC 7873
/// §5.2.3, §5.2.4), or the answer to a query for a server cookie alone
/// (§5.4): the question (if any), and an OPT record carrying the client
/// cookie with our server cookie.
#[cold]
fn cookie_reply(
    snap: &Snapshot,
    req: &Request<'_>,
    limit: usize,
    cookie: &[u8],
    rcode: u16,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) {
    let mut w = Writer::new(out, req, limit, true);
    let dnssec_ok = req.edns.is_some_and(|e| e.dnssec_ok);
    w.put_opt(snap.udp_payload, rcode, dnssec_ok, None, None);
    w.put_option(wire::OPT_COOKIE, cookie);
    w.set_rcode(rcode);
    w.finish();
    snap.counters.query(scratch.slot, None, req.qtype, rcode);
}

/// Replies to a query that parsed but is not answered: FORMERR, or NOTAUTH
/// with a TSIG BADKEY record (RFC 8945 §5.2, §5.3.2; a TSIG that cannot be
/// interpreted is a FORMERR). The question is echoed, and the OPT record
/// when the query had one (RFC 6891 §7).
#[cold]
fn refuse(
    snap: &Snapshot,
    req: &Request<'_>,
    fault: Fault,
    limit: usize,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) {
    let mut rcode = wire::RCODE_FORMERR;
    let mut w = Writer::new(out, req, limit, true);
    let opt = |w: &mut Writer<'_>, rcode| {
        if let Some(e) = req.edns {
            w.put_opt(snap.udp_payload, rcode, e.dnssec_ok, None, None);
        }
    };
    if let Fault::Tsig { start, end } = fault {
        // The OPT goes before the TSIG, which must be last.
        let m = w.mark();
        opt(&mut w, wire::RCODE_NOTAUTH);
        match w.put_tsig_error(req.raw, start, end, wire::TSIG_BADKEY) {
            Ok(true) => rcode = wire::RCODE_NOTAUTH,
            Ok(false) => {
                w.rollback(m);
                opt(&mut w, rcode);
            }
            Err(NoRoom) => {
                // Long key and algorithm names over UDP: the error does not
                // fit, so TC tells the client to ask over TCP (RFC 2181 §9).
                rcode = wire::RCODE_NOTAUTH;
                w.rollback(m);
                w.set_tc();
                opt(&mut w, rcode);
            }
        }
    } else {
        opt(&mut w, rcode);
    }
    w.set_rcode(rcode);
    w.finish();
    snap.counters.query(scratch.slot, None, req.qtype, rcode);
}

/// A name being resolved: lower-cased wire bytes (the question's, or a
/// CNAME target's in the zone data) and its label offsets.
struct Target<'n> {
    name: &'n [u8],
    offs: [u8; MAX_LABELS],
    labels: usize,
}

impl<'n> Target<'n> {
    fn from_req(req: &'n Request<'_>) -> Target<'n> {
        Target {
            name: req.qname(),
            offs: req.label_offsets,
            labels: req.labels,
        }
    }
    fn of(name: &'n [u8]) -> Target<'n> {
        let mut t = Target {
            name,
            offs: [0; MAX_LABELS],
            labels: 0,
        };
        t.labels = wire::label_offsets(name, &mut t.offs);
        t
    }
    fn bytes(&self) -> &'n [u8] {
        self.name
    }
    /// The suffix of this name with `n` labels (root = 1).
    fn suffix(&self, n: usize) -> &'n [u8] {
        &self.name[self.offs[self.labels - n] as usize..]
    }
}

enum Found<'z> {
    /// The name exists (or a wildcard covers it).
    Node(NodeRef<'z>),
    /// The name is at or below a delegation point.
    Referral(NodeRef<'z>),
    NxDomain,
}

/// The service that answers `name` (lower-cased wire format), if any:
/// the name itself or the wildcard that covers it, unless a delegation
/// point is in the way.
pub fn find_service<'s>(snap: &'s Snapshot, name: &[u8]) -> Option<(&'s Zone, &'s Service)> {
    let zone = snap.zones.find_name(name)?;
    if name.len() > MAX_NAME {
        return None;
    }
    let t = Target::of(name);
    match lookup(zone, &t, wire::TYPE_A) {
        Found::Node(node) => node.service().map(|i| (zone, &zone.services[i as usize])),
        _ => None,
    }
}

/// Walks from the apex down to `t`, stopping at the first delegation point,
/// then falls back to a wildcard at the closest encloser (RFC 4592 §3.3.1).
fn lookup<'z>(zone: &'z Zone, t: &Target, qtype: u16) -> Found<'z> {
    let mut closest = zone.apex_labels;
    for n in zone.apex_labels + 1..=t.labels {
        match zone.nodes.get(t.suffix(n)) {
            Some(node) => {
                closest = n;
                // DS at a delegation point is the parent's data (RFC 4035 §3.1.4.1).
                if node.cut() && !(n == t.labels && qtype == wire::TYPE_DS) {
                    return Found::Referral(node);
                }
                if n == t.labels {
                    return Found::Node(node);
                }
            }
            None => break,
        }
    }
    if t.labels <= zone.apex_labels {
        return match zone.nodes.get(t.bytes()) {
            Some(node) => Found::Node(node),
            None => Found::NxDomain,
        };
    }
    if zone.has_wildcards {
        let ce = t.suffix(closest);
        let mut wc = [0u8; MAX_NAME + 2];
        wc[0] = 1;
        wc[1] = b'*';
        if ce.len() + 2 <= MAX_NAME {
            wc[2..2 + ce.len()].copy_from_slice(ce);
            if let Some(node) = zone.nodes.get(&wc[..2 + ce.len()]) {
                return Found::Node(node);
            }
        }
    }
    Found::NxDomain
}

fn put_set(
    w: &mut Writer<'_>,
    section: Section,
    owner: &[u8],
    set: SetRef<'_>,
) -> Result<(), NoRoom> {
    for rr in set.rrs() {
        w.put_rr(section, owner, rr)?;
    }
    Ok(())
}

/// Adds the A/AAAA RRsets of `targets` found in `zone` to ADDITIONAL.
/// Returns `Err` only when `required` data does not fit.
fn additional(
    w: &mut Writer<'_>,
    zone: &Zone,
    targets: &[Box<[u8]>],
    required_under: Option<&[u8]>,
) -> Result<(), NoRoom> {
    for t in targets {
        let Some(node) = zone.nodes.get(&t[..]) else {
            continue;
        };
        let required = required_under.is_some_and(|cut| t.ends_with(cut));
        for rtype in [wire::TYPE_A, wire::TYPE_AAAA] {
            let Some(set) = node.get(rtype) else { continue };
            let m = w.mark();
            if put_set(w, Section::Additional, node.name(), set).is_err() {
                w.rollback(m);
                if required {
                    return Err(NoRoom);
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

fn negative(w: &mut Writer<'_>, zone: &Zone) -> Result<(), NoRoom> {
    match &zone.neg_soa_c {
        Some(c) => w.put_apex_soa(Section::Authority, c, &zone.apex_owner, &zone.neg_soa),
        None => w.put_rr(Section::Authority, &zone.apex_owner, &zone.neg_soa),
    }
}

fn answer(
    snap: &Snapshot,
    req: &Request<'_>,
    ctx: &mut Ctx<'_>,
    transport: Transport,
    w: &mut Writer<'_>,
) -> Result<(u16, Outcome), NoRoom> {
    let client = ctx.source;
    if req.qclass != wire::CLASS_IN {
        return Ok((wire::RCODE_REFUSED, Outcome::Reply));
    }
    let Some((zone_idx, zone)) = snap
        .zones
        .find_idx(req.qname(), &req.label_offsets, req.labels)
    else {
        // Not ours: we never recurse or forward.
        return Ok((wire::RCODE_REFUSED, Outcome::Reply));
    };
    ctx.zone = Some(zone_idx);
    if matches!(req.qtype, wire::TYPE_AXFR | wire::TYPE_IXFR) {
        return transfer_request(req, zone, zone_idx, client, transport, w);
    }
    w.set_aa(true);
    let mut t = Target::from_req(req);
    let mut zone = zone;
    let mut rcode = wire::RCODE_NOERROR;
    for hop in 0..MAX_CHAIN {
        let owner_is_q = hop == 0;
        match lookup(zone, &t, req.qtype) {
            Found::Referral(cut) => {
                if hop == 0 {
                    // RFC 1034 §4.3.2 step 3b: a referral is not authoritative.
                    w.set_aa(false);
                    if let Some(ns) = cut.get(wire::TYPE_NS) {
                        put_set(w, Section::Authority, cut.name(), ns)?;
                        let cut_key = &t.name[t.name.len() - cut.name().len()..];
                        additional(w, zone, ns.targets(), Some(cut_key))?;
                    }
                }
                break;
            }
            Found::NxDomain => {
                rcode = wire::RCODE_NXDOMAIN;
                negative(w, zone)?;
                break;
            }
            Found::Node(node) => {
                let owner: &[u8] = if owner_is_q { req.qname() } else { t.bytes() };
                // A dynamic name: its chain answers A/AAAA (or everything,
                // for a service of CNAMEs).
                let mut next: Option<&[u8]> = None;
                let mut done = false;
                if let Some(si) = node.service() {
                    let svc = &zone.services[si as usize];
                    let family = match req.qtype {
                        wire::TYPE_A => Some(Family::V4),
                        wire::TYPE_AAAA => Some(Family::V6),
                        wire::TYPE_ANY => Some(Family::Any),
                        _ if svc.cname => Some(Family::Any),
                        _ => None,
                    };
                    if let Some(family) = family {
                        match service_answer(snap, ctx, svc, family, req.qtype, owner, w)? {
                            Served::Records => done = true,
                            Served::Nodata => {
                                if let (wire::TYPE_ANY, Some(first)) = (req.qtype, node.first()) {
                                    put_set(w, Section::Answer, owner, first)?;
                                } else {
                                    negative(w, zone)?;
                                }
                                done = true;
                            }
                            Served::Cname(target) => {
                                if req.qtype == wire::TYPE_CNAME || req.qtype == wire::TYPE_ANY {
                                    done = true;
                                } else {
                                    next = Some(target);
                                }
                            }
                        }
                    }
                }
                if !done && next.is_none() && req.qtype != wire::TYPE_CNAME {
                    if let Some(cname) = node.get(wire::TYPE_CNAME) {
                        put_set(w, Section::Answer, owner, cname)?;
                        match cname.targets().first() {
                            Some(n) => next = Some(n),
                            None => done = true,
                        }
                    }
                }
                if let Some(next) = next {
                    if next.len() > MAX_NAME || next == t.bytes() {
                        break;
                    }
                    // Follow only into zones we serve (RFC 1034 §4.3.2 step 3a).
                    let Some(nz) = snap.zones.find_name(next) else {
                        break;
                    };
                    zone = nz;
                    t = Target::of(next);
                    continue;
                }
                if done {
                    break;
                }
                if req.qtype == wire::TYPE_ANY {
                    // RFC 8482 §4.1: one RRset, never the whole node.
                    match node.first() {
                        Some(set) => put_set(w, Section::Answer, owner, set)?,
                        None => negative(w, zone)?,
                    }
                    break;
                }
                match node.get(req.qtype) {
                    Some(set) => {
                        put_set(w, Section::Answer, owner, set)?;
                        if matches!(req.qtype, wire::TYPE_NS | wire::TYPE_MX | wire::TYPE_SRV) {
                            additional(w, zone, set.targets(), None)?;
                        }
                    }
                    None => negative(w, zone)?,
                }
                break;
            }
        }
    }
    Ok((rcode, Outcome::Reply))
}

/// Per-query state the answer path threads through.
pub struct Ctx<'a> {
    /// The packet's source address.
    pub source: IpAddr,
    /// A valid client-subnet option from the query.
    pub ecs: Option<ClientSubnet>,
    /// The ECS scope to return: the client-address prefix the answer
    /// depended on (0 when it did not).
    pub scope: u8,
    /// Index of the zone that answered (for counters).
    pub zone: Option<usize>,
    pub scratch: &'a mut Scratch,
}

enum Served<'s> {
    Records,
    Nodata,
    Cname(&'s [u8]),
}

/// The client a service decides for: the ECS address when the service
/// uses ECS and the query carries a non-zero source prefix, else the
/// packet's source (RFC 7871 §7.1.2).
fn client_addr(ctx: &Ctx<'_>, svc: &Service) -> (IpAddr, Option<u8>) {
    match ctx.ecs {
        Some(e) if svc.ecs && e.source_prefix > 0 => (e.addr, Some(e.source_prefix)),
        _ => (ctx.source, None),
    }
}

fn put_target(
    w: &mut Writer<'_>,
    owner: &[u8],
    ttl: u32,
    family: Family,
    t: &PolicyTarget,
) -> Result<(), NoRoom> {
    match t {
        PolicyTarget::Addr(IpAddr::V4(a)) if family != Family::V6 => {
            w.put_rr_parts(Section::Answer, owner, wire::TYPE_A, ttl, &a.octets())
        }
        PolicyTarget::Addr(IpAddr::V6(a)) if family != Family::V4 => {
            w.put_rr_parts(Section::Answer, owner, wire::TYPE_AAAA, ttl, &a.octets())
        }
        PolicyTarget::Cname(_, key) => {
            w.put_rr_parts(Section::Answer, owner, wire::TYPE_CNAME, ttl, key)
        }
        PolicyTarget::Addr(_) => Ok(()),
    }
}

fn any_down(snap: &Snapshot, svc: &Service) -> bool {
    svc.groups
        .iter()
        .flat_map(|g| g.pools.iter())
        .flat_map(|&p| snap.topology.pools[p as usize].endpoints.clone())
        .any(|e| {
            let h = snap.health.get(e);
            !h.up() || h.partial > 0
        })
}

fn service_answer<'s>(
    snap: &'s Snapshot,
    ctx: &mut Ctx<'_>,
    svc: &'s Service,
    family: Family,
    qtype: u16,
    owner: &[u8],
    w: &mut Writer<'_>,
) -> Result<Served<'s>, NoRoom> {
    let (addr, source_prefix) = client_addr(ctx, svc);
    // Compiled geo: the location decision comes from the address range,
    // without touching the database (special addresses are located as usual).
    let indexed = match (svc.compiled, &snap.geo_index) {
        (Some(slot), Some(cg)) if !crate::geo::is_special(addr) => cg.order(slot, addr),
        _ => None,
    };
    let compiled = if ctx.scratch.reference { None } else { indexed };
    let client = Client {
        addr,
        loc: if compiled.is_some() {
            crate::geo::Location::default()
        } else {
            snap.geo.locate(addr)
        },
    };
    let pre = compiled.map(|(order, _)| order);
    // RFC 8482: ANY gets one RRset; prefer A, else AAAA.
    let fam = if qtype == wire::TYPE_ANY && !svc.cname {
        Family::V4
    } else {
        family
    };
    let mut d = decide_from(
        &snap.topology,
        svc,
        &client,
        pre,
        fam,
        &snap.health,
        ctx.scratch,
        None,
    );
    if d.answer == Answer::Nodata && qtype == wire::TYPE_ANY && !svc.cname {
        d = decide_from(
            &snap.topology,
            svc,
            &client,
            pre,
            Family::V6,
            &snap.health,
            ctx.scratch,
            None,
        );
    }
    // The compiled table knows the widest block around the client that gets
    // this location decision (one City network is often much narrower).
    if let Some((_, scope)) = indexed {
        d.scope = d.scope_without_location.max(scope);
    }
    if let Some(sp) = source_prefix {
        ctx.scope = ctx.scope.max(d.scope.min(sp));
    }
    let region = match d.answer {
        Answer::Endpoints => ctx.scratch.out.first().map(|&e| {
            snap.topology.pools[snap.topology.endpoints[e as usize].pool as usize].region as usize
        }),
        _ => None,
    };
    snap.counters
        .answer(ctx.scratch.slot, svc.metric_id, region);
    let ttl = match svc.ttl_when_down {
        // Health-aware TTL: shorter while any candidate is down.
        Some(short) if any_down(snap, svc) => svc.ttl.min(short),
        _ => svc.ttl,
    };
    // Resolver telemetry (one atomic load unless a drill armed it).
    if let Some(&tag) = snap.resolver_tags.services.get(svc.metric_id) {
        let region = region
            .and_then(|r| snap.resolver_tags.regions.get(r).copied())
            .unwrap_or(crate::snapshot::resolvers::NO_REGION);
        snap.resolvers.record(ctx.source, tag, region, ttl);
    }
    match d.answer {
        Answer::Endpoints => {
            if svc.cname {
                let Some(&e) = ctx.scratch.out.first() else {
                    return Ok(Served::Nodata);
                };
                let t = &snap.topology.endpoints[e as usize].target;
                put_target(w, owner, ttl, Family::Any, t)?;
                return Ok(match t {
                    PolicyTarget::Cname(_, key) => Served::Cname(key),
                    PolicyTarget::Addr(_) => Served::Records,
                });
            }
            let any = if fam == Family::Any { Family::Any } else { fam };
            for &e in ctx.scratch.out.iter() {
                put_target(
                    w,
                    owner,
                    ttl,
                    any,
                    &snap.topology.endpoints[e as usize].target,
                )?;
            }
            Ok(Served::Records)
        }
        Answer::Nodata => Ok(Served::Nodata),
        Answer::FallbackAddresses => {
            let AllDown::Addresses(addrs) = &svc.all_down else {
                return Ok(Served::Nodata);
            };
            let want = if fam == Family::Any { Family::V4 } else { fam };
            let mut n = 0;
            for a in addrs {
                let t = PolicyTarget::Addr(*a);
                if want.admits_addr(*a) {
                    put_target(w, owner, ttl, want, &t)?;
                    n += 1;
                }
            }
            Ok(if n == 0 {
                Served::Nodata
            } else {
                Served::Records
            })
        }
        Answer::FallbackCname => match &svc.all_down_cname {
            Some(key) => {
                w.put_rr_parts(Section::Answer, owner, wire::TYPE_CNAME, ttl, key)?;
                Ok(Served::Cname(key))
            }
            None => Ok(Served::Nodata),
        },
    }
}

fn transfer_request(
    req: &Request<'_>,
    zone: &Zone,
    idx: usize,
    client: IpAddr,
    transport: Transport,
    w: &mut Writer<'_>,
) -> Result<(u16, Outcome), NoRoom> {
    let allowed = zone.allow_transfer.iter().any(|net| net.contains(&client));
    if !allowed {
        return Ok((wire::RCODE_REFUSED, Outcome::Reply));
    }
    if req.qname() != &zone.apex[..] {
        return Ok((wire::RCODE_NOTAUTH, Outcome::Reply));
    }
    match (transport, req.qtype) {
        (Transport::Tcp, _) => Ok((wire::RCODE_NOERROR, Outcome::Transfer(idx))),
        // RFC 1995 §2: an IXFR over UDP that cannot be answered in full gets
        // the current SOA alone, and the client then asks over TCP.
        (Transport::Udp, wire::TYPE_IXFR) => {
            w.set_aa(true);
            w.put_rr(Section::Answer, &zone.apex_owner, &zone.soa)?;
            Ok((wire::RCODE_NOERROR, Outcome::Reply))
        }
        // AXFR is defined over TCP only (RFC 5936 §4.2): tell the client to retry there.
        (Transport::Udp, _) => {
            w.set_tc();
            Ok((wire::RCODE_NOERROR, Outcome::Reply))
        }
    }
}

/// Size a transfer message is filled to (a record that does not fit alone
/// gets a message of its own, up to 64 KiB).
const TRANSFER_MESSAGE: usize = 16 * 1024;

/// A zone transfer (RFC 5936 §2.2): the SOA, every other record of the
/// zone in name order, the SOA again, built one message at a time. The
/// caller writes each message before asking for the next, so a zone is
/// never held as a whole in messages, and a client that stops reading
/// stops the walk. The snapshot the transfer started on must be passed to
/// every call (the caller holds it, so a reload mid-transfer does not mix
/// two versions of the zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    zone: usize,
    at: TransferPos,
    messages: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferPos {
    /// The opening SOA.
    Open,
    /// The `rr`-th record (SOA excluded) of the `key`-th name.
    Name {
        key: usize,
        rr: usize,
    },
    /// The closing SOA.
    Close,
    Done,
}

impl Transfer {
    /// A transfer of the zone `Outcome::Transfer` named.
    pub fn new(zone: usize) -> Transfer {
        Transfer {
            zone,
            at: TransferPos::Open,
            messages: 0,
        }
    }

    /// Messages produced so far.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Writes the next message of the transfer into `out`; false when the
    /// transfer is complete (or cannot go on: the zone or request is gone,
    /// or one record does not fit in a message).
    pub fn next_message(&mut self, snap: &Snapshot, raw: &[u8], out: &mut Vec<u8>) -> bool {
        if self.at == TransferPos::Done {
            return false;
        }
        let (Some(zone), Ok(req)) = (snap.zones.zones.get(self.zone), wire::parse_request(raw))
        else {
            self.at = TransferPos::Done;
            return false;
        };
        let apex = &zone.apex_owner[..];
        let mut w = Writer::new(out, &req, TRANSFER_MESSAGE, true);
        w.set_aa(true);
        let mut n = 0usize;
        // Places one record, or reports that the message is full.
        let mut put = |w: &mut Writer<'_>, owner: &[u8], rr: &[u8]| -> bool {
            if w.put_rr(Section::Answer, owner, rr).is_ok() {
                n += 1;
                true
            } else {
                false
            }
        };
        let full = loop {
            match self.at {
                TransferPos::Open => {
                    if !put(&mut w, apex, &zone.soa) {
                        break true;
                    }
                    self.at = TransferPos::Name { key: 0, rr: 0 };
                }
                TransferPos::Name { key, rr } => {
                    let Some(name) = zone.order.get(key) else {
                        self.at = TransferPos::Close;
                        continue;
                    };
                    let mut placed = 0;
                    let mut stopped = false;
                    if let Some(node) = zone.nodes.get(name) {
                        let rrs = node
                            .rrsets()
                            .filter(|s| s.rtype() != wire::TYPE_SOA)
                            .flat_map(|s| s.rrs())
                            .skip(rr);
                        for data in rrs {
                            if !put(&mut w, node.name(), data) {
                                stopped = true;
                                break;
                            }
                            placed += 1;
                        }
                    }
                    if stopped {
                        self.at = TransferPos::Name {
                            key,
                            rr: rr + placed,
                        };
                        break true;
                    }
                    self.at = TransferPos::Name {
                        key: key + 1,
                        rr: 0,
                    };
                }
                TransferPos::Close => {
                    if !put(&mut w, apex, &zone.soa) {
                        break true;
                    }
                    self.at = TransferPos::Done;
                }
                TransferPos::Done => break false,
            }
        };
        if full && n == 0 {
            // One record larger than a message: it goes alone, in a
            // message as large as TCP allows.
            let Some((owner, data)) = self.current(snap) else {
                self.at = TransferPos::Done;
                return false;
            };
            let mut w = Writer::new(out, &req, 65535, true);
            w.set_aa(true);
            if w.put_rr(Section::Answer, owner, data).is_err() {
                self.at = TransferPos::Done;
                return false;
            }
            w.finish();
            self.step();
        } else {
            w.finish();
        }
        self.messages += 1;
        true
    }

    /// The record at the current position.
    fn current<'s>(&self, snap: &'s Snapshot) -> Option<(&'s [u8], &'s [u8])> {
        let zone = snap.zones.zones.get(self.zone)?;
        match self.at {
            TransferPos::Open | TransferPos::Close => Some((&zone.apex_owner[..], &zone.soa[..])),
            TransferPos::Name { key, rr } => {
                let node = zone.nodes.get(zone.order.get(key)?)?;
                let data = node
                    .rrsets()
                    .filter(|s| s.rtype() != wire::TYPE_SOA)
                    .flat_map(|s| s.rrs())
                    .nth(rr)?;
                Some((node.name(), data))
            }
            TransferPos::Done => None,
        }
    }

    /// Moves past the current record.
    fn step(&mut self) {
        self.at = match self.at {
            TransferPos::Open => TransferPos::Name { key: 0, rr: 0 },
            TransferPos::Name { key, rr } => TransferPos::Name { key, rr: rr + 1 },
            TransferPos::Close | TransferPos::Done => TransferPos::Done,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use hickory_proto::op::Message;

    fn snapshot() -> (tempfile::TempDir, Snapshot) {
        let dir = tempfile::tempdir().expect("tempdir");
        let zone = "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\nwww A 192.0.2.2\n\
                    ftp CNAME www\n*.w TXT \"x\"\nsub NS ns.sub\nns.sub A 192.0.2.3\n";
        let mut z = zone.to_string();
        for i in 0..60 {
            z.push_str(&format!("big A 10.0.0.{i}\n"));
        }
        std::fs::write(dir.path().join("z.zone"), z).expect("write");
        let cfg = "[server]\nnsid = \"n\"\n[zones.\"example.com\"]\nfile = \"z.zone\"\nallow_transfer = [\"127.0.0.1/32\"]\n";
        let c = Config::parse(&dir.path().join("g.toml"), cfg).expect("config");
        let (snap, _) = crate::snapshot::build(c, 1, None).expect("snapshot");
        (dir, snap)
    }

    fn q(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut b = vec![
            0x11,
            0x22,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(edns.is_some()),
        ];
        for l in name.split('.').filter(|l| !l.is_empty()) {
            b.push(l.len() as u8);
            b.extend_from_slice(l.as_bytes());
        }
        b.push(0);
        b.extend_from_slice(&qtype.to_be_bytes());
        b.extend_from_slice(&[0, 1]);
        if let Some(p) = edns {
            b.extend_from_slice(&[0, 0, 41]);
            b.extend_from_slice(&p.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 0, 0, 4, 0, 3, 0, 0]);
        }
        b
    }

    /// Random mutations of valid queries never panic, every reply parses,
    /// and UDP replies respect the size limit.
    #[test]
    fn mutated_queries_never_panic_and_replies_are_well_formed() {
        let (_d, snap) = snapshot();
        let seeds = [
            q("www.example.com", 1, None),
            q("big.example.com", 1, Some(1232)),
            q("ftp.example.com", 1, Some(512)),
            q("a.b.w.example.com", 16, None),
            q("x.sub.example.com", 1, Some(4096)),
            q("example.com", 255, None),
            q("example.com", 252, None),
        ];
        let mut out = Vec::new();
        let mut x = 0x2545f4914f6cdd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..100_000 {
            let mut b = seeds[i % seeds.len()].clone();
            let r = next();
            for k in 0..(r % 5) {
                let at = (next() as usize) % b.len();
                b[at] = (next() >> (k * 8)) as u8;
            }
            if r & 0x100 != 0 {
                b.truncate((next() as usize) % (b.len() + 1));
            }
            if r & 0x200 != 0 {
                b.extend_from_slice(&next().to_be_bytes());
            }
            let transport = if r & 0x400 != 0 {
                Transport::Tcp
            } else {
                Transport::Udp
            };
            let client = IpAddr::from([127, 0, 0, 1]);
            match handle(
                &snap,
                &b,
                client,
                transport,
                &mut out,
                &mut Scratch::default(),
            ) {
                Outcome::Reply => {
                    assert!(out.len() >= 12);
                    assert_eq!(out[0..2], b[0..2], "id echoed");
                    if transport == Transport::Udp {
                        assert!(out.len() <= 4096, "UDP reply of {} bytes", out.len());
                    }
                    if let Err(e) = Message::from_vec(&out) {
                        panic!("reply does not parse ({e}) for query {b:?}: {out:?}");
                    }
                }
                Outcome::Drop => assert!(b.len() < 12 || b[2] & 0x80 != 0),
                Outcome::Transfer(_) => assert_eq!(transport, Transport::Tcp),
            }
        }
    }

    #[test]
    fn plain_udp_replies_fit_512_bytes() {
        let (_d, snap) = snapshot();
        let mut out = Vec::new();
        let client = IpAddr::from([127, 0, 0, 1]);
        let o = handle(
            &snap,
            &q("big.example.com", 1, None),
            client,
            Transport::Udp,
            &mut out,
            &mut Scratch::default(),
        );
        assert_eq!(o, Outcome::Reply);
        assert!(out.len() <= 512);
        assert_ne!(out[2] & 0x02, 0, "TC set");
        handle(
            &snap,
            &q("big.example.com", 1, None),
            client,
            Transport::Tcp,
            &mut out,
            &mut Scratch::default(),
        );
        let m = Message::from_vec(&out).expect("parses");
        assert_eq!(m.answers.len(), 60);
    }

    /// RFC 5936 §2.2: SOA first and last, every record once, messages of
    /// at most 16 KiB built one at a time, and a record larger than that
    /// in a message of its own.
    #[test]
    fn rfc5936_2_2_a_transfer_is_built_one_message_at_a_time_with_every_record_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut z = String::from("$TTL 60\n@ SOA ns1 h 7 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n");
        for i in 0..2000 {
            z.push_str(&format!("h{i} A 10.0.{}.{}\n", i / 256, i % 256));
        }
        for i in 0..3000 {
            z.push_str(&format!("many AAAA 2001:db8::{i:x}\n"));
        }
        let chunk = format!("\"{}\" ", "x".repeat(255));
        z.push_str(&format!("huge TXT {}\n", chunk.repeat(100)));
        std::fs::write(dir.path().join("z.zone"), z).expect("write");
        let cfg =
            "[zones.\"example.com\"]\nfile = \"z.zone\"\nallow_transfer = [\"127.0.0.1/32\"]\n";
        let c = Config::parse(&dir.path().join("g.toml"), cfg).expect("config");
        let (snap, _) = crate::snapshot::build(c, 1, None).expect("snapshot");
        let raw = q("example.com", 252, None);
        let mut out = Vec::new();
        let Outcome::Transfer(zone) = handle(
            &snap,
            &raw,
            IpAddr::from([127, 0, 0, 1]),
            Transport::Tcp,
            &mut out,
            &mut Scratch::default(),
        ) else {
            panic!("transfer refused");
        };
        let mut xfr = Transfer::new(zone);
        let mut records = Vec::new();
        let mut oversized = 0;
        while xfr.next_message(&snap, &raw, &mut out) {
            let m = Message::from_vec(&out).expect("parses");
            assert_eq!(m.metadata.id, 0x1122);
            assert!(m.metadata.authoritative);
            if out.len() > TRANSFER_MESSAGE {
                assert_eq!(m.answers.len(), 1, "an oversized record goes alone");
                oversized += 1;
            }
            records.extend(m.answers.iter().map(|r| r.to_string()));
            assert!(xfr.messages() < 10_000, "the transfer ends");
        }
        assert!(!xfr.next_message(&snap, &raw, &mut out), "stays done");
        assert_eq!(oversized, 1);
        assert!(xfr.messages() > 5, "{} messages", xfr.messages());
        // 2 SOAs, NS, ns1, 2000 + 3000 + 1.
        assert_eq!(records.len(), 2 + 2 + 2000 + 3000 + 1);
        assert!(records[0].contains("SOA") && records[records.len() - 1].contains("SOA"));
        let unique: std::collections::HashSet<_> = records[1..records.len() - 1].iter().collect();
        assert_eq!(unique.len(), records.len() - 2, "no record twice");
    }

    /// RFC 5001 §2.3 makes NSID optional, RFC 6891 §7 the payload size
    /// binding: an NSID that would not fit in the client's 512 bytes is
    /// left out, over TCP it is sent.
    #[test]
    fn rfc5001_2_3_an_nsid_that_does_not_fit_the_reply_limit_is_left_out() {
        let (_d, mut snap) = snapshot();
        let long = "n".repeat(500);
        snap.nsid = Some(long.as_bytes().into());
        let client = IpAddr::from([127, 0, 0, 1]);
        let mut out = Vec::new();
        for (transport, sent) in [(Transport::Udp, false), (Transport::Tcp, true)] {
            let o = handle(
                &snap,
                &q("www.example.com", 1, Some(512)),
                client,
                transport,
                &mut out,
                &mut Scratch::default(),
            );
            assert_eq!(o, Outcome::Reply);
            let m = Message::from_vec(&out).expect("parses");
            assert_eq!(m.answers.len(), 1, "{transport:?}");
            assert!(!m.metadata.truncation, "{transport:?}");
            let nsid = m
                .edns
                .as_ref()
                .and_then(|e| e.option(hickory_proto::rr::rdata::opt::EdnsCode::NSID));
            assert_eq!(nsid.is_some(), sent, "{transport:?}");
            if transport == Transport::Udp {
                assert!(out.len() <= 512, "{} bytes", out.len());
            }
        }
    }
}
