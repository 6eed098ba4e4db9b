//! The drill report as Markdown, for a ticket or a postmortem.

use std::fmt::Write;

use super::analyse::ResolverState;
use super::run::Report;

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |s| format!("{s:.1} s"))
}

/// A Markdown table: a heading line, the header, and one line a row.
fn table(m: &mut String, heading: &str, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let _ = writeln!(
        m,
        "\n## {heading}\n\n| {} |\n|{}",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for r in rows {
        let _ = writeln!(m, "| {} |", r.join(" | "));
    }
}

fn at(t0: f64, t: f64) -> String {
    format!("{:+.1} s", t - t0)
}

/// Each node's health epoch before and after, and whether they agree.
fn epochs(m: &mut String, r: &Report) {
    if r.epochs.is_empty() {
        return;
    }
    let id = |e: &Option<String>| e.as_deref().map_or("—".to_string(), |i| format!("`{i}`"));
    table(
        m,
        "Health epoch",
        &[
            "node",
            "before",
            "at the end",
            "taken after the action",
            "after the probers' verdict",
            "poll interval",
        ],
        r.epochs.iter().map(|e| {
            vec![
                e.node.clone(),
                id(&e.before),
                id(&e.after),
                e.after_action
                    .map_or_else(|| "before it".to_string(), |s| format!("{s:.1} s")),
                secs(e.behind_probers),
                secs(e.poll_interval),
            ]
        }),
    );
    let taken: Vec<f64> = r.epochs.iter().filter_map(|e| e.changed_at).collect();
    let spread = taken.iter().copied().fold(f64::NAN, f64::max)
        - taken.iter().copied().fold(f64::NAN, f64::min);
    let _ = writeln!(
        m,
        "\n{}",
        match r.epochs_agree {
            Some(true) => format!(
                "Every node answered under {} at the end of the hold (taken {:.2} s apart).",
                id(&r.epochs[0].after),
                spread
            ),
            Some(false) => {
                "**The nodes answered under different health epochs at the end of the hold.**"
                    .to_string()
            }
            None if r.epochs.len() < 2 => "One node: nothing to compare.".to_string(),
            None => "A node's epoch could not be read at the end of the hold.".to_string(),
        }
    );
}

fn pct(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

fn opt(v: Option<usize>) -> String {
    v.map_or_else(|| "—".to_string(), |n| n.to_string())
}

fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |r| format!("{r:.1}/s"))
}

/// Each gradual step: the probes that left the target, against the hash.
fn steps(m: &mut String, r: &Report) {
    if r.steps.is_empty() {
        return;
    }
    table(
        m,
        "Gradual steps",
        &[
            "step",
            "from the action",
            "held",
            "probes off the target",
            "expected off it (hash)",
            "answered otherwise",
            "resolvers on the target",
            "resolvers moved off it",
        ],
        r.steps.iter().map(|s| {
            vec![
                pct(s.fraction),
                format!("{:+.1} s", s.at),
                format!("{:.1} s", s.held),
                format!("{} of {} ({})", s.moved, s.probes, pct(s.share_moved)),
                s.expected_moved.to_string(),
                if s.unexpected.is_empty() {
                    "none".into()
                } else {
                    s.unexpected.join("; ")
                },
                opt(s.resolvers_on_target),
                opt(s.resolvers_moved),
            ]
        }),
    );
}

/// The tier connection drain: each listener's new-connection rate.
fn tier(m: &mut String, r: &Report) {
    if r.tier.is_empty() {
        return;
    }
    table(
        m,
        "Tier connection drain",
        &[
            "tier",
            "listener",
            "region",
            "bind",
            "drained",
            "new conn. before",
            "during",
            "after the restore",
            "reached zero",
        ],
        r.tier.iter().map(|l| {
            vec![
                l.tier.clone(),
                l.listener.clone(),
                l.region.clone(),
                l.bind.clone(),
                (if l.drained { "yes" } else { "no" }).to_string(),
                rate(l.before),
                rate(l.during),
                rate(l.after),
                match l.zero_after {
                    _ if !l.drained => "— (not drained)".into(),
                    Some(t) => format!("{t:.1} s after the action"),
                    None => "**did not reach zero**".into(),
                },
            ]
        }),
    );
}

