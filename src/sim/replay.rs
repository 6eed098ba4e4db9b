//! `replay`: the answers a query log's queries get under the running config
//! (everything up) and under a proposed one — another config, a health
//! scenario (`--down`, `--drain`), or both — and where they move; with
//! the share of the log's queries each region answers on either side.
//!
//! Each query is mapped to the walk piece of the address it is decided
//! from (the ECS subnet where the service uses ECS and the line carries
//! one, else the resolver), hence to the service's decision key, as
//! `simulate` does; a key's decision is made once per record family
//! (once per client address for keys decided per client) and remembered,
//! so a log of millions of queries costs a few thousand decisions.
//!
//! Log format, one query per line: `CLIENT NAME [TYPE]`, where CLIENT is
//! the resolver's address, `RESOLVER/ECS_ADDRESS/PREFIX` (a query that
//! carries a client subnet), or `ADDRESS/PREFIX` (the client subnet alone:
//! every service decides from it, and it stands for the resolver too).
//! TYPE is A (when absent), AAAA, or another type (counted, not replayed).
//! `#` starts a comment; blank lines are skipped.

use std::fmt;
use std::io::{BufRead, Read};
use std::net::IpAddr;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use super::{Model, QType, Scenario, SimError};
use crate::dnstap::{fstrm, reader};
use crate::policy::{Client, Family, HealthView, Scratch};
use crate::snapshot::Snapshot;

/// How many bad lines are reported with their number and text.
pub const BAD_LINES_SHOWN: usize = 10;

/// Region bucket of a name the config has no service for.
pub const NO_SERVICE: &str = "(no such service)";
/// Region bucket of an address outside every walked piece.
pub const NOT_WALKED: &str = "(not walked)";
/// Country of a client no City network holds.
pub const UNKNOWN_COUNTRY: &str = "(unknown)";

/// Whom a logged query is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The resolver's address.
    Resolver(IpAddr),
    /// A resolver's query carrying a client subnet (address, prefix).
    Ecs(IpAddr, IpAddr, u8),
    /// A client subnet alone.
    Subnet(IpAddr, u8),
}

impl From {
    /// The address counted as the resolver.
    pub fn resolver(self) -> IpAddr {
        match self {
            From::Resolver(a) | From::Ecs(a, _, _) | From::Subnet(a, _) => a,
        }
    }

    /// The address a service decides from: the subnet where there is one
    /// and the service uses ECS (a subnet alone: always).
    fn decides_from(self, ecs: bool) -> IpAddr {
        match self {
            From::Ecs(_, s, p) if ecs && p > 0 => s,
            From::Resolver(a) | From::Ecs(a, _, _) | From::Subnet(a, _) => a,
        }
    }

    /// The address the client is placed (country) by.
    fn located_at(self) -> IpAddr {
        match self {
            From::Ecs(_, s, p) if p > 0 => s,
            From::Resolver(a) | From::Ecs(a, _, _) | From::Subnet(a, _) => a,
        }
    }
}

/// The record type of a logged query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogType {
    Answered(QType),
    /// Another type: counted, not replayed.
    Other,
}

/// One logged query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'l> {
    pub from: From,
    /// The name as logged (a trailing dot and case are ignored).
    pub name: &'l str,
    pub qtype: LogType,
}

/// Parses one log line: `Ok(None)` for a blank or comment line.
pub fn parse_line(line: &str) -> Result<Option<Query<'_>>, String> {
    let line = line.split('#').next().unwrap_or_default();
    let mut fields = line.split_ascii_whitespace();
    let Some(client) = fields.next() else {
        return Ok(None);
    };
    let name = fields.next().ok_or("no query name after the client")?;
    let qtype = match fields.next() {
        None => LogType::Answered(QType::A),
        Some(t) => match QType::parse(t) {
            Ok(q) => LogType::Answered(q),
            Err(_) if t.bytes().all(|b| b.is_ascii_alphanumeric()) => LogType::Other,
            Err(_) => return Err(format!("{t:?} is not a record type")),
        },
    };
    if fields.next().is_some() {
        return Err("more than three fields (CLIENT NAME [TYPE])".to_string());
    }
    if name.is_empty() || name.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("{name:?} is not a query name"));
    }
    Ok(Some(Query {
        from: parse_client(client)?,
        name,
        qtype,
    }))
}

