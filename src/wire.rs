//! DNS wire format: the request parser and the response writer used by the
//! answer path, and the name helpers the snapshot compiler shares with it.
//!
//! Queries are parsed straight from the receive buffer into a fixed-size
//! [`Request`] (no heap allocation); responses are written into a reusable
//! buffer by [`Writer`], copying records that were encoded once when the
//! snapshot was compiled. Owner names are compressed against the question
//! name, which covers almost every record an authoritative answer carries.

/// Maximum length of a domain name in wire format (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
/// Maximum number of labels in a name (including the root).
pub const MAX_LABELS: usize = 128;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_HINFO: u16 = 13;
pub const TYPE_MX: u16 = 15;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_DS: u16 = 43;
pub const TYPE_TSIG: u16 = 250;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

pub const OPT_NSID: u16 = 3;
pub const OPT_ECS: u16 = 8;
/// DNS cookie option (RFC 7873 §4).
pub const OPT_COOKIE: u16 = 10;

pub const RCODE_NOERROR: u16 = 0;
pub const RCODE_FORMERR: u16 = 1;
pub const RCODE_SERVFAIL: u16 = 2;
pub const RCODE_NXDOMAIN: u16 = 3;
pub const RCODE_NOTIMP: u16 = 4;
pub const RCODE_REFUSED: u16 = 5;
pub const RCODE_NOTAUTH: u16 = 9;
/// TSIG error: the key is not known to the server (RFC 8945 §5.2).
pub const TSIG_BADKEY: u16 = 17;
/// Extended RCODE 16 (RFC 6891 §9); needs an OPT record to be expressed.
pub const RCODE_BADVERS: u16 = 16;
/// Extended RCODE 23: a missing or bad server cookie (RFC 7873 §8).
pub const RCODE_BADCOOKIE: u16 = 23;

const FLAG_QR: u16 = 0x8000;
const OPCODE_MASK: u16 = 0x7800;
const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_CD: u16 = 0x0010;
const EDNS_DO: u16 = 0x8000;

/// Why a packet could not be parsed as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not worth a reply: shorter than a header, or a response (QR=1).
    Drop,
    /// Reply FORMERR (header fields are known).
    FormErr,
    /// Reply NOTIMP: an opcode we do not implement.
    NotImp,
}

/// A query that parsed but is not to be answered normally (only set for
/// opcode QUERY: any other opcode is answered NOTIMP whatever its body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// FORMERR, with the question and (when the query has one) the OPT
    /// record echoed (RFC 6891 §7): a second client-subnet option (RFC 7871
    /// §7.1.1), bytes after the last section (RFC 1035 §4.1), a TSIG record
    /// that is not the last record or not the only one (RFC 8945 §5.1).
    FormErr,
    /// A TSIG record, the last record of the message, at `start..end` of
    /// the request: geolb has no keys, so it cannot verify it (RFC 8945
    /// §5.2: NOTAUTH with TSIG error BADKEY).
    Tsig { start: usize, end: usize },
    /// No question (QDCOUNT 0), the rest well formed: a client asking for a
    /// server cookie alone (RFC 7873 §5.4) when it carries a COOKIE option
    /// and cookies are on; FORMERR otherwise (RFC 9619 §3).
    NoQuestion,
}

/// The parts of a query's OPT record (RFC 6891) that the answer path uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    pub nsid: bool,
    /// Byte range of the client-subnet option's data inside the request.
    pub ecs: Option<(usize, usize)>,
    /// Byte range of the (first) COOKIE option's data inside the request.
    pub cookie: Option<(usize, usize)>,
}

/// A parsed query. Names are held in fixed buffers so parsing never allocates.
#[derive(Clone)]
pub struct Request<'a> {
    pub raw: &'a [u8],
    pub id: u16,
    pub flags: u16,
    /// End of the question section in `raw` (the question is echoed verbatim).
    pub question_end: usize,
    /// Length of the question name in wire format.
    pub qname_len: usize,
    /// Question name, lower-cased, wire format.
    pub qname: [u8; MAX_NAME],
    /// Start offset of each label in `qname`; `labels` entries are valid,
    /// the last one is the root label.
    pub label_offsets: [u8; MAX_LABELS],
    pub labels: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    /// Why the query, though parsed, is not answered normally.
    pub fault: Option<Fault>,
}

impl<'a> Request<'a> {
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0x0f) as u8
    }
    pub fn rd(&self) -> bool {
        self.flags & FLAG_RD != 0
    }
    /// The lower-cased question name in wire format.
    pub fn qname(&self) -> &[u8] {
        &self.qname[..self.qname_len]
    }
    /// The name formed by the last `n` labels of the question name (n = 1 is the root).
    pub fn suffix(&self, n: usize) -> &[u8] {
        let idx = self.labels - n;
        &self.qname[self.label_offsets[idx] as usize..self.qname_len]
    }
}

/// Reads only the 12-byte header fields needed to answer an unparsable query.
pub fn header_id_flags(raw: &[u8]) -> Option<(u16, u16)> {
    if raw.len() < 12 {
        return None;
    }
    Some((
        u16::from_be_bytes([raw[0], raw[1]]),
        u16::from_be_bytes([raw[2], raw[3]]),
    ))
}

fn rd16(raw: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*raw.get(at)?, *raw.get(at + 1)?]))
}

/// Length of the uncompressed wire name at the start of `b` (through its
/// root label), if it is one.
fn plain_name_len(b: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    loop {
        let len = *b.get(at)? as usize;
        if len & 0xc0 != 0 || at + 1 + len > MAX_NAME {
            return None;
        }
        at += 1 + len;
        if len == 0 {
            return (at <= b.len()).then_some(at);
        }
    }
}

/// Where the names lie in the RDATA of a type whose names may be
/// compressed (NS, CNAME, PTR: one name; MX: preference, name; SOA: two
/// names, five counters): the offset of the first name and the end of each
/// name (`count` of them); `None` when the RDATA is not shaped so.
struct RdataNames {
    first: usize,
    ends: [usize; 2],
    count: usize,
}

