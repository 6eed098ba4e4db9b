//! Properties of the steering steps: weighted selection converges to its
//! weights, sticky answers survive unrelated changes, and every chain the
//! validator accepts answers every location while everything is up.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::diag::Diagnostic;
use crate::geo::Location;
use crate::policy::{
    decide, AdminState, Answer, Client, Family, GeoMatch, HealthView, Scratch, Trace, VantageRtt,
};

/// Compiles a config (with a placeholder zone file) into a topology and the
/// services of its only zone.
fn compile_cfg(cfg: &str) -> Result<(Topology, Vec<Service>), Vec<Diagnostic>> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("z.zone"), "").expect("write");
    let config = Config::parse(&dir.path().join("g.toml"), cfg).map_err(|e| e.0)?;
    let mut diags = Vec::new();
    let Compiled {
        topology: topo,
        zones,
        ..
    } = compile(&config, &mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    let svcs = zones.into_iter().flatten().map(|z| z.service).collect();
    Ok((topo, svcs))
}

fn weighted_cfg(weights: &[u32], mode: &str) -> String {
    let eps: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{{ address = \"10.0.0.{}\", weight = {w} }}", i + 1))
        .collect();
    format!(
        "[regions.r]\nlocation = [0.0, 0.0]\n[pools.p]\nregion = \"r\"\nendpoints = [{}]\n\
         [zones.\"example.com\"]\nfile = \"z.zone\"\n[zones.\"example.com\".services.www]\n\
         pools = [\"p\"]\nchain = [\"weighted\"]\nweighted = {{ mode = \"{mode}\" }}\n",
        eps.join(", ")
    )
}