fn parse_addr(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("{s:?} is not an IP address"))
}

/// `ADDRESS/PREFIX`: the network's first address and its prefix.
fn parse_subnet(addr: &str, prefix: &str) -> Result<(IpAddr, u8), String> {
    let a = parse_addr(addr)?;
    let p: u8 = prefix
        .parse()
        .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
    let first = match a {
        IpAddr::V4(v4) if p <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) if p <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(p)).unwrap_or(0);
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
        _ => return Err(format!("/{p} is too long for {a}")),
    };
    Ok((first, p))
}

fn parse_client(s: &str) -> Result<From, String> {
    let Some((first, rest)) = s.split_once('/') else {
        return Ok(From::Resolver(parse_addr(s)?));
    };
    match rest.split_once('/') {
        None => {
            let (a, p) = parse_subnet(first, rest)?;
            Ok(From::Subnet(a, p))
        }
        Some((addr, prefix)) => {
            let (a, p) = parse_subnet(addr, prefix)?;
            Ok(From::Ecs(parse_addr(first)?, a, p))
        }
    }
}

/// Names interned to small numbers.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    index: FxHashMap<String, u16>,
}

impl Names {
    fn id(&mut self, name: &str) -> u16 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = u16::try_from(self.list.len()).unwrap_or(u16::MAX);
        self.list.push(name.to_string());
        self.index.insert(name.to_string(), i);
        i
    }
    fn name(&self, i: u16) -> &str {
        self.list.get(usize::from(i)).map_or("?", String::as_str)
    }
}

/// One config's side of the replay: its model and remembered decisions.
struct Side<'s> {
    model: Model<'s>,
    health: HealthView,
    /// Service (normalised name) → its number in the model.
    services: FxHashMap<String, usize>,
    /// (service, key, family, client where decided per client) → region.
    memo: FxHashMap<(u32, u32, u8, Option<IpAddr>), u16>,
    sc: Scratch,
}