fn rdata_names(rtype: u16, rdata: &[u8]) -> Option<RdataNames> {
    let (first, count, after) = match rtype {
        TYPE_MX => (2, 1, 0),
        TYPE_SOA => (0, 2, 20),
        TYPE_NS | TYPE_CNAME | TYPE_PTR => (0, 1, 0),
        _ => return None,
    };
    let mut at = first;
    let mut ends = [0usize; 2];
    for end in ends.iter_mut().take(count) {
        at += plain_name_len(rdata.get(at..)?)?;
        *end = at;
    }
    (rdata.len() == at + after).then_some(RdataNames { first, ends, count })
}

/// Skips a (possibly compressed) name starting at `at`; returns the offset after it.
fn skip_name(raw: &[u8], mut at: usize) -> Result<usize, ParseError> {
    let mut total = 0usize;
    loop {
        let len = *raw.get(at).ok_or(ParseError::FormErr)? as usize;
        match len & 0xc0 {
            0x00 => {
                at += 1 + len;
                total += 1 + len;
                if total > MAX_NAME || at > raw.len() {
                    return Err(ParseError::FormErr);
                }
                if len == 0 {
                    return Ok(at);
                }
            }
            0xc0 => {
                let lo = *raw.get(at + 1).ok_or(ParseError::FormErr)? as usize;
                check_pointer(raw, at, ((len & 0x3f) << 8) | lo, total)?;
                return Ok(at + 2);
            }
            _ => return Err(ParseError::FormErr),
        }
    }
}

/// A compression pointer at `at` to `target` (RFC 1035 §4.1.4) must name a
/// prior occurrence inside the message, and the name it completes must end
/// within 255 octets (`total` already spent). Each pointer followed points
/// strictly backwards, so a loop is impossible.
fn check_pointer(
    raw: &[u8],
    mut at: usize,
    mut target: usize,
    mut total: usize,
) -> Result<(), ParseError> {
    loop {
        if target >= at || target < 12 {
            return Err(ParseError::FormErr);
        }
        let mut q = target;
        loop {
            let len = *raw.get(q).ok_or(ParseError::FormErr)? as usize;
            match len & 0xc0 {
                0x00 => {
                    total += 1 + len;
                    if total > MAX_NAME {
                        return Err(ParseError::FormErr);
                    }
                    if len == 0 {
                        return Ok(());
                    }
                    q += 1 + len;
                }
                0xc0 => {
                    let lo = *raw.get(q + 1).ok_or(ParseError::FormErr)? as usize;
                    at = q;
                    target = ((len & 0x3f) << 8) | lo;
                    break;
                }
                _ => return Err(ParseError::FormErr),
            }
        }
    }
}

/// Parses a query. Triage follows a fixed order: short packet or QR=1 (drop),
/// opcode (NOTIMP), question count and question (FORMERR), then the OPT record.
pub fn parse_request(raw: &[u8]) -> Result<Request<'_>, ParseError> {
    let mut req = Request::blank(raw);
    parse_request_in(&mut req)?;
    Ok(req)
}

