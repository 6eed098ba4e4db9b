//! The drill report as Markdown, for a ticket or a postmortem.

use std::fmt::Write;

use super::analyse::ResolverState;
use super::run::Report;

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |s| format!("{s:.1} s"))
}

fn at(t0: f64, t: f64) -> String {
    format!("{:+.1} s", t - t0)
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
    let _ = writeln!(
        m,
        "\n## Pre-checks\n\n| node | check | ok | detail |\n|---|---|---|---|"
    );
    for c in &r.prechecks {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} |",
            c.node,
            c.check,
            if c.ok { "yes" } else { "**no**" },
            c.detail
        );
    }
    let _ = writeln!(
        m,
        "\n## Timeline (from the action)\n\n| when | what |\n|---|---|"
    );
    for e in &r.timeline {
        let _ = writeln!(m, "| {} | {} |", at(t0, e.at), e.what);
    }
    if !r.probes.is_empty() {
        let _ = writeln!(
            m,
            "\n## Answers per node and client subnet\n\n| node | subnet | was on the target | off it after | probes |\n|---|---|---|---|---|"
        );
        for p in &r.probes {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                p.node,
                p.subnet,
                if p.affected { "yes" } else { "no" },
                if p.affected {
                    secs(p.converged_after)
                } else {
                    "—".into()
                },
                p.samples
            );
        }
    }
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