fn normalised(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn family_code(f: Family) -> u8 {
    match f {
        Family::V4 => 4,
        Family::V6 => 6,
        Family::Any => 0,
    }
}

impl<'s> Side<'s> {
    fn new(snap: &'s Snapshot, scenario: &Scenario) -> Result<Side<'s>, SimError> {
        let model = Model::new(snap, &[], QType::A)?;
        let health = scenario.health(snap)?;
        let services = model
            .services
            .iter()
            .enumerate()
            .map(|(i, m)| (normalised(&m.name), i))
            .collect();
        Ok(Side {
            model,
            health,
            services,
            memo: FxHashMap::default(),
            sc: Scratch::seeded(0),
        })
    }

    /// The region bucket of the answer `name` gets for `from`.
    fn region(&mut self, name: &str, from: From, q: QType, regions: &mut Names) -> u16 {
        let Some(&si) = self.services.get(name) else {
            return regions.id(NO_SERVICE);
        };
        let m = &self.model.services[si];
        let addr = from.decides_from(self.model.svc(m).ecs).to_canonical();
        let Some(input) = self.model.input_of(addr) else {
            return regions.id(NOT_WALKED);
        };
        let Some(&k) = m.key_of.get(input as usize) else {
            return regions.id(NOT_WALKED);
        };
        let Some(key) = m.keys.get(k as usize) else {
            return regions.id(NOT_WALKED);
        };
        let family = if m.family == Family::Any {
            Family::Any
        } else {
            q.family()
        };
        let per_client = key.per_client.then_some(addr);
        let memo_key = (si as u32, k, family_code(family), per_client);
        if let Some(&r) = self.memo.get(&memo_key) {
            return r;
        }
        let client = Client {
            addr: per_client.unwrap_or(key.client.addr),
            loc: key.client.loc,
        };
        let o = self
            .model
            .outcome(m, k as usize, &client, family, &self.health, &mut self.sc);
        let r = regions.id(&self.model.bucket(&o).0);
        self.memo.insert(memo_key, r);
        r
    }
}

/// A replay: where the log's queries are answered from under each config.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub log: String,
    /// `text` or `dnstap`.
    pub format: &'static str,
    pub config: String,
    pub against: String,
    /// The health `against` is replayed under ("all up", "down: …");
    /// `config` is replayed with everything up.
    pub health: String,
    /// Lines read, comments and blank lines included (dnstap: data
    /// frames).
    pub lines: u64,
    /// Queries logged (well-formed lines).
    pub queries: u64,
    /// A and AAAA queries for a name either config has a service for.
    pub replayed: u64,
    /// Queries of other types.
    pub other_types: u64,
    /// Queries for names neither config has a service for.
    pub not_a_service: u64,
    /// dnstap messages not replayed: other message types than a client's
    /// query or its response (`AUTH_*`, `CLIENT_*`), and responses where the
    /// log is replayed from its queries (or the reverse).
    pub other_messages: u64,
    /// Malformed lines (dnstap: frames).
    pub bad: u64,
    /// The first malformed lines.
    pub bad_lines: Vec<BadLine>,
    /// Distinct resolvers among the replayed queries.
    pub resolvers: u64,
    pub moved: Moved,
    /// Each region's share of the replayed queries under `config` and under
    /// `against`, most queries under `against` first.
    pub shares: Vec<Share>,
    /// Replayed queries, and the distinct resolvers that sent them, by the
    /// region answering under `config` and under `against`, most queries
    /// first.
    pub matrix: Vec<Cell>,
    /// The countries (City database, of the client subnet or else the
    /// resolver) whose queries move, most moved first.
    pub countries: Vec<Country>,
    /// Why a dnstap log ended early (cut short, or a bad control frame):
    /// what was read before is replayed.
    pub truncated: Option<String>,
    pub timings_ms: ReplayTimings,
}

#[derive(Debug, Serialize)]
pub struct BadLine {
    pub line: u64,
    pub text: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Moved {
    pub queries: u64,
    pub percent: f64,
    /// Resolvers with at least one query that moves.
    pub resolvers: u64,
}

#[derive(Debug, Serialize)]
pub struct Share {
    pub region: String,
    pub before: u64,
    pub before_percent: f64,
    pub after: u64,
    pub after_percent: f64,
}

#[derive(Debug, Serialize)]
pub struct Cell {
    pub from: String,
    pub to: String,
    pub queries: u64,
    pub resolvers: u64,
}

#[derive(Debug, Serialize)]
pub struct Country {
    pub country: String,
    /// Replayed queries from this country.
    pub queries: u64,
    /// Of those, the ones that move.
    pub moved: u64,
    /// Resolvers with a query from this country that moves.
    pub resolvers: u64,
    /// Where they move, most first.
    pub moves: Vec<Cell>,
}

#[derive(Debug, Default, Serialize)]
pub struct ReplayTimings {
    pub load: u64,
    pub walk: u64,
    pub replay: u64,
}

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// dnstap when the log begins with a Frame Streams START frame, else
    /// text.
    #[default]
    Auto,
    Text,
    Dnstap,
}

/// What to replay and how much to report.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Countries listed.
    pub top: usize,
    pub format: LogFormat,
    /// The health the proposed side is replayed under.
    pub health: Scenario,
}

