//! RFC 1035 master files: reading (with `$ORIGIN`, `$TTL`, `$INCLUDE`,
//! parentheses, quotes and comments, every record tagged with its file and
//! line) and load-time validation of the zone as a whole.
//!
//! The line structure is read here so that every error can name its line;
//! the RDATA of each record is parsed by hickory-proto's zone parser, and the
//! RFC 3597 generic form (`\# len hex`) by its wire decoder, so every type
//! hickory knows is accepted in either form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, Restrict};
use hickory_proto::serialize::txt::{parse_ttl, Parser};

use crate::diag::Diagnostic;

/// How deep `$INCLUDE` may nest.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Where a record came from.
#[derive(Debug, Clone)]
pub struct Loc {
    pub file: Arc<Path>,
    pub line: usize,
}

impl Loc {
    pub fn error(&self, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::error(&self.file, self.line, 0, msg)
    }
    pub fn warning(&self, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::warning(&self.file, self.line, 0, msg)
    }
}

/// One record as read from a master file.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub name: Name,
    pub ttl: u32,
    pub rdata: RData,
    pub loc: Loc,
}

/// An RRset of a validated zone.
#[derive(Debug, Clone)]
pub struct RRsetData {
    /// Owner name as first written in the file (case kept).
    pub name: Name,
    pub rtype: RecordType,
    pub ttl: u32,
    pub rdatas: Vec<RData>,
    pub loc: Loc,
}

/// A zone read from its master file(s) and validated.
#[derive(Debug, Clone)]
pub struct ZoneData {
    pub origin: Name,
    pub file: PathBuf,
    /// RRsets keyed by (lower-cased owner, type), in canonical name order.
    pub rrsets: BTreeMap<(LowerName, RecordType), RRsetData>,
}

impl ZoneData {
    pub fn soa(&self) -> Option<&RRsetData> {
        self.rrsets
            .get(&(LowerName::new(&self.origin), RecordType::SOA))
    }
    pub fn record_count(&self) -> usize {
        self.rrsets.values().map(|s| s.rdatas.len()).sum()
    }
    pub fn serial(&self) -> Option<u32> {
        match self.soa()?.rdatas.first()? {
            RData::SOA(soa) => Some(soa.serial),
            _ => None,
        }
    }
}

mod svcb;
mod text;

pub use svcb::SvcbError;

/// A lexical token.
#[derive(Debug, Clone)]
struct Tok {
    text: String,
    quoted: bool,
    /// A quoted string that began right after an unquoted token, with no
    /// space between (`alpn="h2,h3"`: `alpn=` then `h2,h3`).
    glued: bool,
}

/// A logical entry: one record or directive, possibly spanning lines.
#[derive(Debug)]
struct Entry {
    line: usize,
    blank_start: bool,
    toks: Vec<Tok>,
}

