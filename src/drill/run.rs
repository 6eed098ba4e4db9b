//! Running a drill against live nodes: pre-checks, arming resolver
//! telemetry, the action (with the scenario's expiry, so the nodes revert
//! by themselves whatever happens to this process), probing every node for
//! every client subnet, reading the telemetry, restoring, and the report.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData};
use serde::Serialize;
use serde_json::{json, Value};

use super::analyse::{
    self, ListenerRate, ProbeConvergence, ResolverLine, ResolverSummary, Sample, Seen, StepReport,
    TierSample,
};
use super::scenario::{Action, Node, Scenario, Tier};
use super::shadow::{NodeView, ShadowReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Succeeded,
    Failed,
    Interrupted,
    /// A pre-check failed: nothing was changed.
    Refused,
    /// Shadow mode: what would change was computed; nothing was set.
    Shadow,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub node: String,
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Unix seconds.
    pub at: f64,
    pub what: String,
}

/// One node's health epoch (the consensus id of the health state it
/// answers under) before the action and at the end of the hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeEpoch {
    pub node: String,
    /// At the pre-checks.
    pub before: Option<String>,
    /// At the end of the hold, before restoring.
    pub after: Option<String>,
    /// When the node took `after` (its clock, Unix seconds).
    pub changed_at: Option<f64>,
    /// Seconds from the action until the node took `after`; none when it
    /// had it before the action.
    pub after_action: Option<f64>,
    /// Seconds from the probers' verdict behind `after` (the newest change
    /// of a counted prober vote, by that prober's clock) until the node
    /// took it; none when that verdict came before the action (a drain
    /// changes the epoch without a vote).
    pub behind_probers: Option<f64>,
    /// How often the node reads the probers (seconds).
    pub poll_interval: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub name: String,
    pub outcome: Outcome,
    pub reasons: Vec<String>,
    pub action: String,
    pub target: String,
    pub nodes: Vec<String>,
    pub subnets: Vec<String>,
    pub started_at: f64,
    pub action_at: Option<f64>,
    pub ended_at: f64,
    pub expiry_secs: f64,
    pub converge_within_secs: f64,
    pub prechecks: Vec<Check>,
    pub timeline: Vec<Event>,
    pub probes: Vec<ProbeConvergence>,
    pub resolvers: Option<ResolverSummary>,
    /// Why there is no resolver summary, when there is none.
    pub resolver_note: Option<String>,
    /// Each node's health epoch before and after.
    pub epochs: Vec<NodeEpoch>,
    /// Whether every node answered under one epoch at the end of the hold
    /// (none with a single node, or when a node could not be read).
    pub epochs_agree: Option<bool>,
    pub samples: Vec<Sample>,
    /// Gradual steps, each with what it moved (empty: the action at once).
    pub steps: Vec<StepReport>,
    /// When the action was undone (unix seconds).
    pub restored_at: Option<f64>,
    /// Tier connection drain: each listener of the scenario's tier nodes,
    /// its new-connection rate before, during and after, and the time
    /// until it reached zero.
    pub tier: Vec<ListenerRate>,
    pub tier_samples: Vec<TierSample>,
    /// Shadow mode: what would change.
    pub shadow: Option<ShadowReport>,
}

fn now() -> f64 {
    crate::health::unix(SystemTime::now())
}

/// The admin API of the nodes.
struct Api {
    client: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        node: &Node,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        crate::admin::client::call(
            &self.client,
            &node.admin,
            node.token.as_deref(),
            method,
            path,
            body,
        )
        .await
    }

    async fn tier(&self, t: &Tier) -> Result<Value, String> {
        crate::admin::client::call(
            &self.client,
            &t.admin,
            t.token.as_deref(),
            "GET",
            "/v1/tier",
            None,
        )
        .await
    }
}

/// What the drill watches while it runs: the probes, and the tier nodes'
/// listener counters.
struct Watch<'a> {
    api: &'a Api,
    samples: Vec<Sample>,
    tier: Vec<ListenerRate>,
    tier_samples: Vec<TierSample>,
    /// When the tier nodes were last read.
    tier_read: Option<tokio::time::Instant>,
}