/// Replays `log` (named `log_name`) against `current` (everything up) and
/// `proposed` (under `opts.health`), each a snapshot and its label.
pub fn replay(
    log: impl BufRead,
    log_name: &str,
    current: (&Snapshot, &str),
    proposed: (&Snapshot, &str),
    opts: &ReplayOptions,
) -> Result<ReplayReport, SimError> {
    let started = std::time::Instant::now();
    let mut run = Run::new(current.0, proposed.0, &opts.health)?;
    let walked = std::time::Instant::now();
    // The first bytes tell the format: a text log never begins with NUL.
    let mut log = log;
    let mut head = [0u8; 12];
    let mut n = 0;
    while n < head.len() {
        match log.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SimError::Log(e)),
        }
    }
    let dnstap = match opts.format {
        LogFormat::Auto => fstrm::looks_like_fstrm(&head[..n]),
        LogFormat::Text => false,
        LogFormat::Dnstap => true,
    };
    let input = std::io::Cursor::new(&head[..n]).chain(log);
    let (lines, truncated) = if dnstap {
        run.dnstap(input)?
    } else {
        (run.text(input)?, None)
    };
    let done = std::time::Instant::now();
    let ms = |x: std::time::Instant, y: std::time::Instant| (y - x).as_millis() as u64;
    let Run {
        t,
        regions,
        countries,
        ..
    } = run;
    let mut report = t.report(
        ReportContext {
            log: log_name,
            config: current.1,
            against: proposed.1,
            health: opts.health.label(),
            lines,
            regions: &regions,
            countries: &countries,
            top: opts.top,
        },
        ReplayTimings {
            load: 0,
            walk: ms(started, walked),
            replay: ms(walked, done),
        },
    );
    report.format = if dnstap { "dnstap" } else { "text" };
    report.truncated = truncated;
    Ok(report)
}

/// A replay under way: both sides and the sums.
struct Run<'s> {
    a: Side<'s>,
    b: Side<'s>,
    regions: Names,
    countries: Names,
    /// Per current input: its country.
    country_of: Vec<Option<u16>>,
    t: Tally,
}