fn lex(text: &str, file: &Path, diags: &mut Vec<Diagnostic>) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut cur = Entry {
        line: 1,
        blank_start: false,
        toks: Vec::new(),
    };
    let mut tok: Option<Tok> = None;
    let mut depth = 0usize;
    let mut paren_line = 0usize;
    let mut line = 1usize;
    let mut line_start = true;
    let mut chars = text.chars().peekable();

    fn end_tok(tok: &mut Option<Tok>, cur: &mut Entry) {
        if let Some(t) = tok.take() {
            cur.toks.push(t);
        }
    }

    while let Some(c) = chars.next() {
        if line_start {
            line_start = false;
            if depth == 0 {
                cur.line = line;
                cur.blank_start = c == ' ' || c == '\t';
            }
        }
        match c {
            '\n' => {
                end_tok(&mut tok, &mut cur);
                line += 1;
                line_start = true;
                if depth == 0 && !cur.toks.is_empty() {
                    entries.push(std::mem::replace(
                        &mut cur,
                        Entry {
                            line,
                            blank_start: false,
                            toks: Vec::new(),
                        },
                    ));
                }
            }
            ' ' | '\t' | '\r' => end_tok(&mut tok, &mut cur),
            ';' => {
                end_tok(&mut tok, &mut cur);
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '(' => {
                end_tok(&mut tok, &mut cur);
                if depth == 0 {
                    paren_line = line;
                }
                depth += 1;
            }
            ')' => {
                end_tok(&mut tok, &mut cur);
                if depth == 0 {
                    diags.push(Diagnostic::error(file, line, 0, "unbalanced ')'"));
                } else {
                    depth -= 1;
                }
            }
            '"' => {
                let glued = tok.is_some();
                end_tok(&mut tok, &mut cur);
                let start_line = line;
                let mut s = String::new();
                let mut closed = false;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            s.push('\\');
                            if let Some(n) = chars.next() {
                                if n == '\n' {
                                    line += 1;
                                }
                                s.push(n);
                            }
                        }
                        '\n' => {
                            line += 1;
                            s.push('\n');
                        }
                        _ => s.push(q),
                    }
                }
                if !closed {
                    diags.push(Diagnostic::error(
                        file,
                        start_line,
                        0,
                        "unterminated quoted string",
                    ));
                }
                cur.toks.push(Tok {
                    text: s,
                    quoted: true,
                    glued,
                });
            }
            '\\' => {
                let t = tok.get_or_insert_with(|| Tok {
                    text: String::new(),
                    quoted: false,
                    glued: false,
                });
                t.text.push('\\');
                if let Some(n) = chars.next() {
                    t.text.push(n);
                }
            }
            _ => {
                tok.get_or_insert_with(|| Tok {
                    text: String::new(),
                    quoted: false,
                    glued: false,
                })
                .text
                .push(c);
            }
        }
    }
    end_tok(&mut tok, &mut cur);
    if depth > 0 {
        diags.push(Diagnostic::error(
            file,
            paren_line,
            0,
            "'(' is never closed",
        ));
    }
    if !cur.toks.is_empty() {
        entries.push(cur);
    }
    entries
}