/// Shadow mode: the shares per region now and under each step, and the
/// resolvers that would move.
fn shadow(m: &mut String, r: &Report) {
    let Some(sh) = &r.shadow else {
        return;
    };
    let _ = writeln!(
        m,
        "\n## Shadow: what would change\n\nSimulated with {} from each node's live health; nothing was set on any node.",
        sh.config
    );
    for svc in &sh.services {
        let mut header = vec!["region".to_string(), format!("now ({})", svc.live)];
        header.extend(
            svc.steps
                .iter()
                .map(|s| format!("{} ({})", pct(s.fraction), s.health)),
        );
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut regions: Vec<&str> = svc.before.iter().map(|b| b.region.as_str()).collect();
        for st in &svc.steps {
            for x in &st.regions {
                if !regions.contains(&x.region.as_str()) {
                    regions.push(&x.region);
                }
            }
        }
        let share = |list: &[super::shadow::RegionShare], name: &str| {
            list.iter()
                .find(|x| x.region == name)
                .map_or("0 % / 0 %".to_string(), |x| {
                    format!("{:.1} % / {:.1} %", x.v4_percent, x.v6_percent)
                })
        };
        table(
            m,
            &format!(
                "{} on {}: share of IPv4 / IPv6 address space",
                svc.service, svc.node
            ),
            &header,
            regions.iter().map(|name| {
                let mut row = vec![name.to_string(), share(&svc.before, name)];
                row.extend(svc.steps.iter().map(|st| share(&st.regions, name)));
                row
            }),
        );
        for st in &svc.steps {
            let _ = writeln!(
                m,
                "- at {}: {:.1} % of IPv4 and {:.1} % of IPv6 address space would change region",
                pct(st.fraction),
                st.moved_v4_percent,
                st.moved_v6_percent
            );
        }
    }
    if !sh.resolvers.is_empty() {
        let moving = sh.resolvers.iter().filter(|x| x.would_move).count();
        let _ = writeln!(
            m,
            "\n{moving} of {} tracked resolvers would move (each resolver's address through the model).",
            sh.resolvers.len()
        );
        table(
            m,
            "Tracked resolvers",
            &[
                "node",
                "resolver",
                "last answered",
                "model now",
                "under the action",
                "would move",
            ],
            sh.resolvers.iter().map(|x| {
                vec![
                    x.node.clone(),
                    x.resolver.to_string(),
                    x.answered.clone().unwrap_or_else(|| "—".into()),
                    x.now.clone(),
                    x.after.clone(),
                    (if x.would_move { "yes" } else { "no" }).to_string(),
                ]
            }),
        );
    }
    for n in &sh.resolver_notes {
        let _ = writeln!(m, "- {n}");
    }
}

pub fn render(r: &Report) -> String {
    let mut m = String::new();
    let t0 = r.action_at.unwrap_or(r.started_at);
    let _ = writeln!(m, "# Drill: {}\n", r.name);
    let _ = writeln!(
        m,
        "**Outcome: {:?}** — {} `{}` on {} (expiry {:.0} s; answers expected off the target within {:.1} s)\n",
        r.outcome,
        r.action,
        r.target,
        r.nodes.join(", "),
        r.expiry_secs,
        r.converge_within_secs
    );
    for why in &r.reasons {
        let _ = writeln!(m, "- {why}");
    }
    table(
        &mut m,
        "Pre-checks",
        &["node", "check", "ok", "detail"],
        r.prechecks.iter().map(|c| {
            vec![
                c.node.clone(),
                c.check.clone(),
                (if c.ok { "yes" } else { "**no**" }).to_string(),
                c.detail.clone(),
            ]
        }),
    );
    table(
        &mut m,
        "Timeline (from the action)",
        &["when", "what"],
        r.timeline
            .iter()
            .map(|e| vec![at(t0, e.at), e.what.clone()]),
    );
    if !r.probes.is_empty() {
        table(
            &mut m,
            "Answers per node and client subnet",
            &[
                "node",
                "subnet",
                "was on the target",
                "off it after",
                "probes",
            ],
            r.probes.iter().map(|p| {
                vec![
                    p.node.clone(),
                    p.subnet.clone(),
                    (if p.affected { "yes" } else { "no" }).to_string(),
                    if p.affected {
                        secs(p.converged_after)
                    } else {
                        "—".into()
                    },
                    p.samples.to_string(),
                ]
            }),
        );
    }
    steps(&mut m, r);
    tier(&mut m, r);
    shadow(&mut m, r);
    if r.outcome == super::run::Outcome::Shadow {
        return m;
    }
    epochs(&mut m, r);
    let _ = writeln!(m, "\n## Resolver convergence\n");
    match &r.resolvers {
        None => {
            let _ = writeln!(
                m,
                "{}",
                r.resolver_note
                    .as_deref()
                    .unwrap_or("no resolver telemetry")
            );
        }
        Some(s) => {
            let _ = writeln!(
                m,
                "{} resolvers had the target's answer: {} moved ({} late), {} still hold it within its TTL, {} never asked again after it expired. \
                 Time to move: p50 {}, p90 {}, p99 {} against a TTL budget of {} s. At the end {:.0} % of them ({:.0} % of their queries) were still on the old answer.\n",
                s.affected,
                s.moved,
                s.late,
                s.holding,
                s.not_reasked,
                secs(s.p50),
                secs(s.p90),
                secs(s.p99),
                s.ttl_budget,
                s.share_old * 100.0,
                s.share_old_queries * 100.0
            );
            let named: Vec<_> = s
                .resolvers
                .iter()
                .filter(|o| {
                    matches!(
                        o.state,
                        ResolverState::NotReasked { .. } | ResolverState::Moved { late: true, .. }
                    )
                })
                .collect();
            if !named.is_empty() {
                let _ = writeln!(
                    m,
                    "| node | resolver | TTL | what | queries |\n|---|---|---|---|---|"
                );
                for o in named {
                    let what = match o.state {
                        ResolverState::NotReasked { expired_for } => {
                            format!("not asked again {expired_for:.1} s after its answer expired")
                        }
                        ResolverState::Moved { gap, .. } => {
                            format!("re-asked {gap:.1} s after its last old answer")
                        }
                        ResolverState::Holding { .. } => String::new(),
                    };
                    let _ = writeln!(
                        m,
                        "| {} | {} | {} | {what} | {} |",
                        o.node, o.resolver, o.ttl, o.queries
                    );
                }
            }
        }
    }
    m
}