impl<'s> Run<'s> {
    fn new(
        current: &'s Snapshot,
        proposed: &'s Snapshot,
        health: &Scenario,
    ) -> Result<Run<'s>, SimError> {
        let a = Side::new(current, &Scenario::default())?;
        let b = Side::new(proposed, health)?;
        let country_of = vec![None; a.model.walk.inputs.len()];
        Ok(Run {
            a,
            b,
            regions: Names::default(),
            countries: Names::default(),
            country_of,
            t: Tally::default(),
        })
    }

    /// Replays a text log; returns the lines read.
    fn text(&mut self, mut log: impl BufRead) -> Result<u64, SimError> {
        let mut lines = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = log.read_until(b'\n', &mut buf).map_err(SimError::Log)?;
            if n == 0 {
                return Ok(lines);
            }
            lines += 1;
            let text = match std::str::from_utf8(&buf) {
                Ok(s) => s,
                Err(_) => {
                    self.t.bad(
                        lines,
                        &String::from_utf8_lossy(&buf),
                        "not UTF-8".to_string(),
                    );
                    continue;
                }
            };
            match parse_line(text) {
                Ok(Some(q)) => self.query(&q),
                Ok(None) => {}
                Err(e) => self.t.bad(lines, text, e),
            }
        }
    }

    /// Replays a dnstap log; returns the frames read and, when the stream
    /// ends without STOP or inside a frame, why.
    ///
    /// Each query is counted once: the first query or response message
    /// decides which of the two the log is replayed from (a server logging
    /// both logs the query first), the other direction is counted in
    /// `other_messages`.
    fn dnstap(&mut self, log: impl std::io::Read) -> Result<(u64, Option<String>), SimError> {
        let mut frames = fstrm::FrameReader::start(log).map_err(dnstap_error)?;
        let mut buf = Vec::with_capacity(1024);
        let mut d = reader::Decoder::default();
        let mut replayed: Option<reader::Direction> = None;
        let mut n = 0u64;
        loop {
            let next = match frames.next(&mut buf) {
                Ok(x) => x,
                Err(fstrm::FrameError::Truncated(why)) => {
                    return Ok((n, Some(format!("the stream ends {why}"))))
                }
                Err(fstrm::FrameError::Io(e)) => return Err(SimError::Log(e)),
                Err(e) => return Ok((n, Some(e.to_string()))),
            };
            let len = match next {
                fstrm::Next::Stop => return Ok((n, None)),
                fstrm::Next::Restart => continue,
                fstrm::Next::TooLong(len) => len,
                fstrm::Next::Data => buf.len(),
            };
            n += 1;
            if len > fstrm::MAX_DATA {
                self.t.bad(n, "", format!("a frame of {len} bytes"));
                continue;
            }
            let logged = match d.decode(&buf) {
                Ok(reader::Frame::Query(l)) => l,
                Ok(reader::Frame::Other) => {
                    self.t.other_messages += 1;
                    continue;
                }
                Err(e) => {
                    self.t.bad(n, "", e);
                    continue;
                }
            };
            if *replayed.get_or_insert(logged.direction) != logged.direction {
                self.t.other_messages += 1;
                continue;
            }
            let from = match logged.ecs {
                Some((s, p)) => From::Ecs(logged.resolver, s, p),
                None => From::Resolver(logged.resolver),
            };
            let qtype = match logged.qtype {
                crate::wire::TYPE_A => LogType::Answered(QType::A),
                crate::wire::TYPE_AAAA => LogType::Answered(QType::Aaaa),
                _ => LogType::Other,
            };
            self.query(&Query {
                from,
                name: &d.name,
                qtype,
            });
        }
    }

    /// Replays one logged query under both configs.
    fn query(&mut self, q: &Query<'_>) {
        let t = &mut self.t;
        t.queries += 1;
        let LogType::Answered(qtype) = q.qtype else {
            t.other_types += 1;
            return;
        };
        let name = normalised(q.name);
        if !self.a.services.contains_key(&name) && !self.b.services.contains_key(&name) {
            t.not_a_service += 1;
            return;
        }
        let from_region = self.a.region(&name, q.from, qtype, &mut self.regions);
        let to_region = self.b.region(&name, q.from, qtype, &mut self.regions);
        let country = {
            let a = &self.a;
            let input = a.model.input_of(q.from.located_at().to_canonical());
            match input.and_then(|i| self.country_of.get_mut(i as usize)) {
                Some(Some(c)) => *c,
                Some(slot) => {
                    let c = self.countries.id(&country_name(&a.model, input));
                    *slot = Some(c);
                    c
                }
                None => self.countries.id(UNKNOWN_COUNTRY),
            }
        };
        t.add(q.from.resolver(), country, from_region, to_region);
    }
}

fn dnstap_error(e: fstrm::FrameError) -> SimError {
    match e {
        fstrm::FrameError::Io(e) => SimError::Log(e),
        e => SimError::Log(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a dnstap log: {e}"),
        )),
    }
}

fn country_name(model: &Model<'_>, input: Option<u32>) -> String {
    let Some(inp) = input.and_then(|i| model.walk.inputs.get(i as usize)) else {
        return UNKNOWN_COUNTRY.to_string();
    };
    let c = inp.location.country;
    if !inp.city || c == [0, 0] {
        return UNKNOWN_COUNTRY.to_string();
    }
    String::from_utf8_lossy(c.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
}

/// The sums a replay is made of.
#[derive(Default)]
struct Tally {
    queries: u64,
    other_types: u64,
    not_a_service: u64,
    other_messages: u64,
    bad: u64,
    bad_lines: Vec<BadLine>,
    cells: FxHashMap<(u16, u16), u64>,
    cell_resolvers: FxHashSet<(u16, u16, IpAddr)>,
    resolvers: FxHashSet<IpAddr>,
    moved_resolvers: FxHashSet<IpAddr>,
    /// Per country: queries, moved.
    by_country: FxHashMap<u16, (u64, u64)>,
    country_moves: FxHashMap<(u16, u16, u16), u64>,
    country_resolvers: FxHashSet<(u16, IpAddr)>,
    country_move_resolvers: FxHashSet<(u16, u16, u16, IpAddr)>,
}

struct ReportContext<'a> {
    log: &'a str,
    config: &'a str,
    against: &'a str,
    health: String,
    lines: u64,
    regions: &'a Names,
    countries: &'a Names,
    top: usize,
}