fn is_class(s: &str) -> bool {
    let u = s.to_ascii_uppercase();
    matches!(u.as_str(), "IN" | "CH" | "CS" | "HS" | "NONE" | "ANY")
        || u.strip_prefix("CLASS")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_type(s: &str) -> Option<RecordType> {
    let u = s.to_ascii_uppercase();
    if let Some(n) = u.strip_prefix("TYPE") {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            return n.parse::<u16>().ok().map(RecordType::from);
        }
    }
    u.parse::<RecordType>().ok()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses RDATA tokens of type `rtype`, relative names against `origin`.
fn parse_rdata(rtype: RecordType, toks: &[Tok], origin: &Name) -> Result<RData, String> {
    if toks.first().is_some_and(|t| !t.quoted && t.text == "\\#") {
        // RFC 3597 §5: \# <length> <hex>...
        let len: u16 = toks
            .get(1)
            .and_then(|t| t.text.parse().ok())
            .ok_or("generic RDATA: '\\#' must be followed by a length")?;
        let hex: String = toks[2..].iter().map(|t| t.text.as_str()).collect();
        let bytes = hex_decode(&hex).ok_or("generic RDATA: invalid hex")?;
        if bytes.len() != len as usize {
            return Err(format!(
                "generic RDATA: length {len} but {} bytes of data",
                bytes.len()
            ));
        }
        if matches!(rtype, RecordType::SVCB | RecordType::HTTPS) {
            svcb::check_wire(&bytes).map_err(|e| format!("invalid {rtype} data: {e}"))?;
            return Ok(opaque(rtype, bytes));
        }
        let mut dec = BinDecoder::new(&bytes);
        let rdata = RData::read(&mut dec, rtype, Restrict::new(len))
            .map_err(|e| format!("generic RDATA does not decode as {rtype}: {e}"))?;
        return Ok(rdata);
    }
    if let RecordType::Unknown(code) = rtype {
        return Err(format!(
            "TYPE{code} must use the generic RDATA form (\\# length hex)"
        ));
    }
    if toks.is_empty() && !matches!(rtype, RecordType::TXT) {
        return Err(format!("{rtype} record has no data"));
    }
    if matches!(rtype, RecordType::SVCB | RecordType::HTTPS) {
        let bytes = svcb::parse(toks, origin).map_err(|e| format!("invalid {rtype} data: {e}"))?;
        return Ok(opaque(rtype, bytes));
    }
    if let Some(rdata) = text::parse(rtype, toks, origin) {
        return rdata.map_err(|e| format!("invalid {rtype} data: {e}"));
    }
    let origin_text = origin.to_string();
    let mut text = format!("@ 0 IN {rtype}");
    for t in toks {
        text.push(' ');
        if t.quoted {
            text.push('"');
            text.push_str(&t.text);
            text.push('"');
        } else if t.text == "@" {
            text.push_str(&origin_text);
        } else {
            text.push_str(&t.text);
        }
    }
    text.push('\n');
    let (_, sets) = Parser::new(text, None, Some(origin.clone()))
        .parse()
        .map_err(|e| format!("invalid {rtype} data: {e}"))?;
    let rdata = sets
        .into_values()
        .next()
        .and_then(|set| set.records_without_rrsigs().next().map(|r| r.data.clone()))
        .ok_or_else(|| format!("invalid {rtype} data"))?;
    Ok(rdata)
}

/// RDATA kept as its wire bytes and served as they are (SVCB, HTTPS and
/// CAA: see [`svcb`] and [`text`]).
fn opaque(rtype: RecordType, bytes: Vec<u8>) -> RData {
    RData::Unknown {
        code: rtype,
        rdata: NULL::with(bytes),
    }
}

struct ReadState {
    origin: Name,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Name>,
}

impl ReadState {
    fn new(origin: &Name) -> ReadState {
        ReadState {
            origin: origin.clone(),
            default_ttl: None,
            last_ttl: None,
            last_owner: None,
        }
    }
}

/// Reads a master file (following `$INCLUDE`s) into records. Problems are
/// pushed to `diags`; records that could be read are returned regardless.
pub fn read_zone_file(
    origin: &Name,
    path: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Vec<SourceRecord> {
    let mut out = Vec::new();
    let mut st = ReadState::new(origin);
    let mut stack = Vec::new();
    read_file(path, &mut st, &mut stack, &mut out, diags, None);
    out
}

/// Reads master-file text as if it were the file at `path` (relative
/// `$INCLUDE`s resolve beside it): what [`read_zone_file`] does once it has
/// the file's text. Problems are pushed to `diags`, each with its line.
pub fn read_zone_text(
    origin: &Name,
    path: &Path,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<SourceRecord> {
    let mut out = Vec::new();
    let mut st = ReadState::new(origin);
    read_text(path, text, &mut st, &mut Vec::new(), &mut out, diags);
    out
}

fn read_file(
    path: &Path,
    st: &mut ReadState,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<SourceRecord>,
    diags: &mut Vec<Diagnostic>,
    from: Option<&Loc>,
) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("cannot read zone file {}: {e}", path.display());
            diags.push(match from {
                Some(loc) => loc.error(msg),
                None => Diagnostic::error(path, 0, 0, msg),
            });
            return;
        }
    };
    read_text(path, &text, st, stack, out, diags);
}

fn read_text(
    path: &Path,
    text: &str,
    st: &mut ReadState,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<SourceRecord>,
    diags: &mut Vec<Diagnostic>,
) {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    stack.push(canon);
    let file: Arc<Path> = Arc::from(path);
    for e in lex(text, path, diags) {
        let loc = Loc {
            file: file.clone(),
            line: e.line,
        };
        let t0 = &e.toks[0];
        if !e.blank_start && !t0.quoted && t0.text.starts_with('$') {
            directive(&e, &loc, path, st, stack, out, diags);
            continue;
        }
        if let Some(rec) = record(&e, &loc, st, diags) {
            out.push(rec);
        }
    }
    stack.pop();
}