impl Watch<'_> {
    /// Reads every tier node's listeners once — unless they were read less
    /// than half an interval ago (where one period of watching ends and the
    /// next begins), which would make a rate of a few connections over a
    /// few milliseconds.
    async fn read_tiers(&mut self, s: &Scenario) {
        let at = tokio::time::Instant::now();
        if self.tier_read.is_some_and(|t| at - t < s.interval / 2) {
            return;
        }
        self.tier_read = Some(at);
        for t in &s.tiers {
            let Ok(v) = self.api.tier(t).await else {
                continue;
            };
            let at = now();
            let empty = Vec::new();
            for l in v["listeners"].as_array().unwrap_or(&empty) {
                let name = l["name"].as_str().unwrap_or("?");
                let i = match self
                    .tier
                    .iter()
                    .position(|x| x.tier == t.name && x.listener == name)
                {
                    Some(i) => i,
                    None => {
                        self.tier.push(ListenerRate {
                            tier: t.name.clone(),
                            listener: name.to_string(),
                            region: l["region"].as_str().unwrap_or("").to_string(),
                            bind: l["bind"].as_str().unwrap_or("").to_string(),
                            drained: false,
                            before: None,
                            during: None,
                            after: None,
                            zero_after: None,
                            over_time: Vec::new(),
                        });
                        self.tier.len() - 1
                    }
                };
                self.tier_samples.push(TierSample {
                    listener: i,
                    at,
                    accepted: l["accepted"].as_u64().unwrap_or(0),
                    active: l["active"].as_u64().unwrap_or(0),
                });
            }
        }
    }
}

/// The endpoints a target names on one node: (addresses, regions wholly
/// covered). Empty when the node knows no such target.
fn matched(status: &Value, target: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut addrs = BTreeSet::new();
    let mut covered: BTreeSet<String> = BTreeSet::new();
    let mut partial: BTreeSet<String> = BTreeSet::new();
    let empty = Vec::new();
    let eps = status["health"]["endpoints"].as_array().unwrap_or(&empty);
    for e in eps {
        let id = e["endpoint"].as_str().unwrap_or("");
        let pool = e["pool"].as_str().unwrap_or("");
        let region = e["region"].as_str().unwrap_or("").to_string();
        if id == target || pool == target || region == target {
            if let Some((_, addr)) = id.split_once('/') {
                addrs.insert(addr.trim_end_matches('.').to_string());
            }
            covered.insert(region);
        } else {
            partial.insert(region);
        }
    }
    covered.retain(|r| !partial.contains(r));
    (addrs, covered)
}

/// A query ID that differs from query to query.
fn query_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    NEXT.fetch_add(1, Ordering::Relaxed) ^ (t as u16)
}

/// One query to a node for the scenario's name, from `subnet` by ECS.
async fn probe(
    s: &Scenario,
    node: &Node,
    subnet: Option<ipnet::IpNet>,
    drained: &BTreeSet<String>,
) -> Seen {
    let Ok(name) = Name::from_ascii(&s.qname) else {
        return Seen::Nothing;
    };
    let mut m = Message::query();
    m.metadata.id = query_id();
    m.add_query(Query::query(name, s.qtype));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some(net) = subnet {
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            net.network(),
            net.prefix_len(),
            0,
        )));
    }
    m.edns = Some(e);
    let Ok(bytes) = m.to_vec() else {
        return Seen::Nothing;
    };
    let bind: IpAddr = if node.dns.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    };
    let Ok(sock) = tokio::net::UdpSocket::bind((bind, 0)).await else {
        return Seen::Nothing;
    };
    if sock.send_to(&bytes, node.dns).await.is_err() {
        return Seen::Nothing;
    }
    let mut buf = [0u8; 4096];
    let reply = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match sock.recv(&mut buf).await {
                Ok(n) => match Message::from_vec(&buf[..n]) {
                    Ok(r) if r.metadata.id == m.metadata.id => return Some(r),
                    _ => continue,
                },
                Err(_) => return None,
            }
        }
    })
    .await;
    let Ok(Some(r)) = reply else {
        return Seen::Nothing;
    };
    let got: Vec<String> = r
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(ip) => Some(ip.to_string()),
            RData::AAAA(ip) => Some(ip.to_string()),
            RData::CNAME(n) => Some(n.to_ascii().trim_end_matches('.').to_string()),
            _ => None,
        })
        .collect();
    if got.is_empty() {
        Seen::Nothing
    } else if got.iter().any(|a| drained.contains(a)) {
        Seen::Old
    } else {
        Seen::New
    }
}