impl Tally {
    fn bad(&mut self, line: u64, text: &str, error: String) {
        self.bad += 1;
        if self.bad_lines.len() < BAD_LINES_SHOWN {
            let text = text.trim_end_matches(['\n', '\r']);
            let text: String = text.chars().take(200).collect();
            self.bad_lines.push(BadLine { line, text, error });
        }
    }

    fn add(&mut self, resolver: IpAddr, country: u16, from: u16, to: u16) {
        *self.cells.entry((from, to)).or_default() += 1;
        self.cell_resolvers.insert((from, to, resolver));
        self.resolvers.insert(resolver);
        let c = self.by_country.entry(country).or_default();
        c.0 += 1;
        if from != to {
            c.1 += 1;
            self.moved_resolvers.insert(resolver);
            *self.country_moves.entry((country, from, to)).or_default() += 1;
            self.country_resolvers.insert((country, resolver));
            self.country_move_resolvers
                .insert((country, from, to, resolver));
        }
    }

    fn report(self, cx: ReportContext<'_>, timings_ms: ReplayTimings) -> ReplayReport {
        let mut cell_resolvers: FxHashMap<(u16, u16), u64> = FxHashMap::default();
        for &(f, t, _) in &self.cell_resolvers {
            *cell_resolvers.entry((f, t)).or_default() += 1;
        }
        let mut matrix: Vec<Cell> = self
            .cells
            .iter()
            .map(|(&(f, t), &queries)| Cell {
                from: cx.regions.name(f).to_string(),
                to: cx.regions.name(t).to_string(),
                queries,
                resolvers: cell_resolvers.get(&(f, t)).copied().unwrap_or(0),
            })
            .collect();
        sort_cells(&mut matrix);
        let replayed: u64 = self.cells.values().sum();
        let mut by_region: FxHashMap<u16, (u64, u64)> = FxHashMap::default();
        for (&(f, t), &n) in &self.cells {
            by_region.entry(f).or_default().0 += n;
            by_region.entry(t).or_default().1 += n;
        }
        let mut shares: Vec<Share> = by_region
            .iter()
            .map(|(&r, &(before, after))| Share {
                region: cx.regions.name(r).to_string(),
                before,
                before_percent: percent(before, replayed),
                after,
                after_percent: percent(after, replayed),
            })
            .collect();
        shares.sort_by(|x, y| {
            (y.after, y.before)
                .cmp(&(x.after, x.before))
                .then_with(|| x.region.cmp(&y.region))
        });
        let moved: u64 = self
            .cells
            .iter()
            .filter(|((f, t), _)| f != t)
            .map(|(_, n)| n)
            .sum();
        let mut resolvers_of: FxHashMap<u16, u64> = FxHashMap::default();
        for &(c, _) in &self.country_resolvers {
            *resolvers_of.entry(c).or_default() += 1;
        }
        let mut move_resolvers: FxHashMap<(u16, u16, u16), u64> = FxHashMap::default();
        for &(c, f, t, _) in &self.country_move_resolvers {
            *move_resolvers.entry((c, f, t)).or_default() += 1;
        }
        let mut countries: Vec<Country> = self
            .by_country
            .iter()
            .filter(|(_, &(_, m))| m > 0)
            .map(|(&c, &(queries, moved))| {
                let mut moves: Vec<Cell> = self
                    .country_moves
                    .iter()
                    .filter(|((cc, _, _), _)| *cc == c)
                    .map(|(&(_, f, t), &queries)| Cell {
                        from: cx.regions.name(f).to_string(),
                        to: cx.regions.name(t).to_string(),
                        queries,
                        resolvers: move_resolvers.get(&(c, f, t)).copied().unwrap_or(0),
                    })
                    .collect();
                sort_cells(&mut moves);
                Country {
                    country: cx.countries.name(c).to_string(),
                    queries,
                    moved,
                    resolvers: resolvers_of.get(&c).copied().unwrap_or(0),
                    moves,
                }
            })
            .collect();
        countries.sort_by(|x, y| {
            y.moved
                .cmp(&x.moved)
                .then_with(|| x.country.cmp(&y.country))
        });
        countries.truncate(cx.top);
        ReplayReport {
            log: cx.log.to_string(),
            format: "text",
            config: cx.config.to_string(),
            against: cx.against.to_string(),
            health: cx.health,
            lines: cx.lines,
            queries: self.queries,
            replayed,
            other_types: self.other_types,
            not_a_service: self.not_a_service,
            other_messages: self.other_messages,
            bad: self.bad,
            bad_lines: self.bad_lines,
            resolvers: self.resolvers.len() as u64,
            moved: Moved {
                queries: moved,
                percent: percent(moved, replayed),
                resolvers: self.moved_resolvers.len() as u64,
            },
            shares,
            matrix,
            countries,
            truncated: None,
            timings_ms,
        }
    }
}