fn directive(
    e: &Entry,
    loc: &Loc,
    path: &Path,
    st: &mut ReadState,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<SourceRecord>,
    diags: &mut Vec<Diagnostic>,
) {
    let name = e.toks[0].text.to_ascii_uppercase();
    let arg = e.toks.get(1).map(|t| t.text.as_str());
    match (name.as_str(), arg) {
        ("$ORIGIN", Some(a)) => match Name::parse(a, Some(&st.origin)) {
            Ok(n) => st.origin = n,
            Err(err) => diags.push(loc.error(format!("$ORIGIN {a}: {err}"))),
        },
        ("$TTL", Some(a)) => match parse_ttl(a) {
            Ok(t) => st.default_ttl = Some(t),
            Err(err) => diags.push(loc.error(format!("$TTL {a}: {err}"))),
        },
        ("$INCLUDE", Some(a)) => {
            if stack.len() >= MAX_INCLUDE_DEPTH {
                diags.push(loc.error(format!(
                    "$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH} files"
                )));
                return;
            }
            let inc = Path::new(a);
            let inc = if inc.is_absolute() {
                inc.to_path_buf()
            } else {
                path.parent().unwrap_or(Path::new(".")).join(inc)
            };
            if let Ok(c) = inc.canonicalize() {
                if stack.contains(&c) {
                    diags.push(loc.error(format!("$INCLUDE {a} includes itself")));
                    return;
                }
            }
            // RFC 1035 §5.1: an origin given to $INCLUDE applies to the
            // included file only; the including file's origin is restored.
            let saved_origin = st.origin.clone();
            let saved_owner = st.last_owner.clone();
            if let Some(o) = e.toks.get(2) {
                match Name::parse(&o.text, Some(&st.origin)) {
                    Ok(n) => st.origin = n,
                    Err(err) => {
                        diags.push(loc.error(format!("$INCLUDE origin {}: {err}", o.text)));
                        return;
                    }
                }
            }
            read_file(&inc, st, stack, out, diags, Some(loc));
            st.origin = saved_origin;
            st.last_owner = saved_owner;
        }
        ("$ORIGIN" | "$TTL" | "$INCLUDE", None) => {
            diags.push(loc.error(format!("{name} needs an argument")))
        }
        _ => diags.push(loc.error(format!("unknown directive {}", e.toks[0].text))),
    }
}

fn record(
    e: &Entry,
    loc: &Loc,
    st: &mut ReadState,
    diags: &mut Vec<Diagnostic>,
) -> Option<SourceRecord> {
    let toks = &e.toks;
    let mut i = 0;
    let owner = if e.blank_start {
        match &st.last_owner {
            Some(o) => o.clone(),
            None => {
                diags.push(loc.error("record has no owner name and no previous owner to inherit"));
                return None;
            }
        }
    } else {
        i = 1;
        let t = &toks[0].text;
        let parsed = if t == "@" {
            Ok(st.origin.clone())
        } else {
            Name::parse(t, Some(&st.origin))
        };
        match parsed {
            Ok(n) => n,
            Err(err) => {
                diags.push(loc.error(format!("invalid owner name {t}: {err}")));
                return None;
            }
        }
    };
    st.last_owner = Some(owner.clone());
    let mut ttl = None;
    let mut class = None;
    while i < toks.len() && (ttl.is_none() || class.is_none()) {
        let t = &toks[i].text;
        if ttl.is_none() && t.starts_with(|c: char| c.is_ascii_digit()) {
            match parse_ttl(t) {
                Ok(v) => ttl = Some(v),
                Err(_) => {
                    diags.push(loc.error(format!("invalid TTL {t}")));
                    return None;
                }
            }
        } else if class.is_none() && is_class(t) {
            class = Some(t.to_ascii_uppercase());
        } else {
            break;
        }
        i += 1;
    }
    let Some(type_tok) = toks.get(i) else {
        diags.push(loc.error(format!("record for {owner} has no type")));
        return None;
    };
    let Some(rtype) = parse_type(&type_tok.text) else {
        diags.push(loc.error(format!("unknown record type {}", type_tok.text)));
        return None;
    };
    if let Some(c) = &class {
        if c != "IN" {
            diags.push(loc.error(format!("class {c}: only class IN is served")));
            return None;
        }
    }
    let ttl = match ttl {
        Some(t) => {
            st.last_ttl = Some(t);
            t
        }
        None => match st.default_ttl.or(st.last_ttl) {
            Some(t) => t,
            None => {
                diags.push(loc.error("record has no TTL and no $TTL is in effect"));
                return None;
            }
        },
    };
    if ttl > i32::MAX as u32 {
        diags.push(loc.error(format!("TTL {ttl} exceeds 2^31-1 (RFC 2181 §8)")));
        return None;
    }
    let rd_toks = &toks[i + 1..];
    match parse_rdata(rtype, rd_toks, &st.origin) {
        Ok(rdata) => Some(SourceRecord {
            name: owner,
            ttl,
            rdata,
            loc: loc.clone(),
        }),
        Err(msg) => {
            diags.push(loc.error(format!("{owner} {rtype}: {msg}")));
            None
        }
    }
}