impl<'a> Request<'a> {
    /// A request over `raw` with nothing parsed yet (see [`parse_request_in`]).
    #[inline]
    pub fn blank(raw: &'a [u8]) -> Request<'a> {
        Request {
            raw,
            id: 0,
            flags: 0,
            question_end: 12,
            qname_len: 0,
            qname: [0; MAX_NAME],
            label_offsets: [0; MAX_LABELS],
            labels: 0,
            qtype: 0,
            qclass: 0,
            edns: None,
            fault: None,
        }
    }
}

/// [`parse_request`] into a request made by [`Request::blank`], which the
/// answer path keeps in its own frame (the request is ~400 bytes: returning
/// it by value costs a copy per query).
pub fn parse_request_in(req: &mut Request<'_>) -> Result<(), ParseError> {
    let raw = req.raw;
    let (id, flags) = header_id_flags(raw).ok_or(ParseError::Drop)?;
    if flags & FLAG_QR != 0 {
        return Err(ParseError::Drop);
    }
    let qdcount = rd16(raw, 4).unwrap_or(0);
    let ancount = rd16(raw, 6).unwrap_or(0);
    let nscount = rd16(raw, 8).unwrap_or(0);
    let arcount = rd16(raw, 10).unwrap_or(0);
    let opcode = (flags >> 11) & 0x0f;
    // Other opcodes are still parsed (to echo the question and OPT in the
    // NOTIMP reply) when they look like a query; otherwise header only.
    let fail = if opcode != 0 {
        ParseError::NotImp
    } else {
        ParseError::FormErr
    };
    req.id = id;
    req.flags = flags;
    let question = match (qdcount, opcode) {
        (1, _) => true,
        (0, 0) => false,
        _ => return Err(fail),
    };
    parse_body(req, question, ancount, nscount, arcount).map_err(|_| fail)?;
    if opcode != 0 {
        req.fault = None;
    } else if !question {
        req.fault = Some(req.fault.unwrap_or(Fault::NoQuestion));
    }
    Ok(())
}

fn parse_body(
    req: &mut Request<'_>,
    question: bool,
    ancount: u16,
    nscount: u16,
    arcount: u16,
) -> Result<(), ParseError> {
    let mut at = 12usize;
    if question {
        at = parse_question(req)?;
    }
    req.question_end = at;
    parse_records(req, at, ancount, nscount, arcount)
}

/// The question (its name: uncompressed labels only, there is nothing to
/// point at yet); returns where it ends.
fn parse_question(req: &mut Request<'_>) -> Result<usize, ParseError> {
    let raw = req.raw;
    let mut at = 12usize;
    loop {
        let len = *raw.get(at).ok_or(ParseError::FormErr)? as usize;
        if len & 0xc0 != 0 {
            return Err(ParseError::FormErr);
        }
        if req.labels >= MAX_LABELS || req.qname_len + 1 + len > MAX_NAME {
            return Err(ParseError::FormErr);
        }
        let label = raw.get(at + 1..at + 1 + len).ok_or(ParseError::FormErr)?;
        req.label_offsets[req.labels] = req.qname_len as u8;
        req.labels += 1;
        req.qname[req.qname_len] = len as u8;
        for (i, b) in label.iter().enumerate() {
            req.qname[req.qname_len + 1 + i] = b.to_ascii_lowercase();
        }
        req.qname_len += 1 + len;
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    req.qtype = rd16(raw, at).ok_or(ParseError::FormErr)?;
    req.qclass = rd16(raw, at + 2).ok_or(ParseError::FormErr)?;
    Ok(at + 4)
}

/// The answer, authority and additional sections, from `at`.
fn parse_records(
    req: &mut Request<'_>,
    mut at: usize,
    ancount: u16,
    nscount: u16,
    arcount: u16,
) -> Result<(), ParseError> {
    let raw = req.raw;
    // Answer and authority sections are not expected in a query; skip them.
    for _ in 0..(ancount as usize + nscount as usize) {
        at = skip_rr(raw, at)?;
    }
    for i in 0..arcount {
        let name_start = at;
        let after_name = skip_name(raw, at)?;
        let rtype = rd16(raw, after_name).ok_or(ParseError::FormErr)?;
        let rdlen = rd16(raw, after_name + 8).ok_or(ParseError::FormErr)? as usize;
        let rdata = after_name + 10;
        let end = rdata + rdlen;
        if end > raw.len() {
            return Err(ParseError::FormErr);
        }
        if rtype == TYPE_OPT {
            // RFC 6891 §6.1.1: one OPT only, owned by the root.
            if req.edns.is_some() || raw[name_start] != 0 || after_name != name_start + 1 {
                return Err(ParseError::FormErr);
            }
            let payload = rd16(raw, after_name + 2).ok_or(ParseError::FormErr)?;
            let version = raw[after_name + 5];
            let eflags = rd16(raw, after_name + 6).ok_or(ParseError::FormErr)?;
            let mut e = Edns {
                payload,
                version,
                dnssec_ok: eflags & EDNS_DO != 0,
                nsid: false,
                ecs: None,
                cookie: None,
            };
            let mut o = rdata;
            while o < end {
                let code = rd16(raw, o).ok_or(ParseError::FormErr)?;
                let olen = rd16(raw, o + 2).ok_or(ParseError::FormErr)? as usize;
                let data = o + 4;
                if data + olen > end {
                    return Err(ParseError::FormErr);
                }
                match code {
                    OPT_NSID => e.nsid = true,
                    OPT_COOKIE if e.cookie.is_none() => e.cookie = Some((data, data + olen)),
                    OPT_ECS => {
                        // RFC 7871 §7.1.1: more than one is a FORMERR,
                        // answered with the OPT (the record itself parsed).
                        if e.ecs.is_some() {
                            req.fault = Some(Fault::FormErr);
                        }
                        e.ecs = Some((data, data + olen));
                    }
                    _ => {}
                }
                o = data + olen;
            }
            req.edns = Some(e);
        } else if rtype == TYPE_TSIG {
            // RFC 8945 §5.1: one TSIG, the last record of the message.
            req.fault = Some(if i + 1 == arcount && req.fault.is_none() {
                Fault::Tsig {
                    start: name_start,
                    end,
                }
            } else {
                Fault::FormErr
            });
        }
        at = end;
    }
    // Bytes after the last section: the counts do not describe the message.
    if at != raw.len() {
        req.fault = Some(Fault::FormErr);
    }
    Ok(())
}

fn skip_rr(raw: &[u8], at: usize) -> Result<usize, ParseError> {
    let n = skip_name(raw, at)?;
    let rdlen = rd16(raw, n + 8).ok_or(ParseError::FormErr)? as usize;
    let end = n + 10 + rdlen;
    if end > raw.len() {
        return Err(ParseError::FormErr);
    }
    Ok(end)
}

/// Copies the (possibly compressed) name at `at` of `raw` into `out`
/// uncompressed; returns its length and the offset after it in `raw`.
fn expand_name(raw: &[u8], mut at: usize, out: &mut [u8; MAX_NAME]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    let mut next = None;
    // Each pointer must go backwards, so this ends; the bound is a guard.
    for _ in 0..MAX_NAME {
        let l = *raw.get(at)? as usize;
        match l & 0xc0 {
            0x00 => {
                let label = raw.get(at..at + 1 + l)?;
                out.get_mut(len..len + 1 + l)?.copy_from_slice(label);
                len += 1 + l;
                at += 1 + l;
                if l == 0 {
                    return Some((len, next.unwrap_or(at)));
                }
            }
            0xc0 => {
                let target = (rd16(raw, at)? & 0x3fff) as usize;
                if target >= at {
                    return None;
                }
                next.get_or_insert(at + 2);
                at = target;
            }
            _ => return None,
        }
    }
    None
}

/// Offsets of each label of an uncompressed wire name; returns the count.
pub fn label_offsets(name: &[u8], out: &mut [u8; MAX_LABELS]) -> usize {
    let mut n = 0;
    let mut at = 0usize;
    while at < name.len() && n < MAX_LABELS {
        out[n] = at as u8;
        n += 1;
        let len = name[at] as usize;
        if len == 0 {
            break;
        }
        at += 1 + len;
    }
    n
}

/// A SOA record of a zone, pre-encoded for answers to questions inside the
/// zone: the owner is the apex, and each RDATA name that ends in the apex
/// is its own labels plus a pointer slot, filled per message with where the
/// apex sits in the question. Every negative answer carries one, so this
/// saves the generic compression's name walks on that path.
#[derive(Debug, Clone)]
pub struct ApexSoa {
    /// Lower-cased wire-format apex.
    apex: Box<[u8]>,
    /// TYPE, CLASS, TTL, RDLENGTH and RDATA, with pointer slots.
    bytes: Box<[u8]>,
    slots: [usize; 2],
    nslots: usize,
}

impl ApexSoa {
    /// From a SOA record encoded as TYPE..RDATA with uncompressed names;
    /// `None` when it is not shaped as one.
    pub fn new(apex: &[u8], fixed: &[u8]) -> Option<ApexSoa> {
        let rdata = fixed.get(10..)?;
        let layout = rdata_names(TYPE_SOA, rdata)?;
        let mut out = fixed.get(..10)?.to_vec();
        let mut slots = [0usize; 2];
        let mut nslots = 0;
        let mut from = 0;
        for &end in &layout.ends {
            let name = &rdata[from..end];
            let mut offs = [0u8; MAX_LABELS];
            let labels = label_offsets(name, &mut offs);
            let cut = offs[..labels]
                .iter()
                .map(|&o| o as usize)
                .find(|&o| o + 1 < name.len() && name[o..].eq_ignore_ascii_case(apex));
            match cut {
                Some(o) => {
                    out.extend_from_slice(&name[..o]);
                    slots[nslots] = out.len();
                    out.extend_from_slice(&[0, 0]);
                    nslots += 1;
                }
                None => out.extend_from_slice(name),
            }
            from = end;
        }
        out.extend_from_slice(&rdata[from..]);
        let rdlen = u16::try_from(out.len() - 10).ok()?;
        out[8..10].copy_from_slice(&rdlen.to_be_bytes());
        Some(ApexSoa {
            apex: apex.to_ascii_lowercase().into_boxed_slice(),
            bytes: out.into_boxed_slice(),
            slots,
            nslots,
        })
    }
}

/// The header flags of a reply to a query with flags `qflags`: QR set and
/// the opcode echoed (RFC 1035 §4.1.1). RD and CD are copied only for
/// QUERY: they are defined for that opcode alone (RFC 1035 §4.1.1, RFC 4035
/// §3.1.6, RFC 6895 §2), so a reply to any other opcode — NOTIFY, UPDATE or
/// one we do not know, answered NOTIMP — clears them, as Knot and NSD do
/// (RFC 8906 §8.1.4). AA, TC, RA, Z and AD always start cleared.
#[inline]
pub fn reply_flags(qflags: u16) -> u16 {
    let echoed = if qflags & OPCODE_MASK == 0 {
        OPCODE_MASK | FLAG_RD | FLAG_CD
    } else {
        OPCODE_MASK
    };
    FLAG_QR | (qflags & echoed)
}

/// Where a response is being written, and how much room it may take.
pub struct Writer<'b> {
    buf: &'b mut Vec<u8>,
    /// Bytes the whole message may take (UDP payload limit or 65535).
    limit: usize,
    /// Bytes kept free at the end for the OPT record.
    reserve: usize,
    counts: [u16; 4],
    /// Question name (lower-cased) and its label offsets, for compression,
    /// borrowed from the request; empty when the question was not echoed
    /// (names can then not point at it).
    qname: &'b [u8],
    qlabels: &'b [u8],
    /// Where the RDLENGTH of the OPT record written last is (0: none).
    opt_rdlen: usize,
}

/// Sections of a message, as indexes into the header counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer = 1,
    Authority = 2,
    Additional = 3,
}