fn sort_cells(cells: &mut [Cell]) {
    cells.sort_by(|x, y| {
        y.queries
            .cmp(&x.queries)
            .then_with(|| x.from.cmp(&y.from))
            .then_with(|| x.to.cmp(&y.to))
    });
}

fn percent(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        (n as f64 * 10000.0 / of as f64).round() / 100.0
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replay {}: {} (all up) → {} ({})",
            self.log, self.config, self.against, self.health
        )?;
        let unit = if self.format == "dnstap" {
            "frame"
        } else {
            "line"
        };
        writeln!(
            f,
            "  {} {unit}s, {} queries: {} replayed, {} of other types, {} for names no service answers, {} bad {unit}s",
            self.lines, self.queries, self.replayed, self.other_types, self.not_a_service, self.bad
        )?;
        if self.other_messages > 0 {
            writeln!(
                f,
                "  {} other dnstap messages not replayed",
                self.other_messages
            )?;
        }
        for b in &self.bad_lines {
            if b.text.is_empty() {
                writeln!(f, "  bad {unit} {}: {}", b.line, b.error)?;
            } else {
                writeln!(f, "  bad {unit} {}: {} ({:?})", b.line, b.error, b.text)?;
            }
        }
        if self.bad > self.bad_lines.len() as u64 {
            writeln!(
                f,
                "  … {} more bad {unit}s",
                self.bad - self.bad_lines.len() as u64
            )?;
        }
        if let Some(why) = &self.truncated {
            writeln!(f, "  warning: {why}; the frames before it are replayed")?;
        }
        writeln!(
            f,
            "  moved: {} of {} queries ({}%), {} of {} resolvers",
            self.moved.queries,
            self.replayed,
            self.moved.percent,
            self.moved.resolvers,
            self.resolvers
        )?;
        if self.moved.queries == 0 {
            writeln!(f, "  no shift predicted")?;
        }
        writeln!(f)?;
        if !self.shares.is_empty() {
            let w = self
                .shares
                .iter()
                .map(|s| s.region.chars().count())
                .max()
                .unwrap_or(0)
                .max(6);
            writeln!(f, "share of the replayed queries by answering region:")?;
            writeln!(f, "  {:<w$}  {:>18}  {:>18}", "region", "before", "after")?;
            for s in &self.shares {
                writeln!(
                    f,
                    "  {:<w$}  {:>9} {:>7.2}%  {:>9} {:>7.2}%",
                    s.region, s.before, s.before_percent, s.after, s.after_percent
                )?;
            }
            writeln!(f)?;
        }
        self.table(f, "queries", |c| c.queries)?;
        writeln!(f)?;
        self.table(f, "distinct resolvers", |c| c.resolvers)?;
        if !self.countries.is_empty() {
            writeln!(f)?;
            writeln!(f, "countries whose queries move:")?;
            for c in &self.countries {
                let moves: Vec<String> = c
                    .moves
                    .iter()
                    .map(|m| format!("{} → {} {}", m.from, m.to, m.queries))
                    .collect();
                writeln!(
                    f,
                    "  {:<10} {} of {} queries ({}%), {} resolvers: {}",
                    c.country,
                    c.moved,
                    c.queries,
                    percent(c.moved, c.queries),
                    c.resolvers,
                    moves.join(", ")
                )?;
            }
        }
        writeln!(
            f,
            "\n(load {} ms, walk {} ms, replay {} ms)",
            self.timings_ms.load, self.timings_ms.walk, self.timings_ms.replay
        )
    }
}