/// Runs the drill; `stop` resolving (Ctrl-C) ends the hold early, restores
/// and reports INTERRUPTED.
pub async fn run(s: &Scenario, stop: impl Future<Output = ()>) -> Report {
    tokio::pin!(stop);
    crate::health::ensure_tls_provider();
    let mut report = Report {
        name: s.name.clone(),
        outcome: Outcome::Refused,
        reasons: Vec::new(),
        action: match &s.action {
            Action::Drain(_) if !s.steps.is_empty() => format!(
                "drain in steps of {}",
                s.steps
                    .iter()
                    .map(|f| format!("{:.0} %", f * 100.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Action::Drain(_) => "drain".into(),
            Action::ForceDown(_) => "force down".into(),
            Action::Command { argv, .. } => format!("command {}", argv.join(" ")),
        },
        target: s.action.target().to_string(),
        nodes: s.nodes.iter().map(|n| n.name.clone()).collect(),
        subnets: subnet_names(s),
        started_at: now(),
        action_at: None,
        ended_at: 0.0,
        expiry_secs: s.expiry.as_secs_f64(),
        converge_within_secs: s.converge_within.as_secs_f64(),
        prechecks: Vec::new(),
        timeline: Vec::new(),
        probes: Vec::new(),
        resolvers: None,
        resolver_note: None,
        epochs: Vec::new(),
        epochs_agree: None,
        samples: Vec::new(),
        steps: Vec::new(),
        restored_at: None,
        tier: Vec::new(),
        tier_samples: Vec::new(),
        shadow: None,
    };
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            report.reasons.push(format!("HTTP client: {e}"));
            report.ended_at = now();
            return report;
        }
    };
    let api = Api { client };
    let target = s.action.target();

    // Pre-checks: every node reachable, probes fresh, nothing else in
    // force, the target known. Any failure refuses the drill untouched.
    let mut drained = BTreeSet::new();
    let mut regions: Option<BTreeSet<String>> = None;
    let mut views = Vec::new();
    for node in &s.nodes {
        let mut check = |name: &str, ok: bool, detail: String| {
            report.prechecks.push(Check {
                node: node.name.clone(),
                check: name.into(),
                ok,
                detail,
            });
        };
        let status = match api.call(node, "GET", "/v1/status", None).await {
            Ok(v) => v,
            Err(e) => {
                check("reachable", false, e);
                continue;
            }
        };
        check(
            "reachable",
            true,
            format!("generation {}", status["generation"]),
        );
        if s.shadow {
            let path = format!("/v1/resolvers?service={}", s.qname);
            let resolvers = match api.call(node, "GET", &path, None).await {
                Ok(v) => Ok(serde_json::from_value(v["resolvers"].clone()).unwrap_or_default()),
                Err(e) => Err(format!("resolver telemetry not readable: {e}")),
            };
            views.push(NodeView {
                node: node.name.clone(),
                health: status["health"].clone(),
                resolvers,
            });
        }
        report.epochs.push(NodeEpoch {
            node: node.name.clone(),
            before: status["health"]["epoch"]["id"].as_str().map(str::to_string),
            after: None,
            changed_at: None,
            after_action: None,
            behind_probers: None,
            poll_interval: None,
        });
        let stale: Vec<String> = status["health"]["vantages"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter(|v| v["fresh"] != true)
                    .map(|v| v["vantage"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default();
        check(
            "probe quorum",
            stale.is_empty(),
            if stale.is_empty() {
                "every vantage fresh".into()
            } else {
                format!("stale vantages: {}", stale.join(", "))
            },
        );
        let overrides = status["health"]["overrides"]
            .as_array()
            .map(|o| {
                o.iter()
                    .map(|x| {
                        format!(
                            "{} {}",
                            x["state"].as_str().unwrap_or("?"),
                            x["target"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        check(
            "no drain or drill in force",
            overrides.is_empty(),
            if overrides.is_empty() {
                "none".into()
            } else {
                overrides.join(", ")
            },
        );
        match api.call(node, "GET", "/v1/resolvers?service=-", None).await {
            Ok(r) => check(
                "no other drill tracking resolvers",
                r["armed"] != true,
                if r["armed"] == true {
                    format!("tracking armed until {}", r["until"])
                } else {
                    "none".into()
                },
            ),
            Err(e) => check("no other drill tracking resolvers", false, e),
        }
        let (addrs, covered) = matched(&status, target);
        check(
            "target known",
            !addrs.is_empty(),
            if addrs.is_empty() {
                format!("no region, pool or endpoint {target:?}")
            } else {
                format!("{} endpoints", addrs.len())
            },
        );
        let room = super::headroom::check(&status["health"]["capacity"], &covered);
        check("headroom", room.ok, room.detail);
        drained.extend(addrs);
        regions = Some(match regions {
            None => covered,
            Some(r) => r.intersection(&covered).cloned().collect(),
        });
    }
    for t in &s.tiers {
        let (ok, detail) = match api.tier(t).await {
            Ok(v) => {
                let n = v["listeners"].as_array().map_or(0, Vec::len);
                (n > 0, format!("{n} listeners"))
            }
            Err(e) => (false, e),
        };
        report.prechecks.push(Check {
            node: t.name.clone(),
            check: "tier reachable".into(),
            ok,
            detail,
        });
    }
    if s.shadow {
        return shadow(s, views, report);
    }
    let failed: Vec<String> = report
        .prechecks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}: {}", c.node, c.check, c.detail))
        .collect();
    if !failed.is_empty() {
        report.reasons = failed;
        report.ended_at = now();
        return report;
    }
    let regions: Vec<String> = regions.unwrap_or_default().into_iter().collect();

    // Resolver telemetry for the whole window.
    let window = humantime::format_duration(s.expiry).to_string();
    for node in &s.nodes {
        if let Err(e) = api
            .call(
                node,
                "POST",
                "/v1/resolvers/track",
                Some(json!({"for": window})),
            )
            .await
        {
            report.resolver_note = Some(format!("{}: telemetry not armed: {e}", node.name));
        }
    }
    report.timeline.push(Event {
        at: now(),
        what: "pre-checks passed; resolver telemetry armed".into(),
    });

    // Baseline: probes and telemetry before the action, so every active
    // resolver is seen with the old answer.
    let mut watch = Watch {
        api: &api,
        samples: Vec::new(),
        tier: Vec::new(),
        tier_samples: Vec::new(),
        tier_read: None,
    };
    let interrupted = sample_for(s, s.baseline, &mut watch, &drained, &mut stop, true).await;
    if interrupted {
        report.samples = watch.samples;
        for node in &s.nodes {
            let _ = api.call(node, "DELETE", "/v1/resolvers/track", None).await;
        }
        report.outcome = Outcome::Interrupted;
        report
            .reasons
            .push("interrupted before the action: nothing changed".into());
        report.ended_at = now();
        return report;
    }
    let t0 = now();
    report.action_at = Some(t0);
    let mut applied = Vec::new();
    let mut action_error = None;
    let mut interrupted = false;
    let mut windows: Vec<(f64, f64, f64)> = Vec::new();
    let mut step_resolvers: Vec<(Option<usize>, Option<usize>)> = Vec::new();
    match &s.action {
        Action::Drain(t) if !s.steps.is_empty() => {
            for (k, &f) in s.steps.iter().enumerate() {
                let start = now();
                let mut body = json!({"target": t, "for": window});
                if f < 1.0 {
                    body["fraction"] = json!(f);
                }
                for (i, node) in s.nodes.iter().enumerate() {
                    match api
                        .call(node, "POST", "/v1/drain", Some(body.clone()))
                        .await
                    {
                        Ok(_) if !applied.contains(&i) => applied.push(i),
                        Ok(_) => {}
                        Err(e) => {
                            action_error = Some(format!("step {}: {}: {e}", k + 1, node.name));
                            break;
                        }
                    }
                }
                report.timeline.push(Event {
                    at: start,
                    what: format!(
                        "step {}: drain {:.0} % of {t}'s client subnets (expires by itself in {window})",
                        k + 1,
                        f * 100.0
                    ),
                });
                if action_error.is_some() {
                    break;
                }
                let last = k + 1 == s.steps.len();
                let hold = if last { s.hold } else { s.step_hold };
                interrupted = sample_for(s, hold, &mut watch, &drained, &mut stop, true).await;
                windows.push((f, start, now()));
                step_resolvers.push(if regions.is_empty() {
                    (None, None)
                } else {
                    resolvers_on(&api, s, &regions).await
                });
                if interrupted {
                    break;
                }
            }
        }
        Action::Drain(t) | Action::ForceDown(t) => {
            for (i, node) in s.nodes.iter().enumerate() {
                let (path, body) = match &s.action {
                    Action::Drain(_) => ("/v1/drain", json!({"target": t, "for": window})),
                    _ => (
                        "/v1/force",
                        json!({"target": t, "state": "down", "for": window}),
                    ),
                };
                match api.call(node, "POST", path, Some(body)).await {
                    Ok(_) => applied.push(i),
                    Err(e) => {
                        action_error = Some(format!("{}: {e}", node.name));
                        break;
                    }
                }
            }
        }
        Action::Command { argv, .. } => {
            action_error = run_command(argv, s.hold).await.err();
        }
    }
    if s.steps.is_empty() {
        report.timeline.push(Event {
            at: t0,
            what: format!("{} {target} (expires by itself in {window})", report.action),
        });
        // Observe until the hold ends (or Ctrl-C, or the action failed).
        interrupted = action_error.is_none()
            && sample_for(s, s.hold, &mut watch, &drained, &mut stop, true).await;
    }
    let observed = now();

    // Each node's epoch under the action, read before restoring.
    report.epochs_agree = read_epochs(&api, s, t0, &mut report.epochs).await;

    // Resolver telemetry, read before restoring.
    let mut lines = Vec::new();
    for node in &s.nodes {
        let path = format!("/v1/resolvers?service={}", s.qname);
        match api.call(node, "GET", &path, None).await {
            Ok(v) => {
                let ls: Vec<ResolverLine> =
                    serde_json::from_value(v["resolvers"].clone()).unwrap_or_default();
                lines.extend(ls.into_iter().map(|l| (node.name.clone(), l)));
            }
            Err(e) => report.resolver_note = Some(format!("{}: {e}", node.name)),
        }
    }

    // Restore: undo what was applied; stop the telemetry.
    for &i in &applied {
        let node = &s.nodes[i];
        let res = match &s.action {
            Action::Drain(t) => {
                api.call(node, "POST", "/v1/undrain", Some(json!({"target": t})))
                    .await
            }
            _ => {
                api.call(
                    node,
                    "POST",
                    "/v1/force",
                    Some(json!({"target": target, "state": "none"})),
                )
                .await
            }
        };
        if let Err(e) = res {
            report.reasons.push(format!(
                "{}: restore failed ({e}); the action expires by itself within {window}",
                node.name
            ));
        }
    }
    for node in &s.nodes {
        let _ = api.call(node, "DELETE", "/v1/resolvers/track", None).await;
    }
    let restored = now();
    report.restored_at = Some(restored);
    report.timeline.push(Event {
        at: restored,
        what: match &s.action {
            Action::Command { .. } => {
                "observation ended (a command is not undone by the drill)".into()
            }
            _ => format!("restored {target} on {} nodes", applied.len()),
        },
    });

    // The tier after the restore: new connections come back.
    if !s.tiers.is_empty() && !interrupted {
        let after = (s.interval * 5).max(Duration::from_secs(2));
        sample_for(s, after, &mut watch, &drained, &mut stop, false).await;
    }
    report.samples = watch.samples;
    report.tier = watch.tier;
    report.tier_samples = watch.tier_samples;
    for l in &mut report.tier {
        l.drained = regions.contains(&l.region);
    }
    analyse::tier_rates(&mut report.tier, &report.tier_samples, t0, restored);

    // The verdict.
    report.probes = analyse::probes(&report.samples, &report.nodes, &report.subnets, t0);
    if !windows.is_empty() {
        let positions: Vec<Option<f64>> = if s.subnets.is_empty() {
            vec![None]
        } else {
            s.subnets
                .iter()
                .map(|n| Some(crate::policy::health::partial_position(n.network())))
                .collect()
        };
        report.steps = analyse::steps(
            &report.samples,
            &report.nodes,
            &report.subnets,
            &positions,
            &windows,
        );
        for (st, (on, moved)) in report.steps.iter_mut().zip(step_resolvers) {
            st.resolvers_on_target = on;
            st.resolvers_moved = moved;
        }
    }
    if regions.is_empty() {
        report.resolver_note.get_or_insert_with(|| {
            format!("{target} covers no whole region: resolver telemetry knows answers by region")
        });
    } else {
        report.resolvers = Some(analyse::resolvers(
            &lines,
            &regions,
            t0,
            observed,
            s.grace.as_secs_f64(),
            s.interval.as_secs_f64(),
        ));
    }
    let within = s.converge_within.as_secs_f64();
    let affected: Vec<&ProbeConvergence> = report.probes.iter().filter(|p| p.affected).collect();
    let whole = s.steps.last().is_none_or(|&f| f >= 1.0);
    // With steps, each is judged against the partial drain's hash, and
    // the time to converge counts from the last step.
    let from_last = windows.last().map_or(0.0, |w| w.1 - t0);
    for st in &report.steps {
        for u in &st.unexpected {
            report
                .reasons
                .push(format!("step {:.0} %: {u}", st.fraction * 100.0));
        }
    }
    for p in affected.iter().filter(|_| whole) {
        match p.converged_after {
            Some(t) if t - from_last.min(t) <= within => {}
            Some(t) => report.reasons.push(format!(
                "{} for {} converged after {:.1} s, more than {within:.1} s",
                p.node,
                p.subnet,
                t - from_last.min(t)
            )),
            None => report.reasons.push(format!(
                "{} for {} still answered from {target} at the end",
                p.node, p.subnet
            )),
        }
    }
    if affected.is_empty() {
        report
            .reasons
            .push(format!("no probe was answered from {target} before the action: nothing moved that could be measured"));
    }
    if report.epochs_agree == Some(false) {
        let ids: Vec<String> = report
            .epochs
            .iter()
            .map(|e| format!("{} {}", e.node, e.after.as_deref().unwrap_or("?")))
            .collect();
        report.reasons.push(format!(
            "the nodes answered under different health epochs at the end of the hold: {}",
            ids.join(", ")
        ));
    }
    if let Some(e) = action_error {
        report.reasons.insert(0, format!("action failed: {e}"));
    }
    report.outcome = if interrupted {
        report.reasons.insert(0, "interrupted".into());
        Outcome::Interrupted
    } else if report.reasons.is_empty() {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    };
    report.ended_at = now();
    report
}

/// Reads every node's epoch into `epochs` (one entry a node, in order,
/// from the pre-checks). Nodes poll the probers at different moments, so
/// while they differ they are read again, for up to two poll intervals.
/// Returns whether they agree (none with fewer than two nodes read).
async fn read_epochs(api: &Api, s: &Scenario, t0: f64, epochs: &mut [NodeEpoch]) -> Option<bool> {
    let mut wait = Duration::from_secs(4);
    let started = tokio::time::Instant::now();
    loop {
        for (node, e) in s.nodes.iter().zip(epochs.iter_mut()) {
            let Ok(st) = api.call(node, "GET", "/v1/status", None).await else {
                e.after = None;
                continue;
            };
            let h = &st["health"];
            e.after = h["epoch"]["id"].as_str().map(str::to_string);
            e.changed_at = h["epoch"]["changed_at"].as_f64();
            e.poll_interval = h["poll_interval"].as_f64();
            e.after_action = e.changed_at.filter(|&c| c >= t0).map(|c| c - t0);
            e.behind_probers = match (e.changed_at, h["epoch"]["since"].as_f64()) {
                (Some(c), Some(v)) if v >= t0 => Some(c - v),
                _ => None,
            };
            if let Some(p) = e.poll_interval {
                wait = Duration::from_secs_f64(2.0 * p);
            }
        }
        let ids: Vec<&Option<String>> = epochs.iter().map(|e| &e.after).collect();
        let agree = if ids.len() < 2 || ids.iter().any(|i| i.is_none()) {
            None
        } else {
            Some(ids.iter().all(|i| *i == ids[0]))
        };
        if agree != Some(false) || started.elapsed() >= wait {
            return agree;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a local command to completion within `limit` (killed past it).
async fn run_command(argv: &[String], limit: Duration) -> Result<(), String> {
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("command {}: {e}", argv[0]))?;
    let end = tokio::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("command exited with {st}")),
            Ok(None) if tokio::time::Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("command did not finish within the hold".into());
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(format!("command: {e}")),
        }
    }
}

fn subnet_names(s: &Scenario) -> Vec<String> {
    if s.subnets.is_empty() {
        vec!["(no ECS)".into()]
    } else {
        s.subnets.iter().map(ToString::to_string).collect()
    }
}

/// Probes (with `dns`) and reads the tier nodes every `interval` for
/// `period`; true when `stop` cut it short.
async fn sample_for<F: Future<Output = ()>>(
    s: &Scenario,
    period: Duration,
    watch: &mut Watch<'_>,
    drained: &BTreeSet<String>,
    stop: &mut std::pin::Pin<&mut F>,
    dns: bool,
) -> bool {
    let end = tokio::time::Instant::now() + period;
    loop {
        let round = tokio::time::Instant::now();
        if dns {
            sample_round(s, &mut watch.samples, drained).await;
        }
        watch.read_tiers(s).await;
        if round >= end {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep_until((round + s.interval).min(end)) => {}
            _ = stop.as_mut() => return true,
        }
    }
}

async fn sample_round(s: &Scenario, samples: &mut Vec<Sample>, drained: &BTreeSet<String>) {
    let subnets: Vec<Option<ipnet::IpNet>> = if s.subnets.is_empty() {
        vec![None]
    } else {
        s.subnets.iter().copied().map(Some).collect()
    };
    for (n, node) in s.nodes.iter().enumerate() {
        for (i, net) in subnets.iter().enumerate() {
            let seen = probe(s, node, *net, drained).await;
            samples.push(Sample {
                node: n,
                subnet: i,
                at: now(),
                seen,
            });
        }
    }
}

/// Tracked resolvers (all nodes) last answered from `regions`, and those
/// moved off them: a step's resolver movement.
async fn resolvers_on(
    api: &Api,
    s: &Scenario,
    regions: &[String],
) -> (Option<usize>, Option<usize>) {
    let (mut on, mut moved) = (0, 0);
    for node in &s.nodes {
        let path = format!("/v1/resolvers?service={}", s.qname);
        let Ok(v) = api.call(node, "GET", &path, None).await else {
            return (None, None);
        };
        let lines: Vec<ResolverLine> =
            serde_json::from_value(v["resolvers"].clone()).unwrap_or_default();
        let inside = |r: &Option<String>| r.as_ref().is_some_and(|r| regions.contains(r));
        for l in &lines {
            if inside(&l.region) {
                on += 1;
            } else if inside(&l.previous_region) {
                moved += 1;
            }
        }
    }
    (Some(on), Some(moved))
}

/// Shadow mode after the pre-checks: simulate, report, set nothing.
fn shadow(s: &Scenario, views: Vec<NodeView>, mut report: Report) -> Report {
    report.outcome = Outcome::Shadow;
    for c in report.prechecks.iter().filter(|c| !c.ok) {
        report.reasons.push(format!(
            "a real run would be refused: {}: {}: {}",
            c.node, c.check, c.detail
        ));
    }
    let qtype = match s.qtype {
        hickory_proto::rr::RecordType::AAAA => crate::sim::QType::Aaaa,
        _ => crate::sim::QType::A,
    };
    match &s.config {
        None => report.reasons.push(
            "shadow mode needs the nodes' config (config = \"geolb.toml\" in the scenario, or --config) to simulate".into(),
        ),
        Some(c) => match super::shadow::simulate(c, &views, &s.action, &s.steps, qtype) {
            Ok(r) => report.shadow = Some(r),
            Err(e) => report.reasons.push(format!("shadow: {e}")),
        },
    }
    report.timeline.push(Event {
        at: now(),
        what: "shadow: simulated; nothing was set on any node".into(),
    });
    report.ended_at = now();
    report
}