/// A position to roll back to when something does not fit.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    len: usize,
    counts: [u16; 4],
}

/// The response did not fit in the space allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

impl<'b> Writer<'b> {
    /// Starts a response to `req`: header with the query's id and opcode,
    /// RD and CD echoed when the opcode is QUERY (see [`reply_flags`]); and the question, copied as received (case preserved).
    #[inline]
    pub fn new(
        buf: &'b mut Vec<u8>,
        req: &'b Request<'_>,
        limit: usize,
        echo_question: bool,
    ) -> Self {
        buf.clear();
        let flags = reply_flags(req.flags);
        buf.extend_from_slice(&req.id.to_be_bytes());
        buf.extend_from_slice(&flags.to_be_bytes());
        buf.extend_from_slice(&[0; 8]);
        let mut w = Writer {
            buf,
            limit: limit.clamp(12, 65535),
            reserve: 0,
            counts: [0; 4],
            qname: &[],
            qlabels: &[],
            opt_rdlen: 0,
        };
        if echo_question && req.question_end > 12 && req.qname_len > 0 {
            w.buf.extend_from_slice(&req.raw[12..req.question_end]);
            w.counts[0] = 1;
            w.qname = req.qname();
            w.qlabels = &req.label_offsets[..req.labels];
        }
        w
    }

    /// Starts a bare header-only response from raw header fields.
    pub fn header_only(buf: &'b mut Vec<u8>, id: u16, qflags: u16) -> Self {
        buf.clear();
        let flags = reply_flags(qflags);
        buf.extend_from_slice(&id.to_be_bytes());
        buf.extend_from_slice(&flags.to_be_bytes());
        buf.extend_from_slice(&[0; 8]);
        Writer {
            buf,
            limit: 65535,
            reserve: 0,
            counts: [0; 4],
            qname: &[],
            qlabels: &[],
            opt_rdlen: 0,
        }
    }

    pub fn set_reserve(&mut self, bytes: usize) {
        self.reserve = bytes;
    }

    pub fn set_rcode(&mut self, rcode: u16) {
        self.buf[3] = (self.buf[3] & 0xf0) | (rcode & 0x0f) as u8;
    }
    pub fn set_aa(&mut self, aa: bool) {
        if aa {
            self.buf[2] |= (FLAG_AA >> 8) as u8;
        } else {
            self.buf[2] &= !((FLAG_AA >> 8) as u8);
        }
    }
    pub fn set_tc(&mut self) {
        self.buf[2] |= (FLAG_TC >> 8) as u8;
    }
    pub fn aa(&self) -> bool {
        self.buf[2] & (FLAG_AA >> 8) as u8 != 0
    }
    pub fn tc(&self) -> bool {
        self.buf[2] & (FLAG_TC >> 8) as u8 != 0
    }

    pub fn mark(&self) -> Mark {
        Mark {
            len: self.buf.len(),
            counts: self.counts,
        }
    }
    pub fn rollback(&mut self, m: Mark) {
        self.buf.truncate(m.len);
        self.counts = m.counts;
    }
    pub fn count(&self, s: Section) -> u16 {
        self.counts[s as usize]
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.len() <= 12
    }

    fn room(&self) -> usize {
        self.limit.saturating_sub(self.reserve)
    }

    /// Whether the question was echoed, so names can point at it.
    fn has_question(&self) -> bool {
        !self.qname.is_empty()
    }