/// Groups records into RRsets and checks the zone as a whole: SOA at the
/// apex, NS at the apex, data inside the zone, CNAME exclusivity, glue for
/// in-bailiwick name servers, occluded data below delegations.
pub fn build_zone(
    origin: &Name,
    file: &Path,
    records: Vec<SourceRecord>,
    diags: &mut Vec<Diagnostic>,
) -> ZoneData {
    let mut rrsets: BTreeMap<(LowerName, RecordType), RRsetData> = BTreeMap::new();
    let origin_lc = LowerName::new(origin);
    for r in records {
        if !origin.zone_of(&r.name) {
            diags.push(
                r.loc
                    .error(format!("{} is outside the zone {origin}", r.name)),
            );
            continue;
        }
        let rtype = r.rdata.record_type();
        if matches!(
            rtype,
            RecordType::OPT | RecordType::AXFR | RecordType::IXFR | RecordType::ANY
        ) {
            diags.push(r.loc.error(format!("{rtype} cannot appear in a zone file")));
            continue;
        }
        let key = (LowerName::new(&r.name), rtype);
        match rrsets.get_mut(&key) {
            Some(set) => {
                if set.rdatas.contains(&r.rdata) {
                    diags.push(
                        r.loc
                            .warning(format!("duplicate {rtype} record for {} ignored", r.name)),
                    );
                    continue;
                }
                if r.ttl != set.ttl {
                    diags.push(r.loc.warning(format!(
                        "TTL {} differs from the {rtype} RRset's TTL {} at {}:{}; using the lower (RFC 2181 §5.2)",
                        r.ttl,
                        set.ttl,
                        set.loc.file.display(),
                        set.loc.line
                    )));
                    set.ttl = set.ttl.min(r.ttl);
                }
                set.rdatas.push(r.rdata);
            }
            None => {
                rrsets.insert(
                    key,
                    RRsetData {
                        name: r.name,
                        rtype,
                        ttl: r.ttl,
                        rdatas: vec![r.rdata],
                        loc: r.loc,
                    },
                );
            }
        }
    }

    // SOA: exactly one, at the apex.
    let mut soa_found = false;
    for ((name, rtype), set) in &rrsets {
        if *rtype != RecordType::SOA {
            continue;
        }
        if *name != origin_lc {
            diags.push(set.loc.error(format!(
                "SOA record at {} is not at the zone apex {origin}",
                set.name
            )));
        } else if set.rdatas.len() > 1 {
            diags.push(
                set.loc
                    .error(format!("zone {origin} has more than one SOA record")),
            );
        } else {
            soa_found = true;
        }
    }
    if !soa_found && !rrsets.contains_key(&(origin_lc.clone(), RecordType::SOA)) {
        diags.push(Diagnostic::error(
            file,
            0,
            0,
            format!("zone {origin} has no SOA record at its apex"),
        ));
    }
    if !rrsets.contains_key(&(origin_lc.clone(), RecordType::NS)) {
        diags.push(Diagnostic::error(
            file,
            0,
            0,
            format!("zone {origin} has no NS records at its apex"),
        ));
    }

    // CNAME exclusivity (RFC 1034 §3.6.2, RFC 2181 §10.1).
    let mut by_name: BTreeMap<&LowerName, Vec<&RRsetData>> = BTreeMap::new();
    for ((name, _), set) in &rrsets {
        by_name.entry(name).or_default().push(set);
    }
    for sets in by_name.values() {
        if let Some(c) = sets.iter().find(|s| s.rtype == RecordType::CNAME) {
            if c.rdatas.len() > 1 {
                diags.push(
                    c.loc
                        .error(format!("{} has more than one CNAME record", c.name)),
                );
            }
            let others: Vec<String> = sets
                .iter()
                .filter(|s| s.rtype != RecordType::CNAME)
                .map(|s| format!("{} at line {}", s.rtype, s.loc.line))
                .collect();
            if !others.is_empty() {
                diags.push(c.loc.error(format!(
                    "{} has a CNAME and other data ({}); a CNAME must be alone at its name",
                    c.name,
                    others.join(", ")
                )));
            }
        }
    }

    // Delegations and glue.
    let cuts: Vec<&LowerName> = rrsets
        .keys()
        .filter(|(n, t)| *t == RecordType::NS && *n != origin_lc)
        .map(|(n, _)| n)
        .collect();
    let below_cut = |n: &LowerName| cuts.iter().any(|c| *c != n && c.zone_of(n));
    for ((name, rtype), set) in &rrsets {
        if *rtype == RecordType::NS {
            for rd in &set.rdatas {
                let RData::NS(ns) = rd else { continue };
                let target = LowerName::new(&ns.0);
                if !origin.zone_of(&ns.0) {
                    continue;
                }
                let has_addr = rrsets.contains_key(&(target.clone(), RecordType::A))
                    || rrsets.contains_key(&(target.clone(), RecordType::AAAA));
                if !has_addr {
                    diags.push(set.loc.error(format!(
                        "NS {} at {} is inside the zone but has no A or AAAA record (glue)",
                        ns.0, set.name
                    )));
                }
            }
        }
        if below_cut(name) && !matches!(rtype, RecordType::A | RecordType::AAAA) {
            diags.push(set.loc.warning(format!(
                "{} {} is below a delegation and will not be served (occluded)",
                set.name, rtype
            )));
        } else if cuts.contains(&name) && !matches!(rtype, RecordType::NS | RecordType::DS) {
            diags.push(set.loc.warning(format!(
                "{} {} is at a delegation point and will not be served (only NS and DS are)",
                set.name, rtype
            )));
        }
    }
    if cuts.iter().any(|c| c.is_wildcard()) {
        diags.push(Diagnostic::warning(
            file,
            0,
            0,
            "wildcard delegations are served as ordinary delegations of the '*' name only",
        ));
    }

    ZoneData {
        origin: origin.clone(),
        file: file.to_path_buf(),
        rrsets,
    }
}