fn client(addr: IpAddr) -> Client {
    Client {
        addr,
        loc: Location::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn weighted_random_converges_to_the_weights(weights in prop::collection::vec(1u32..10, 2..6), seed in any::<u64>()) {
        let (topo, svcs) = compile_cfg(&weighted_cfg(&weights, "random")).expect("valid");
        let svc = &svcs[0];
        let health = HealthView::all_up(topo.endpoints.len());
        let mut sc = Scratch::seeded(seed);
        let n = 40_000;
        let mut counts = vec![0u32; weights.len()];
        let c = client(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        for _ in 0..n {
            let d = decide(&topo, svc, &c, Family::V4, &health, &mut sc, None);
            prop_assert_eq!(d.answer, Answer::Endpoints);
            prop_assert_eq!(sc.out.len(), 1);
            counts[sc.out[0] as usize] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            let want = *w as f64 / total as f64;
            let got = counts[i] as f64 / n as f64;
            prop_assert!((want - got).abs() < 0.02, "endpoint {} weight {} share {} want {}", i, w, got, want);
        }
    }

    #[test]
    fn sticky_answers_survive_unrelated_changes(
        weights in prop::collection::vec(1u32..10, 3..8),
        subnets in prop::collection::vec(any::<u32>(), 1..40),
        victim in any::<prop::sample::Index>(),
    ) {
        let (topo, svcs) = compile_cfg(&weighted_cfg(&weights, "sticky")).expect("valid");
        let svc = &svcs[0];
        let mut health = HealthView::all_up(topo.endpoints.len());
        let mut sc = Scratch::seeded(1);
        let before: Vec<u32> = subnets
            .iter()
            .map(|&s| {
                decide(&topo, svc, &client(IpAddr::V4(Ipv4Addr::from(s))), Family::V4, &health, &mut sc, None);
                sc.out[0]
            })
            .collect();
        // Same subnet, different host: same answer.
        for (&s, &b) in subnets.iter().zip(&before) {
            let other = IpAddr::V4(Ipv4Addr::from((s & 0xffff_ff00) | 0x7f));
            decide(&topo, svc, &client(other), Family::V4, &health, &mut sc, None);
            prop_assert_eq!(sc.out[0], b);
        }
        // Take one endpoint out: only clients that were on it move.
        let gone = victim.index(weights.len()) as u32;
        health.endpoints[gone as usize].admin = AdminState::Drain;
        let mut sc2 = Scratch::seeded(2);
        for (&s, &b) in subnets.iter().zip(&before) {
            let svc_healthy = Service { steps: vec![Step::Healthy(crate::policy::steps::healthy::Healthy), svc.steps[0].clone()], ..svc.clone() };
            decide(&topo, &svc_healthy, &client(IpAddr::V4(Ipv4Addr::from(s))), Family::V4, &health, &mut sc2, None);
            if b != gone {
                prop_assert_eq!(sc2.out[0], b, "a client not on the removed endpoint moved");
            } else {
                prop_assert_ne!(sc2.out[0], gone);
            }
        }
    }

    #[test]
    fn every_accepted_chain_answers_every_location(
        steps in prop::collection::vec(prop::sample::select(vec!["healthy", "geo", "nearest", "latency", "failover", "weighted", "first_n"]), 1..6),
        continent in prop::sample::select(vec!["EU", "NA", "AS", "SA", "AF", "OC", "AN", ""]),
        country in prop::sample::select(vec!["DE", "US", "JP", "BR", "GB", ""]),
        lat in -90.0f64..90.0,
        lon in -180.0f64..180.0,
        has_coords in any::<bool>(),
        asn in prop::sample::select(vec![0u32, 64500, 64501]),
        addr in any::<u32>(),
        v6 in any::<bool>(),
    ) {
        let chain: Vec<String> = steps.iter().map(|s| format!("\"{s}\"")).collect();
        let cfg = format!(r#"
[regions.eu]
location = [50.0, 8.0]
[regions.us]
location = [39.0, -77.0]
[regions.ap]
location = [35.0, 139.0]
[pools.eu-p]
region = "eu"
endpoints = [{{ address = "10.1.0.1" }}, {{ address = "2001:db8:1::1" }}]
[pools.us-p]
region = "us"
endpoints = [{{ address = "10.2.0.1", weight = 0 }}, {{ address = "10.2.0.2" }}, {{ address = "2001:db8:2::1" }}]
[pools.ap-p]
region = "ap"
endpoints = [{{ address = "10.3.0.1" }}, {{ address = "2001:db8:3::1" }}]
[zones."example.com"]
file = "z.zone"
[zones."example.com".services.www]
pools = ["eu-p", "us-p", "ap-p"]
chain = [{}]
first_n = 2
nearest = {{ limit = 1 }}
weighted = {{ count = 2 }}
latency = {{ continent = {{ EU = {{ eu = 10 }} }}, country = {{ JP = {{ ap = 5, us = 100 }} }} }}
geo = {{ continent = {{ EU = ["eu"], AS = ["ap", "us"] }}, country = {{ BR = ["us-p"] }}, asn = {{ "64500" = ["ap"] }}, cidr = {{ "10.0.0.0/8" = ["eu"] }} }}
"#, chain.join(", "));
        let endpoint_step = steps.iter().position(|s| matches!(*s, "weighted" | "first_n"));
        let group_after = endpoint_step.is_some_and(|i| steps[i..].iter().any(|s| matches!(*s, "geo" | "nearest" | "latency" | "failover")));
        let compiled = compile_cfg(&cfg);
        // The only chains rejected here are the misordered ones.
        prop_assert_eq!(compiled.is_err(), group_after, "{:?}: {:?}", steps, compiled.as_ref().err());
        let Ok((topo, svcs)) = compiled else { return Ok(()) };
        let svc = &svcs[0];
        let mut loc = Location::default();
        if !continent.is_empty() { loc.continent.copy_from_slice(continent.as_bytes()); }
        if !country.is_empty() { loc.country.copy_from_slice(country.as_bytes()); }
        loc.coords = has_coords.then_some((lat, lon));
        loc.asn = asn;
        loc.prefix = 24;
        let c = Client { addr: IpAddr::V4(Ipv4Addr::from(addr)), loc };
        let health = HealthView::all_up(topo.endpoints.len());
        let mut sc = Scratch::seeded(addr as u64);
        for fam in [Family::V4, Family::V6] {
            let fam = if v6 { fam } else { Family::V4 };
            let d = decide(&topo, svc, &c, fam, &health, &mut sc, None);
            prop_assert_eq!(d.answer, Answer::Endpoints, "{:?} {:?}", steps, fam);
            prop_assert!(!sc.out.is_empty());
            // The traced run gives the same endpoints as the untraced one.
            let mut t = Trace::default();
            let mut sc_a = Scratch::seeded(9);
            let mut sc_b = Scratch::seeded(9);
            decide(&topo, svc, &c, fam, &health, &mut sc_a, None);
            decide(&topo, svc, &c, fam, &health, &mut sc_b, Some(&mut t));
            prop_assert_eq!(&sc_a.out, &sc_b.out);
            prop_assert_eq!(t.steps.len(), steps.len());
        }
    }
}

#[test]
fn validation_rejects_a_geo_list_without_an_address_family_the_service_serves() {
    let cfg = r#"
[regions.eu]
location = [50.0, 8.0]
[regions.us]
location = [39.0, -77.0]
[pools.eu-p]
region = "eu"
endpoints = [{ address = "2001:db8::1" }]
[pools.us-p]
region = "us"
endpoints = [{ address = "10.0.0.1" }, { address = "2001:db8::2" }]
[zones."example.com"]
file = "z.zone"
[zones."example.com".services.www]
pools = ["eu-p", "us-p"]
chain = ["geo"]
geo = { default = ["us"], continent = { EU = ["eu"] } }
"#;
    let err = compile_cfg(cfg).expect_err("rejected");
    assert!(
        err.iter().any(|d| d
            .message
            .contains("continent EU would get no IPv4 (A) answer")),
        "{err:?}"
    );
}

#[test]
fn validation_rejects_cname_loops() {
    let cfg = r#"
[regions.r]
location = [0.0, 0.0]
[pools.a]
region = "r"
endpoints = [{ cname = "b.example.com." }]
[pools.b]
region = "r"
endpoints = [{ cname = "a.example.com." }]
[zones."example.com"]
file = "z.zone"
[zones."example.com".services.a]
pools = ["a"]
chain = ["failover"]
[zones."example.com".services.b]
pools = ["b"]
chain = ["failover"]
"#;
    let err = compile_cfg(cfg).expect_err("rejected");
    assert!(
        err.iter().any(|d| d.message.contains("CNAME loop")),
        "{err:?}"
    );
}

#[test]
fn failover_respects_min_healthy_and_all_down_fails_open() {
    let cfg = r#"
[regions.a]
location = [0.0, 0.0]
[regions.b]
location = [1.0, 1.0]
[pools.pa]
region = "a"
min_healthy = 2
endpoints = [{ address = "10.0.0.1" }, { address = "10.0.0.2" }]
[pools.pb]
region = "b"
endpoints = [{ address = "10.0.1.1" }]
[zones."example.com"]
file = "z.zone"
[zones."example.com".services.www]
pools = ["pa", "pb"]
chain = ["healthy", "failover"]
"#;
    let (topo, svcs) = compile_cfg(cfg).expect("valid");
    let svc = &svcs[0];
    let mut health = HealthView::all_up(topo.endpoints.len());
    let mut sc = Scratch::seeded(3);
    let c = client(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    decide(&topo, svc, &c, Family::V4, &health, &mut sc, None);
    assert_eq!(sc.out, [0, 1]);
    // One of pa's two down: below min_healthy, so pb takes over.
    health.endpoints[0].checked_up = false;
    decide(&topo, svc, &c, Family::V4, &health, &mut sc, None);
    assert_eq!(sc.out, [2]);
    // Everything down: fail open answers as if all were up.
    for h in health.endpoints.iter_mut() {
        h.checked_up = false;
    }
    let mut t = Trace::default();
    let d = decide(&topo, svc, &c, Family::V4, &health, &mut sc, Some(&mut t));
    assert_eq!(d.answer, Answer::Endpoints);
    assert_eq!(sc.out, [0, 1]);
    assert!(t.notes.iter().any(|n| n.contains("failing open")));
    // Forced up wins over checks.
    health.endpoints[2].admin = AdminState::ForceUp;
    decide(&topo, svc, &c, Family::V4, &health, &mut sc, None);
    assert_eq!(sc.out, [2]);
}

#[test]
fn geo_scope_counts_every_stage_tried() {
    let mut m = GeoMap::default();
    m.lists.push(vec![0]);
    let mut loc = Location {
        prefix: 16,
        asn_prefix: 12,
        ..Location::default()
    };
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    // Only the City database: its network.
    assert_eq!(m.scope(v4, GeoMatch::Continent, &loc), 16);
    // An ASN table makes the ASN network count too (but not for a default
    // reached without an ASN table).
    m.asn.insert(64500, 0);
    loc.asn_prefix = 20;
    assert_eq!(m.scope(v4, GeoMatch::Continent, &loc), 20);
    assert_eq!(m.scope(v4, GeoMatch::Asn(64500), &loc), 20);
    // CIDR entries up to /25: nothing coarser than /25 can be promised.
    m.cidr_v4.push((25, FxHashMap::default()));
    assert_eq!(m.scope(v4, GeoMatch::Cidr(8), &loc), 25);
    assert_eq!(m.scope(v4, GeoMatch::Default, &loc), 25);
    // IPv6 clients are not affected by IPv4 CIDR entries.
    let v6 = IpAddr::V6("2001:db8::1".parse().expect("ip"));
    assert_eq!(m.scope(v6, GeoMatch::Continent, &loc), 20);
}

#[test]
fn latency_by_probes_uses_the_vantage_nearest_the_client() {
    let cfg = r#"
[regions.eu]
location = [50.0, 8.0]
[regions.us]
location = [39.0, -77.0]
[pools.eu-p]
region = "eu"
endpoints = [{ address = "10.1.0.1" }]
[pools.us-p]
region = "us"
endpoints = [{ address = "10.2.0.1" }]
[zones."example.com"]
file = "z.zone"
[zones."example.com".services.www]
pools = ["eu-p", "us-p"]
chain = ["latency", "failover"]
latency = { probes = true, default = { eu = 1 } }
"#;
    let (topo, svcs) = compile_cfg(cfg).expect("valid");
    let svc = &svcs[0];
    let mut health = HealthView::all_up(topo.endpoints.len());
    // Seen from Frankfurt eu is close; seen from Virginia us is close.
    health.rtt.push(VantageRtt {
        name: "fra".into(),
        coords: Some((50.1, 8.7)),
        rtt_ms: vec![2.0, 90.0],
    });
    health.rtt.push(VantageRtt {
        name: "iad".into(),
        coords: Some((38.9, -77.4)),
        rtt_ms: vec![85.0, 3.0],
    });
    let mut sc = Scratch::seeded(1);
    let at = |lat: f64, lon: f64| Client {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        loc: Location {
            coords: Some((lat, lon)),
            prefix: 24,
            ..Location::default()
        },
    };
    decide(
        &topo,
        svc,
        &at(48.8, 2.3),
        Family::V4,
        &health,
        &mut sc,
        None,
    );
    assert_eq!(sc.out, [0], "Paris: nearest vantage fra, eu fastest");
    let mut t = Trace::default();
    decide(
        &topo,
        svc,
        &at(40.7, -74.0),
        Family::V4,
        &health,
        &mut sc,
        Some(&mut t),
    );
    assert_eq!(sc.out, [1], "New York: nearest vantage iad, us fastest");
    assert!(
        t.steps[0].detail.contains("vantage iad"),
        "{:?}",
        t.steps[0]
    );
    // No coordinates: the table's default row decides (eu).
    let nowhere = Client {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        loc: Location::default(),
    };
    decide(&topo, svc, &nowhere, Family::V4, &health, &mut sc, None);
    assert_eq!(sc.out, [0]);
}

#[test]
fn a_partial_drain_moves_its_share_of_client_subnets_and_scopes_the_answer_to_them() {
    let cfg = r#"
[regions.a]
location = [0.0, 0.0]
[regions.b]
location = [1.0, 1.0]
[pools.pa]
region = "a"
endpoints = [{ address = "10.0.0.1" }, { address = "10.0.0.2" }]
[pools.pb]
region = "b"
endpoints = [{ address = "10.0.1.1" }]
[zones."example.com"]
file = "z.zone"
[zones."example.com".services.www]
pools = ["pa", "pb"]
chain = ["healthy", "failover"]
"#;
    let (topo, svcs) = compile_cfg(cfg).expect("valid");
    let svc = &svcs[0];
    let mut health = HealthView::all_up(topo.endpoints.len());
    let mut sc = Scratch::seeded(3);
    let clients: Vec<Client> = (0..4000u32)
        .map(|i| client(IpAddr::V4(Ipv4Addr::from((i << 8) | 7))))
        .collect();
    let moved = |health: &HealthView, sc: &mut Scratch| -> Vec<bool> {
        clients
            .iter()
            .map(|c| {
                let d = decide(&topo, svc, c, Family::V4, health, sc, None);
                assert_eq!(d.answer, Answer::Endpoints);
                sc.out == [2]
            })
            .collect()
    };
    assert!(moved(&health, &mut sc).iter().all(|m| !m));
    // Region a partially drained at 10 %, then 50 %: each endpoint of
    // region a carries the share (as a region override gives it).
    let mut before = vec![false; clients.len()];
    for (units, share) in [(1000u16, 0.1), (5000, 0.5)] {
        health.endpoints[0].partial = units;
        health.endpoints[1].partial = units;
        let now = moved(&health, &mut sc);
        let got = now.iter().filter(|m| **m).count() as f64 / clients.len() as f64;
        assert!((got - share).abs() < 0.03, "{share}: {got}");
        // A rising share only adds subnets: nobody moved comes back.
        assert!(before.iter().zip(&now).all(|(b, n)| !b || *n));
        // Deterministic: the same answer again, and for another address
        // of the same /24.
        assert_eq!(moved(&health, &mut sc), now);
        for (c, m) in clients.iter().zip(&now).take(200) {
            let IpAddr::V4(v4) = c.addr else { continue };
            let other = client(IpAddr::V4(Ipv4Addr::from(u32::from(v4) | 0xf0)));
            decide(&topo, svc, &other, Family::V4, &health, &mut sc, None);
            assert_eq!(sc.out == [2], *m);
        }
        before = now;
    }
    // The answer depends on the client's /24: ECS scope 24.
    let d = decide(&topo, svc, &clients[0], Family::V4, &health, &mut sc, None);
    assert_eq!(d.scope, 24);
    // Explain says why a moved client lost region a.
    let c = clients
        .iter()
        .zip(&before)
        .find(|(_, m)| **m)
        .expect("one moved")
        .0;
    let mut t = Trace::default();
    decide(&topo, svc, c, Family::V4, &health, &mut sc, Some(&mut t));
    let why = format!("{t:?}");
    assert!(
        why.contains("partially drained by an operator (50 %"),
        "{why}"
    );
    // Region a wholly partially drained and region b down: the moved
    // clients fail open rather than getting nothing.
    health.endpoints[2].checked_up = false;
    let d = decide(&topo, svc, c, Family::V4, &health, &mut sc, None);
    assert_eq!(d.answer, Answer::Endpoints);
    assert!(!sc.out.is_empty());
}