    /// Writes `name` (lower-case or original-case wire format), compressed
    /// against the question name where a suffix matches.
    fn put_name(&mut self, name: &[u8]) {
        // Most owners are the question name itself: one pointer to it (not
        // for the root, which is shorter than a pointer).
        if self.has_question()
            && name.len() > 1
            && name.len() == self.qname.len()
            && name.eq_ignore_ascii_case(self.qname)
        {
            self.buf.extend_from_slice(&(0xc000u16 | 12).to_be_bytes());
            return;
        }
        if self.has_question() {
            let mut offs = [0u8; MAX_LABELS];
            let n = label_offsets(name, &mut offs);
            // Longest suffix of `name` that is also a suffix of the qname,
            // excluding the bare root (a pointer is no shorter than it).
            for &off in offs.iter().take(n.saturating_sub(1)) {
                let off = off as usize;
                let suffix = &name[off..];
                if suffix.len() > self.qname.len() {
                    continue;
                }
                let qstart = self.qname.len() - suffix.len();
                let on_label = self.qlabels.iter().any(|&o| o as usize == qstart);
                if on_label && suffix.eq_ignore_ascii_case(&self.qname[qstart..]) {
                    self.buf.extend_from_slice(&name[..off]);
                    let ptr = 0xc000u16 | (12 + qstart) as u16;
                    self.buf.extend_from_slice(&ptr.to_be_bytes());
                    return;
                }
            }
        }
        self.buf.extend_from_slice(name);
    }

    /// Appends one resource record: owner name, then `fixed`, which holds
    /// TYPE, CLASS, TTL, RDLENGTH and RDATA already encoded (names in the
    /// RDATA uncompressed). Names inside the RDATA of the RFC 1035 types
    /// that allow it (NS, CNAME, PTR, MX, SOA; RFC 3597 §4) are compressed
    /// against the question like owner names, as every major server does;
    /// other types are copied as they are.
    #[inline]
    pub fn put_rr(&mut self, section: Section, owner: &[u8], fixed: &[u8]) -> Result<(), NoRoom> {
        let start = self.buf.len();
        self.put_name(owner);
        let rtype = match fixed {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        };
        // The types whose RDATA names may be compressed (see `rdata_names`).
        let names = matches!(rtype, TYPE_NS | TYPE_CNAME | TYPE_PTR | TYPE_MX | TYPE_SOA);
        if !(names && self.has_question() && self.put_rdata_compressed(rtype, fixed)) {
            self.buf.extend_from_slice(fixed);
        }
        if self.buf.len() > self.room() {
            self.buf.truncate(start);
            return Err(NoRoom);
        }
        self.counts[section as usize] += 1;
        Ok(())
    }

    /// Writes TYPE, CLASS, TTL, RDLENGTH and RDATA of `fixed` with the
    /// names in the RDATA compressed; false (nothing written) when the RDATA
    /// is not shaped as its type says. Kept out of line: `put_rr` stays
    /// small for the A/AAAA records most answers carry.
    #[inline(never)]
    fn put_rdata_compressed(&mut self, rtype: u16, fixed: &[u8]) -> bool {
        let (Some(head), Some(rdata)) = (fixed.get(..8), fixed.get(10..)) else {
            return false;
        };
        let Some(layout) = rdata_names(rtype, rdata) else {
            return false;
        };
        let mark = self.buf.len();
        self.buf.extend_from_slice(head);
        self.buf.extend_from_slice(&[0, 0]);
        let rd_start = self.buf.len();
        self.buf.extend_from_slice(&rdata[..layout.first]);
        let mut from = layout.first;
        for &end in &layout.ends[..layout.count] {
            self.put_name(&rdata[from..end]);
            from = end;
        }
        self.buf.extend_from_slice(&rdata[from..]);
        let Ok(rdlen) = u16::try_from(self.buf.len() - rd_start) else {
            self.buf.truncate(mark);
            return false;
        };
        self.buf[rd_start - 2..rd_start].copy_from_slice(&rdlen.to_be_bytes());
        true
    }

    /// Appends a zone's SOA: from its pre-compressed form when the question
    /// name ends in the zone's apex, else through [`put_rr`](Self::put_rr)
    /// with `owner` and `fixed`.
    #[inline]
    pub fn put_apex_soa(
        &mut self,
        section: Section,
        soa: &ApexSoa,
        owner: &[u8],
        fixed: &[u8],
    ) -> Result<(), NoRoom> {
        let Some(at) = self.question_suffix(&soa.apex) else {
            return self.put_rr(section, owner, fixed);
        };
        let start = self.buf.len();
        let ptr = (0xc000u16 | (12 + at) as u16).to_be_bytes();
        self.buf.extend_from_slice(&ptr);
        let body = self.buf.len();
        self.buf.extend_from_slice(&soa.bytes);
        for &slot in &soa.slots[..soa.nslots] {
            self.buf[body + slot..body + slot + 2].copy_from_slice(&ptr);
        }
        if self.buf.len() > self.room() {
            self.buf.truncate(start);
            return Err(NoRoom);
        }
        self.counts[section as usize] += 1;
        Ok(())
    }

    /// Where `key` (a lower-cased wire name) starts in the question name,
    /// if the question name ends in it at a label boundary.
    fn question_suffix(&self, key: &[u8]) -> Option<usize> {
        if !self.has_question() || key.len() > self.qname.len() {
            return None;
        }
        let at = self.qname.len() - key.len();
        (self.qlabels.contains(&(at as u8)) && self.qname[at..] == *key).then_some(at)
    }

    /// Appends one resource record from its parts (CLASS IN).
    pub fn put_rr_parts(
        &mut self,
        section: Section,
        owner: &[u8],
        rtype: u16,
        ttl: u32,
        rdata: &[u8],
    ) -> Result<(), NoRoom> {
        let start = self.buf.len();
        self.put_name(owner);
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        self.buf
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(rdata);
        if self.buf.len() > self.room() {
            self.buf.truncate(start);
            return Err(NoRoom);
        }
        self.counts[section as usize] += 1;
        Ok(())
    }