/// Reads and validates one zone.
pub fn load_zone(origin: &Name, path: &Path, diags: &mut Vec<Diagnostic>) -> ZoneData {
    let records = read_zone_file(origin, path, diags);
    build_zone(origin, path, records, diags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load(text: &str) -> (ZoneData, Vec<Diagnostic>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("z.zone");
        std::fs::File::create(&p)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write");
        let mut d = Vec::new();
        let origin = Name::from_ascii("example.com.").expect("name");
        let z = load_zone(&origin, &p, &mut d);
        (z, d)
    }

    const HEAD: &str = "$TTL 300\n@ IN SOA ns1 hostmaster ( 1 7200 900 1209600\n  60 ) ; comment\n  IN NS ns1\nns1 A 192.0.2.1\n";

    fn errors(d: &[Diagnostic]) -> Vec<String> {
        d.iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn reads_common_types_with_relative_names_and_parens() {
        let text = format!(
            "{HEAD}www 60 A 192.0.2.10\nwww AAAA 2001:db8::10\n@ MX 10 mail\nmail A 192.0.2.25\n\
             @ TXT \"v=spf1 -all\" \"second ; not a comment\"\n_sip._tcp SRV 0 5 5060 www\n\
             @ CAA 0 issue \"letsencrypt.org\"\nalias CNAME www\n1.2 PTR www\n\
             sub NS ns.sub\nns.sub A 192.0.2.53\nsub DS 12345 8 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
             svc HTTPS 1 . alpn=h2\nopaque TYPE65280 \\# 3 010203\nhex A \\# 4 C0000201\n"
        );
        let (z, d) = load(&text);
        assert!(errors(&d).is_empty(), "{:?}", d);
        let www = LowerName::from(Name::from_ascii("www.example.com.").expect("n"));
        let a = &z.rrsets[&(www.clone(), RecordType::A)];
        assert_eq!(a.ttl, 60);
        assert_eq!(z.rrsets[&(www, RecordType::AAAA)].ttl, 300);
        assert_eq!(z.serial(), Some(1));
        let soa = z.soa().expect("soa");
        assert_eq!(soa.loc.line, 2);
        let opaque = LowerName::from(Name::from_ascii("opaque.example.com.").expect("n"));
        assert!(z.rrsets.contains_key(&(opaque, RecordType::Unknown(65280))));
    }

    #[test]
    fn include_with_origin_is_relative_to_the_including_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("inc.zone"), "host A 192.0.2.7\n").expect("w");
        let main = format!("{HEAD}$INCLUDE inc.zone lab\nafter A 192.0.2.8\n");
        let p = dir.path().join("main.zone");
        std::fs::write(&p, main).expect("w");
        let mut d = Vec::new();
        let origin = Name::from_ascii("example.com.").expect("n");
        let z = load_zone(&origin, &p, &mut d);
        assert!(errors(&d).is_empty(), "{:?}", d);
        for n in ["host.lab.example.com.", "after.example.com."] {
            let k = LowerName::from(Name::from_ascii(n).expect("n"));
            assert!(z.rrsets.contains_key(&(k, RecordType::A)), "{n}");
        }
    }

    #[test]
    fn validation_errors_name_file_and_line() {
        let text = "$TTL 60\nwww A 192.0.2.1\nwww CNAME other\nout.example.org. A 192.0.2.1\nns2 A 1.2.3.4.5\n";
        let (_, d) = load(text);
        let e = errors(&d);
        assert!(e.iter().any(|m| m.contains("no SOA")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("no NS")), "{e:?}");
        assert!(
            e.iter()
                .any(|m| m.contains("z.zone:3:") && m.contains("CNAME")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("z.zone:4:") && m.contains("outside")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("z.zone:5:") && m.contains("invalid A")),
            "{e:?}"
        );
    }

    #[test]
    fn missing_glue_is_an_error() {
        let text = "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\n@ NS ns.other.net.\nsub NS ns.sub\n";
        let (_, d) = load(text);
        let e = errors(&d);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().all(|m| m.contains("glue")));
    }

    #[test]
    fn lexer_errors_are_reported() {
        let (_, d) = load("$TTL 60\n@ SOA ns1 h ( 1 2 3 4 5\n");
        assert!(errors(&d)
            .iter()
            .any(|m| m.contains("z.zone:2:") && m.contains("never closed")));
        let (_, d) = load("$TTL 60\n@ TXT \"open\n");
        assert!(errors(&d).iter().any(|m| m.contains("unterminated")));
        let (_, d) = load("$BOGUS x\n");
        assert!(errors(&d).iter().any(|m| m.contains("unknown directive")));
        let (_, d) = load("@ 60 CH TXT x\n");
        assert!(errors(&d).iter().any(|m| m.contains("only class IN")));
        let (_, d) = load("@ A 192.0.2.1\n");
        assert!(errors(&d).iter().any(|m| m.contains("no TTL")));
    }

    #[test]
    fn duplicates_and_ttl_mismatch_are_warnings() {
        let text = format!("{HEAD}a 60 A 192.0.2.1\na 30 A 192.0.2.2\na A 192.0.2.2\n");
        let (z, d) = load(&text);
        assert!(errors(&d).is_empty(), "{d:?}");
        assert_eq!(d.iter().filter(|d| !d.is_error()).count(), 2);
        let k = LowerName::from(Name::from_ascii("a.example.com.").expect("n"));
        let set = &z.rrsets[&(k, RecordType::A)];
        assert_eq!((set.ttl, set.rdatas.len()), (30, 2));
    }
}