impl ReplayReport {
    /// The region-to-region matrix of `what`: rows under `config`,
    /// columns under `against`.
    fn table(
        &self,
        f: &mut fmt::Formatter<'_>,
        what: &str,
        value: impl Fn(&Cell) -> u64,
    ) -> fmt::Result {
        let mut rows: Vec<&str> = self.matrix.iter().map(|c| c.from.as_str()).collect();
        let mut cols: Vec<&str> = self.matrix.iter().map(|c| c.to.as_str()).collect();
        rows.sort_unstable();
        rows.dedup();
        cols.sort_unstable();
        cols.dedup();
        writeln!(
            f,
            "{what}, from (rows: {}) to (columns: {}):",
            self.config, self.against
        )?;
        let w0 = rows
            .iter()
            .map(|r| r.chars().count())
            .max()
            .unwrap_or(0)
            .max(4);
        let widths: Vec<usize> = cols.iter().map(|c| c.chars().count().max(8)).collect();
        write!(f, "  {:<w0$}", "")?;
        for (c, w) in cols.iter().zip(&widths) {
            write!(f, "  {c:>w$}")?;
        }
        writeln!(f)?;
        for r in &rows {
            write!(f, "  {r:<w0$}")?;
            for (c, w) in cols.iter().zip(&widths) {
                let v = self
                    .matrix
                    .iter()
                    .find(|x| x.from == *r && x.to == *c)
                    .map_or(0, &value);
                write!(f, "  {v:>w$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let q = parse_line("192.0.2.1 www.example.com. AAAA")
            .unwrap()
            .unwrap();
        assert_eq!(q.from, From::Resolver("192.0.2.1".parse().unwrap()));
        assert_eq!(q.qtype, LogType::Answered(QType::Aaaa));
        let q = parse_line("  192.0.2.1/198.51.100.77/24 www  # x")
            .unwrap()
            .unwrap();
        assert_eq!(
            q.from,
            From::Ecs(
                "192.0.2.1".parse().unwrap(),
                "198.51.100.0".parse().unwrap(),
                24
            )
        );
        assert_eq!(q.qtype, LogType::Answered(QType::A));
        let q = parse_line("2001:db8::1/2001:db8:a0::/44 www MX")
            .unwrap()
            .unwrap();
        assert_eq!(q.qtype, LogType::Other);
        let q = parse_line("203.0.113.9/24 www a").unwrap().unwrap();
        assert_eq!(q.from, From::Subnet("203.0.113.0".parse().unwrap(), 24));
        assert_eq!(parse_line("# comment").unwrap(), None);
        assert_eq!(parse_line("   ").unwrap(), None);
        for bad in [
            "192.0.2.1",
            "192.0.2.300 www",
            "192.0.2.1/33 www",
            "192.0.2.1/x/24 www",
            "www 192.0.2.1",
            "192.0.2.1 www A extra",
            "192.0.2.1 www A-B",
            "/ www",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }
}