    /// Appends the OPT record (RFC 6891 §6.1.2): our payload size, the high
    /// bits of the RCODE, version 0, the DO bit echoed, unknown flags cleared,
    /// NSID when asked for and configured, and the client-subnet option with
    /// its scope (RFC 7871 §7.2.1). Ignores the size limit: room for it is
    /// reserved with [`set_reserve`](Self::set_reserve).
    pub fn put_opt(
        &mut self,
        payload: u16,
        rcode: u16,
        dnssec_ok: bool,
        nsid: Option<&[u8]>,
        ecs: Option<EcsEcho<'_>>,
    ) {
        self.buf.push(0);
        self.buf.extend_from_slice(&TYPE_OPT.to_be_bytes());
        self.buf.extend_from_slice(&payload.to_be_bytes());
        self.buf.push((rcode >> 4) as u8);
        self.buf.push(0);
        let flags: u16 = if dnssec_ok { EDNS_DO } else { 0 };
        self.buf.extend_from_slice(&flags.to_be_bytes());
        let rdlen =
            nsid.map_or(0, |id| 4 + id.len()) + ecs.as_ref().map_or(0, |e| 8 + e.addr.len());
        self.opt_rdlen = self.buf.len();
        self.buf.extend_from_slice(&(rdlen as u16).to_be_bytes());
        if let Some(id) = nsid {
            self.buf.extend_from_slice(&OPT_NSID.to_be_bytes());
            self.buf.extend_from_slice(&(id.len() as u16).to_be_bytes());
            self.buf.extend_from_slice(id);
        }
        if let Some(e) = ecs {
            self.buf.extend_from_slice(&OPT_ECS.to_be_bytes());
            self.buf
                .extend_from_slice(&((4 + e.addr.len()) as u16).to_be_bytes());
            self.buf.extend_from_slice(&e.family.to_be_bytes());
            self.buf.push(e.source_prefix);
            self.buf.push(e.scope);
            self.buf.extend_from_slice(e.addr);
        }
        self.counts[3] += 1;
    }

    /// Appends an option to the OPT record just written by [`put_opt`]
    /// (it must be the last record of the message).
    ///
    /// [`put_opt`]: Writer::put_opt
    pub fn put_option(&mut self, code: u16, data: &[u8]) {
        let at = self.opt_rdlen;
        if at == 0 || at + 2 > self.buf.len() {
            return;
        }
        let len = u16::from_be_bytes([self.buf[at], self.buf[at + 1]]) as usize + 4 + data.len();
        self.buf[at..at + 2].copy_from_slice(&(len as u16).to_be_bytes());
        self.buf.extend_from_slice(&code.to_be_bytes());
        self.buf
            .extend_from_slice(&(data.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(data);
    }

    /// Appends the unsigned error TSIG of RFC 8945 §5.3.2 in reply to the
    /// query's TSIG record at `start..end` of `raw`: the query's key name,
    /// algorithm, time signed and fudge, an empty MAC, the message ID as
    /// original ID (the reply's own, as Knot writes it), `error` and no
    /// other data. `Ok(false)`, with nothing written, when the query's
    /// record cannot be interpreted (RFC 8945 §5.2: the message is then a
    /// FORMERR); `Err(NoRoom)`, with nothing written, when the record would
    /// take the message past its size limit (its key and algorithm names
    /// are written uncompressed, up to 255 bytes each).
    pub fn put_tsig_error(
        &mut self,
        raw: &[u8],
        start: usize,
        end: usize,
        error: u16,
    ) -> Result<bool, NoRoom> {
        let mut key = [0u8; MAX_NAME];
        let mut alg = [0u8; MAX_NAME];
        let Some((key_len, fixed)) = expand_name(raw, start, &mut key) else {
            return Ok(false);
        };
        let rdata = fixed + 10;
        let Some((alg_len, at)) = expand_name(raw, rdata, &mut alg) else {
            return Ok(false);
        };
        // Time signed (48 bits), fudge, MAC size, MAC, original ID, error,
        // other length, other data.
        let Some(mac_len) = rd16(raw, at + 8) else {
            return Ok(false);
        };
        let after_mac = at + 10 + mac_len as usize;
        let Some(other_len) = rd16(raw, after_mac + 4) else {
            return Ok(false);
        };
        if after_mac + 6 + other_len as usize != end || rd16(raw, fixed) != Some(TYPE_TSIG) {
            return Ok(false);
        }
        let (Some(time_fudge), Some(id)) = (raw.get(at..at + 8), raw.get(..2)) else {
            return Ok(false);
        };
        // Names uncompressed (up to 255 bytes each): the record may not fit.
        if self.buf.len() + key_len + 10 + alg_len + 16 > self.limit {
            return Err(NoRoom);
        }
        self.buf.extend_from_slice(&key[..key_len]);
        self.buf.extend_from_slice(&TYPE_TSIG.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_ANY.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        let rdlen = alg_len + 8 + 2 + 2 + 2 + 2;
        self.buf.extend_from_slice(&(rdlen as u16).to_be_bytes());
        self.buf.extend_from_slice(&alg[..alg_len]);
        self.buf.extend_from_slice(time_fudge);
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(id);
        self.buf.extend_from_slice(&error.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0]);
        self.counts[3] += 1;
        Ok(true)
    }

    /// Writes the section counts into the header and returns the message.
    pub fn finish(self) -> &'b [u8] {
        for (i, c) in self.counts.iter().enumerate() {
            let at = 4 + i * 2;
            self.buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        self.buf.as_slice()
    }
}

/// The client-subnet option echoed in a reply: the query's family, source
/// prefix and address, with our scope.
#[derive(Debug, Clone, Copy)]
pub struct EcsEcho<'a> {
    pub family: u16,
    pub source_prefix: u8,
    pub scope: u8,
    pub addr: &'a [u8],
}

/// Size of the OPT record [`Writer::put_opt`] writes.
pub fn opt_len(nsid: Option<&[u8]>, ecs_addr_len: Option<usize>) -> usize {
    11 + nsid.map_or(0, |id| 4 + id.len()) + ecs_addr_len.map_or(0, |n| 8 + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16, extra: &[u8], arcount: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0];
        q.extend_from_slice(&arcount.to_be_bytes());
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q.extend_from_slice(extra);
        q
    }

