//! The drill's timeline as an SVG picture: one lane per node and client
//! subnet, coloured by what each probe saw (the target's answer, another
//! answer, none), the timeline's events as marked instants, and the share
//! of affected resolvers still holding the old answer as a curve beneath.
//! Plain text built from the report alone: the same report gives the same
//! bytes.

use std::fmt::Write;

use super::analyse::{Sample, Seen};
use super::run::Report;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 230.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 56.0;
const LANE: f64 = 18.0;
const GAP: f64 = 4.0;
const CURVE: f64 = 120.0;

const OLD: &str = "#d7301f";
const NEW: &str = "#2b8cbe";
const NOTHING: &str = "#bdbdbd";

/// Escapes text for an SVG text node or attribute.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn colour(s: Seen) -> &'static str {
    match s {
        Seen::Old => OLD,
        Seen::New => NEW,
        Seen::Nothing => NOTHING,
    }
}

/// The report's timeline as an SVG document.
pub fn render(r: &Report) -> String {
    let t0 = r.action_at.unwrap_or(r.started_at);
    let start = r.started_at.min(t0);
    let end = r.ended_at.max(start + 1.0);
    let span = end - start;
    let plot = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + ((t - start) / span).clamp(0.0, 1.0) * plot;
    let lanes = r.nodes.len() * r.subnets.len();
    let lanes_bottom = TOP + lanes as f64 * (LANE + GAP);
    let curve_top = lanes_bottom + 40.0;
    let tier_h = if r.tier.is_empty() { 0.0 } else { CURVE + 40.0 };
    let height = curve_top + CURVE + 60.0 + tier_h;
    // Grid and event lines run down through the tier panel.
    let bottom = curve_top + CURVE + tier_h;
    let mut m = String::new();
    let _ = writeln!(
        m,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        m,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="15" font-weight="bold">Drill: {} — {:?}</text>"#,
        esc(&r.name),
        r.outcome
    );
    let _ = writeln!(
        m,
        r#"<text x="10" y="38">{} {} on {}; seconds from the action</text>"#,
        esc(&r.action),
        esc(&r.target),
        esc(&r.nodes.join(", "))
    );
    // Time axis: a tick every "nice" step, labelled from the action.
    let step = nice_step(span / 8.0);
    let mut t = ((start - t0) / step).ceil() * step;
    while t0 + t <= end {
        let px = x(t0 + t);
        let _ = writeln!(
            m,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{bottom:.1}" stroke="#eeeeee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" fill="#555555">{t:+.0}</text>"##,
            curve_top + CURVE + 16.0
        );
        t += step;
    }
    // One lane per node and subnet: each probe colours the time up to the
    // next probe of the lane.
    for (n, node) in r.nodes.iter().enumerate() {
        for (s, subnet) in r.subnets.iter().enumerate() {
            let i = n * r.subnets.len() + s;
            let y = TOP + i as f64 * (LANE + GAP);
            let _ = writeln!(
                m,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{} {}</text>"#,
                LEFT - 6.0,
                y + LANE - 5.0,
                esc(node),
                esc(subnet)
            );
            let mine: Vec<&Sample> = r
                .samples
                .iter()
                .filter(|p| p.node == n && p.subnet == s)
                .collect();
            for (k, p) in mine.iter().enumerate() {
                let until = mine.get(k + 1).map_or(end, |q| q.at);
                let (a, b) = (x(p.at), x(until));
                let _ = writeln!(
                    m,
                    r#"<rect x="{a:.1}" y="{y:.1}" width="{:.1}" height="{LANE}" fill="{}"/>"#,
                    (b - a).max(0.5),
                    colour(p.seen)
                );
            }
        }
    }
    // Events: a dashed line across the lanes and the curve.
    for (k, e) in r.timeline.iter().enumerate() {
        let px = x(e.at);
        let _ = writeln!(
            m,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#333333" stroke-dasharray="3,3"><title>{:+.1} s: {}</title></line><text x="{:.1}" y="{:.1}" font-size="10" fill="#333333">{}</text>"##,
            TOP - 6.0,
            bottom,
            e.at - t0,
            esc(&e.what),
            px + 2.0,
            TOP - 8.0 - (k % 2) as f64 * 10.0,
            k + 1
        );
    }
    // The share of affected resolvers still on the old answer.
    let _ = writeln!(
        m,
        r##"<rect x="{LEFT}" y="{curve_top:.1}" width="{plot:.1}" height="{CURVE}" fill="none" stroke="#999999"/><text x="{:.1}" y="{:.1}" text-anchor="end">resolvers on the</text><text x="{:.1}" y="{:.1}" text-anchor="end">old answer (100 %)</text><text x="{:.1}" y="{:.1}" text-anchor="end">0 %</text>"##,
        LEFT - 6.0,
        curve_top + 12.0,
        LEFT - 6.0,
        curve_top + 26.0,
        LEFT - 6.0,
        curve_top + CURVE
    );
    match &r.resolvers {
        Some(sum) if !sum.over_time.is_empty() => {
            let pts: Vec<String> = sum
                .over_time
                .iter()
                .map(|&(dt, share)| {
                    format!(
                        "{:.1},{:.1}",
                        x(t0 + dt),
                        curve_top + CURVE * (1.0 - share.clamp(0.0, 1.0))
                    )
                })
                .collect();
            let _ = writeln!(
                m,
                r#"<polyline points="{}" fill="none" stroke="{OLD}" stroke-width="2"/>"#,
                pts.join(" ")
            );
        }
        _ => {
            let _ = writeln!(
                m,
                r##"<text x="{:.1}" y="{:.1}" fill="#777777">{}</text>"##,
                LEFT + 8.0,
                curve_top + CURVE / 2.0,
                esc(r
                    .resolver_note
                    .as_deref()
                    .unwrap_or("no resolver telemetry"))
            );
        }
    }
    // The tier connection drain: each listener's new connections per
    // second, the drained ones in the target's colour.
    if !r.tier.is_empty() {
        let top = curve_top + CURVE + 40.0;
        let max = r
            .tier
            .iter()
            .flat_map(|l| l.over_time.iter().map(|p| p.1))
            .fold(0.0f64, f64::max)
            .max(1.0);
        let _ = writeln!(
            m,
            r##"<rect x="{LEFT}" y="{top:.1}" width="{plot:.1}" height="{CURVE}" fill="none" stroke="#999999"/><text x="{:.1}" y="{:.1}" text-anchor="end">tier new conn./s</text><text x="{:.1}" y="{:.1}" text-anchor="end">{max:.1}/s</text><text x="{:.1}" y="{:.1}" text-anchor="end">0</text>"##,
            LEFT - 6.0,
            top + 12.0,
            LEFT - 6.0,
            top + 26.0,
            LEFT - 6.0,
            top + CURVE
        );
        for (i, l) in r.tier.iter().enumerate() {
            let pts: Vec<String> = l
                .over_time
                .iter()
                .map(|&(dt, v)| {
                    format!(
                        "{:.1},{:.1}",
                        x(t0 + dt),
                        top + CURVE * (1.0 - (v / max).clamp(0.0, 1.0))
                    )
                })
                .collect();
            let (c, dash) = if l.drained {
                (OLD, "")
            } else {
                (NEW, r#" stroke-dasharray="6,3""#)
            };
            let _ = writeln!(
                m,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="1.5"{dash}><title>{} {} ({})</title></polyline><text x="{:.1}" y="{:.1}" font-size="10" fill="{c}">{} {}</text>"#,
                pts.join(" "),
                esc(&l.tier),
                esc(&l.listener),
                esc(&l.region),
                LEFT + 6.0,
                top + 14.0 + i as f64 * 12.0,
                esc(&l.listener),
                match l.zero_after {
                    _ if !l.drained => "(not drained)".into(),
                    Some(t) => format!("zero {t:.1} s after the action"),
                    None => "did not reach zero".into(),
                }
            );
        }
    }
    // Legend and the numbered events.
    let ly = curve_top + CURVE + 36.0 + tier_h;
    let mut lx = LEFT;
    for (c, label) in [
        (OLD, "the target's answer"),
        (NEW, "another answer"),
        (NOTHING, "no answer"),
    ] {
        let _ = writeln!(
            m,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{c}"/><text x="{:.1}" y="{ly:.1}">{label}</text>"#,
            ly - 10.0,
            lx + 16.0
        );
        lx += 170.0;
    }
    for (k, e) in r.timeline.iter().enumerate() {
        let _ = writeln!(
            m,
            r##"<text x="10" y="{:.1}" font-size="10" fill="#333333">{}: {:+.1} s {}</text>"##,
            ly + 16.0 + k as f64 * 12.0,
            k + 1,
            e.at - t0,
            esc(&e.what)
        );
    }
    m.push_str("</svg>\n");
    // The event list may run past the height computed above: grow to fit.
    let needed = ly + 24.0 + r.timeline.len() as f64 * 12.0;
    if needed > height {
        m = m.replacen(
            &format!(r#"height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}""#),
            &format!(r#"height="{needed:.0}" viewBox="0 0 {WIDTH} {needed:.0}""#),
            1,
        );
    }
    m
}

/// A tick step of 1, 2 or 5 × 10^k at or above `raw` seconds.
fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(0.1);
    let mag = 10f64.powf(raw.log10().floor());
    for f in [1.0, 2.0, 5.0, 10.0] {
        if f * mag >= raw {
            return f * mag;
        }
    }
    10.0 * mag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::run::{Event, Outcome};

    fn report() -> Report {
        let samples = (0..20)
            .map(|i| Sample {
                node: i % 2,
                subnet: 0,
                at: 1000.0 + i as f64,
                seen: if i < 12 { Seen::Old } else { Seen::New },
            })
            .collect();
        Report {
            name: "evacuate <eu> & co".into(),
            outcome: Outcome::Succeeded,
            reasons: vec![],
            action: "drain".into(),
            target: "eu".into(),
            nodes: vec!["127.0.0.1:1".into(), "127.0.0.2:1".into()],
            subnets: vec!["192.0.2.0/24".into()],
            started_at: 1000.0,
            action_at: Some(1010.0),
            ended_at: 1020.0,
            expiry_secs: 3600.0,
            converge_within_secs: 30.0,
            prechecks: vec![],
            timeline: vec![
                Event {
                    at: 1010.0,
                    what: "drain eu".into(),
                },
                Event {
                    at: 1020.0,
                    what: "restored".into(),
                },
            ],
            probes: vec![],
            resolvers: None,
            resolver_note: Some("no telemetry".into()),
            epochs: vec![],
            epochs_agree: None,
            samples,
            steps: vec![],
            restored_at: Some(1020.0),
            tier: vec![],
            tier_samples: vec![],
            shadow: None,
        }
    }

    #[test]
    fn the_timeline_draws_every_probe_and_event_deterministically() {
        let r = report();
        let svg = render(&r);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert_eq!(svg, render(&r), "same report, same bytes");
        // One rectangle per probe, coloured by what it saw.
        assert_eq!(svg.matches(&format!(r#"fill="{OLD}"/>"#)).count(), 12 + 1);
        assert_eq!(svg.matches(&format!(r#"fill="{NEW}"/>"#)).count(), 8 + 1);
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
        assert!(svg.contains("evacuate &lt;eu&gt; &amp; co"), "escaped");
        assert!(svg.contains("no telemetry"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(!svg.contains("tier new conn"), "no tier named, no panel");
    }

    #[test]
    fn the_tier_panel_draws_each_listener_rate() {
        let mut r = report();
        r.tier.push(crate::drill::analyse::ListenerRate {
            tier: "tier1".into(),
            listener: "eu-tcp".into(),
            region: "eu".into(),
            bind: "127.0.1.1:9000".into(),
            drained: true,
            before: Some(4.0),
            during: Some(0.5),
            after: Some(4.0),
            zero_after: Some(1.5),
            over_time: vec![
                (-2.0, 4.0),
                (-1.0, 4.0),
                (1.0, 1.0),
                (2.0, 0.0),
                (11.0, 4.0),
            ],
        });
        let svg = render(&r);
        assert!(svg.contains("tier new conn./s") && svg.contains("eu-tcp zero 1.5 s"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn ticks_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.5), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(130.0), 200.0);
    }
}