    #[test]
    fn parses_and_lowercases_question() {
        let raw = query(b"\x03WwW\x07example\x03com\x00", TYPE_A, &[], 0);
        let r = parse_request(&raw).expect("parses");
        assert_eq!(r.qname(), b"\x03www\x07example\x03com\x00");
        assert_eq!(r.labels, 4);
        assert_eq!(r.suffix(1), b"\x00");
        assert_eq!(r.suffix(3), b"\x07example\x03com\x00");
        assert_eq!(r.qtype, TYPE_A);
        assert!(r.rd());
        assert!(r.edns.is_none());
    }

    #[test]
    fn short_and_response_packets_are_dropped() {
        assert_eq!(parse_request(&[0; 11]).err(), Some(ParseError::Drop));
        let mut raw = query(b"\x00", TYPE_A, &[], 0);
        raw[2] |= 0x80;
        assert_eq!(parse_request(&raw).err(), Some(ParseError::Drop));
    }

    #[test]
    fn malformed_questions_are_formerr() {
        // Truncated name, pointer in question, label too long, two questions.
        for raw in [
            query(b"\x05ab", TYPE_A, &[], 0)[..15].to_vec(),
            query(b"\xc0\x0c", TYPE_A, &[], 0),
            query(b"\x50abc\x00", TYPE_A, &[], 0),
        ] {
            assert_eq!(parse_request(&raw).err(), Some(ParseError::FormErr));
        }
        let mut two = query(b"\x00", TYPE_A, &[], 0);
        two[5] = 2;
        assert_eq!(parse_request(&two).err(), Some(ParseError::FormErr));
    }

    #[test]
    fn opt_record_fields_and_options() {
        // OPT: payload 4096, version 0, DO, options NSID (empty) and 100 (2 bytes).
        let opt = [
            0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 10, 0, 3, 0, 0, 0, 100, 0, 2, 1, 2,
        ];
        let raw = query(b"\x00", TYPE_A, &opt, 1);
        let e = parse_request(&raw).expect("parses").edns.expect("edns");
        assert_eq!(e.payload, 4096);
        assert!(e.dnssec_ok && e.nsid);
        assert!(e.ecs.is_none());
        // Option length overruns the OPT rdata.
        let bad = [0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 4, 0, 100, 0, 9];
        let raw = query(b"\x00", TYPE_A, &bad, 1);
        assert_eq!(parse_request(&raw).err(), Some(ParseError::FormErr));
        // Two OPT records.
        let mut two = opt.to_vec();
        two.extend_from_slice(&opt);
        let raw = query(b"\x00", TYPE_A, &two, 2);
        assert_eq!(parse_request(&raw).err(), Some(ParseError::FormErr));
    }

    #[test]
    fn rfc6895_2_rd_and_cd_are_echoed_for_query_only() {
        let all = 0x07f0u16; // AA TC RD RA Z AD CD
        assert_eq!(reply_flags(all), FLAG_QR | FLAG_RD | FLAG_CD);
        for op in [1u16, 2, 4, 5, 15] {
            assert_eq!(reply_flags((op << 11) | all), FLAG_QR | (op << 11));
        }
    }

    #[test]
    fn parsed_queries_that_are_not_answered_carry_their_fault() {
        let ecs = [0, 8, 0, 4, 0, 1, 0, 0];
        let opt = |opts: &[u8]| {
            let mut o = vec![0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, opts.len() as u8];
            o.extend_from_slice(opts);
            o
        };
        let raw = query(b"\x00", TYPE_A, &opt(&ecs), 1);
        assert_eq!(parse_request(&raw).expect("parses").fault, None);
        let raw = query(b"\x00", TYPE_A, &opt(&[ecs, ecs].concat()), 1);
        let r = parse_request(&raw).expect("parses");
        assert_eq!(r.fault, Some(Fault::FormErr));
        assert!(r.edns.is_some(), "the OPT is kept for the reply");
        let mut raw = query(b"\x00", TYPE_A, &[], 0);
        raw.push(0);
        assert_eq!(
            parse_request(&raw).expect("parses").fault,
            Some(Fault::FormErr)
        );
        // TSIG: last, then not last.
        let tsig = b"\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x00";
        let raw = query(b"\x00", TYPE_A, &[&opt(&[])[..], tsig].concat(), 2);
        let start = raw.len() - tsig.len();
        let end = raw.len();
        assert_eq!(
            parse_request(&raw).expect("parses").fault,
            Some(Fault::Tsig { start, end })
        );
        let raw = query(b"\x00", TYPE_A, &[&tsig[..], &opt(&[])].concat(), 2);
        assert_eq!(
            parse_request(&raw).expect("parses").fault,
            Some(Fault::FormErr)
        );
        // Other opcodes are NOTIMP whatever their body.
        let mut raw = query(b"\x00", TYPE_A, &[], 0);
        raw[2] |= 15 << 3;
        raw.push(0);
        assert_eq!(parse_request(&raw).expect("parses").fault, None);
    }

    #[test]
    fn compressed_names_expand() {
        let raw = b"\x03www\x00\x01a\xc0\x00\xc0\x05\xc0\x0b\xc0\x0f";
        let mut out = [0u8; MAX_NAME];
        assert_eq!(expand_name(raw, 5, &mut out), Some((7, 9)));
        assert_eq!(&out[..7], b"\x01a\x03www\x00");
        assert_eq!(expand_name(raw, 9, &mut out), Some((7, 11)));
        // A pointer to itself or forwards.
        assert_eq!(expand_name(raw, 11, &mut out), None);
        assert_eq!(expand_name(raw, 13, &mut out), None);
    }

    #[test]
    fn owner_names_compress_against_question() {
        let raw = query(b"\x03www\x07example\x03com\x00", TYPE_A, &[], 0);
        let r = parse_request(&raw).expect("parses");
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, &r, 512, true);
        let fixed = rr(TYPE_A, &[192, 0, 2, 1]);
        // The question name itself, in another case: one pointer to it.
        w.put_rr(Section::Answer, b"\x03WWW\x07Example\x03COM\x00", &fixed)
            .expect("fits");
        w.put_rr(Section::Answer, b"\x03ftp\x07example\x03com\x00", &fixed)
            .expect("fits");
        w.put_rr(Section::Answer, b"\x03org\x00", &fixed)
            .expect("fits");
        let out = w.finish().to_vec();
        let q_end = 12 + 17 + 4;
        assert_eq!(&out[q_end..q_end + 2], &[0xc0, 12]);
        let second = q_end + 2 + fixed.len();
        assert_eq!(&out[second..second + 6], b"\x03ftp\xc0\x10");
        let third = second + 6 + fixed.len();
        assert_eq!(&out[third..third + 5], b"\x03org\x00");
        assert_eq!(&out[6..8], &[0, 3]);
    }

    #[test]
    fn root_owner_of_a_root_question_stays_one_byte() {
        let raw = query(b"\x00", TYPE_A, &[], 0);
        let r = parse_request(&raw).expect("parses");
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, &r, 512, true);
        let fixed = rr(TYPE_A, &[192, 0, 2, 1]);
        w.put_rr(Section::Answer, b"\x00", &fixed).expect("fits");
        let out = w.finish().to_vec();
        assert_eq!(out.len(), 12 + 1 + 4 + 1 + fixed.len());
        assert_eq!(out[12 + 1 + 4], 0);
    }

    /// TYPE, CLASS IN, TTL 60, RDLENGTH and `rdata`.
    fn rr(rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut f = rtype.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        f.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        f.extend_from_slice(rdata);
        f
    }

    /// SOA RDATA: the two names, then serial 7 and four more counters.
    fn soa_rdata(mname: &[u8], rname: &[u8]) -> Vec<u8> {
        let mut d = [mname, rname].concat();
        d.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
        d
    }

    #[test]
    fn rdata_names_compress_and_odd_rdata_is_copied_as_is() {
        let raw = query(b"\x07example\x03com\x00", TYPE_SOA, &[], 0);
        let r = parse_request(&raw).expect("parses");
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, &r, 512, true);
        let soa = rr(
            TYPE_SOA,
            &soa_rdata(
                b"\x03ns1\x07example\x03com\x00",
                b"\x02hm\x07EXAMPLE\x03com\x00",
            ),
        );
        w.put_rr(Section::Answer, b"\x07example\x03com\x00", &soa)
            .expect("fits");
        let q_end = 12 + 13 + 4;
        let mut want = vec![0xc0, 12, 0, 6, 0, 1, 0, 0, 0, 60, 0, 31];
        want.extend_from_slice(b"\x03ns1\xc0\x0c\x02hm\xc0\x0c");
        want.extend_from_slice(&soa[soa.len() - 20..]);
        // An MX whose RDATA is one byte short, and an SRV: copied verbatim.
        let bad_mx = rr(TYPE_MX, b"\x00\x04mail\x07example\x03com\x00");
        w.put_rr(Section::Answer, b"\x07example\x03com\x00", &bad_mx)
            .expect("fits");
        let srv = rr(
            TYPE_SRV,
            b"\x00\x01\x00\x01\x00\x35\x04mail\x07example\x03com\x00",
        );
        w.put_rr(Section::Answer, b"\x07example\x03com\x00", &srv)
            .expect("fits");
        let out = w.finish().to_vec();
        assert_eq!(&out[q_end..q_end + want.len()], &want[..]);
        let mx_at = q_end + want.len();
        assert_eq!(&out[mx_at..mx_at + 2], &[0xc0, 12]);
        assert_eq!(&out[mx_at + 2..mx_at + 2 + bad_mx.len()], &bad_mx[..]);
        let srv_at = mx_at + 2 + bad_mx.len();
        assert_eq!(&out[srv_at + 2..srv_at + 2 + srv.len()], &srv[..]);
        assert_eq!(out.len(), srv_at + 2 + srv.len());
    }

    #[test]
    fn precompressed_soa_decodes_like_the_generic_path() {
        use hickory_proto::op::Message;
        let soa = |mname: &[u8], rname: &[u8]| rr(TYPE_SOA, &soa_rdata(mname, rname));
        let apex = b"\x07example\x03com\x00";
        let owner = b"\x07Example\x03com\x00";
        for fixed in [
            soa(
                b"\x03ns1\x07example\x03com\x00",
                b"\x02hm\x07EXAMPLE\x03com\x00",
            ),
            soa(
                b"\x02ns\x05other\x03net\x00",
                b"\x02hm\x07example\x03com\x00",
            ),
            soa(b"\x07example\x03com\x00", b"\x02hm\x05other\x03net\x00"),
        ] {
            let c = ApexSoa::new(apex, &fixed).expect("a SOA");
            for q in [
                &b"\x04NoPe\x07example\x03com\x00"[..],
                b"\x07example\x03com\x00",
                b"\x03www\x0aexample-no\x03com\x00",
            ] {
                let raw = query(q, TYPE_A, &[], 0);
                let r = parse_request(&raw).expect("parses");
                let (mut b1, mut b2) = (Vec::new(), Vec::new());
                let mut w = Writer::new(&mut b1, &r, 512, true);
                w.put_apex_soa(Section::Authority, &c, owner, &fixed)
                    .expect("fits");
                let fast = w.finish().to_vec();
                let mut w = Writer::new(&mut b2, &r, 512, true);
                w.put_rr(Section::Authority, owner, &fixed).expect("fits");
                let generic = w.finish().to_vec();
                let (a, b) = (
                    Message::from_vec(&fast).expect("decodes"),
                    Message::from_vec(&generic).expect("decodes"),
                );
                assert_eq!(a.authorities, b.authorities, "{q:?}");
                assert!(fast.len() <= generic.len(), "{q:?}");
            }
        }
        // Not a SOA: no precompressed form.
        assert!(ApexSoa::new(apex, &rr(TYPE_A, &[1, 2, 3, 4])).is_none());
    }

    #[test]
    fn records_that_do_not_fit_are_refused() {
        let raw = query(b"\x00", TYPE_A, &[], 0);
        let r = parse_request(&raw).expect("parses");
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, &r, 40, true);
        let fixed = [0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        assert!(w.put_rr(Section::Answer, b"\x00", &fixed).is_ok());
        assert_eq!(w.put_rr(Section::Answer, b"\x00", &fixed), Err(NoRoom));
        assert_eq!(w.count(Section::Answer), 1);
    }
}
