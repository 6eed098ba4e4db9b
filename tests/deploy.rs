//! Running under a supervisor: readiness (`GET /v1/ready`), liveness, the
//! config watcher on a Kubernetes-style ConfigMap volume (the `..data`
//! link swapped atomically), and the shipped production example.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use common::*;

fn zone(www: &str) -> String {
    format!("$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\nwww A {www}\n")
}

const CONFIG: &str =
    "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\n\
     watch_config = \"100ms\"\n\
     [zones.\"example.com\"]\nfile = \"example.com.zone\"\n";

#[test]
fn ready_answers_503_until_every_monitored_endpoint_was_checked_once_and_needs_no_token() {
    // A backend that accepts and never answers: the first HTTP check ends
    // only at its timeout, so the node is not ready before then.
    let hang = TcpListener::bind("127.0.0.1:0").expect("bind");
    let check = hang.local_addr().expect("addr");
    let cfg = format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\n\
         admin_token = \"s3cret\"\n\
         [zones.\"example.com\"]\nfile = \"example.com.zone\"\n\
         [regions.eu]\nlocation = [50.1, 8.7]\n\
         [monitors.web]\nkind = \"http\"\npath = \"/\"\ninterval = \"1h\"\ntimeout = \"4s\"\n\
         [pools.eu-web]\nregion = \"eu\"\nmonitor = \"web\"\n\
         endpoints = [{{ address = \"192.0.2.10\", check = \"{check}\" }}]\n"
    );
    let s = TestServer::start_with(&cfg, &[("example.com.zone", &zone("192.0.2.80"))]);
    let admin = s.admin.expect("admin");

    let (code, body) = http(admin, "GET", "/v1/ready");
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["ready"], false);
    assert_eq!(
        (v["monitored"].as_u64(), v["unchecked"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(
        v["reason"].as_str().is_some_and(|r| r.contains("1 of 1")),
        "{body}"
    );
    // Liveness answers at once; everything else still wants the token.
    assert_eq!(http(admin, "GET", "/v1/live").0, 200);
    assert_eq!(http(admin, "GET", "/v1/status").0, 401);

    let became_ready = wait_for(Duration::from_secs(15), || {
        http(admin, "GET", "/v1/ready").0 == 200
    });
    assert!(
        became_ready.is_some(),
        "ready after the first check timed out"
    );
    let (_, metrics) = http_auth(admin, "GET", "/metrics", "s3cret");
    assert!(metrics.contains("\ngeolb_ready 1\n"), "{metrics}");
    assert!(
        metrics.contains("geolb_pool_min_healthy{pool=\"eu-web\",region=\"eu\"} 1"),
        "{metrics}"
    );
    drop(hang);
}

/// A ConfigMap volume as the kubelet writes it: the files in a
/// `..<timestamp>` directory, `..data` pointing at it, and each key a link
/// through `..data`.
struct ConfigMapDir<'a> {
    dir: &'a Path,
    n: u32,
}

impl ConfigMapDir<'_> {
    /// Writes a new timestamped directory and swaps `..data` to it the way
    /// the kubelet does: a new link under a temporary name, renamed over
    /// the old one (one atomic step).
    fn publish(&mut self, files: &[(&str, &str)]) {
        self.n += 1;
        let ts = format!("..2026_12_03_09_00_{:02}.00000000{}", self.n, self.n);
        std::fs::create_dir(self.dir.join(&ts)).expect("mkdir");
        for (name, text) in files {
            std::fs::write(self.dir.join(&ts).join(name), text).expect("write");
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link).expect("link");
            }
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).expect("tmp link");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap");
    }
}

fn last_reload(admin: SocketAddr) -> serde_json::Value {
    let (_, body) = http(admin, "GET", "/v1/status");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status json");
    v["last_reload"].clone()
}

#[test]
fn a_configmap_swap_of_the_data_link_reloads_and_a_broken_one_keeps_serving_with_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cm = ConfigMapDir {
        dir: dir.path(),
        n: 0,
    };
    cm.publish(&[
        ("geolb.toml", CONFIG),
        ("example.com.zone", &zone("192.0.2.1")),
    ]);
    let published = cm.n;
    let s = TestServer::start_dir(dir);
    let admin = s.admin.expect("admin");
    assert_eq!(a_of(s.dns, "www.example.com."), ["192.0.2.1"]);

    // The links themselves never change; only `..data` moves.
    let mut cm = ConfigMapDir {
        dir: s.dir.path(),
        n: published,
    };
    let serves = |cm: &mut ConfigMapDir, www: &str| {
        cm.publish(&[("geolb.toml", CONFIG), ("example.com.zone", &zone(www))]);
        wait_for(Duration::from_secs(15), || {
            a_of(s.dns, "www.example.com.") == [www]
        })
    };
    assert!(
        serves(&mut cm, "192.0.2.2").is_some(),
        "the new zone is served after the swap"
    );
    assert_eq!(last_reload(admin)["ok"], true);
    assert_eq!(last_reload(admin)["generation"], 2);

    // A broken config: the reload fails, the old data serves on, and the
    // failure shows in the status and the metrics.
    cm.publish(&[
        ("geolb.toml", &format!("{CONFIG}bogus_key = 1\n")),
        ("example.com.zone", &zone("192.0.2.3")),
    ]);
    let failed = wait_for(Duration::from_secs(15), || {
        last_reload(admin)["ok"] == false
    });
    assert!(failed.is_some(), "the broken config is tried and refused");
    let report = last_reload(admin);
    assert_eq!(report["generation"], 2, "{report}");
    assert!(
        report["errors"].to_string().contains("bogus_key"),
        "{report}"
    );
    assert_eq!(a_of(s.dns, "www.example.com."), ["192.0.2.2"]);
    let (_, metrics) = http(admin, "GET", "/metrics");
    assert!(
        metrics.contains("\ngeolb_reload_last_success 0\n"),
        "{metrics}"
    );
    // Refused once, not again and again while nothing changes.
    std::thread::sleep(Duration::from_millis(500));
    assert!(metrics.contains("geolb_reloads_total{result=\"failure\"} 1"));
    let (_, later) = http(admin, "GET", "/metrics");
    assert!(
        later.contains("geolb_reloads_total{result=\"failure\"} 1"),
        "{later}"
    );

    // Fixed: served again.
    assert!(
        serves(&mut cm, "192.0.2.4").is_some(),
        "the fixed config is served"
    );
}

#[test]
fn without_watch_config_a_changed_file_waits_for_a_reload() {
    let cfg = CONFIG.replace("watch_config = \"100ms\"\n", "");
    let s = TestServer::start_with(&cfg, &[("example.com.zone", &zone("192.0.2.1"))]);
    std::fs::write(s.path("example.com.zone"), zone("192.0.2.9")).expect("write");
    // Several rounds of what would be the watcher's interval.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(a_of(s.dns, "www.example.com."), ["192.0.2.1"]);
    let (code, _) = http(s.admin.expect("admin"), "POST", "/v1/reload");
    assert_eq!(code, 200);
    assert_eq!(a_of(s.dns, "www.example.com."), ["192.0.2.9"]);
}

/// `deploy/config/` with its absolute paths moved into `dir`: GeoIP
/// databases built here, token files, the state directory.
fn production_example(dir: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config");
    let (geoip, secrets, state) = (dir.join("GeoIP"), dir.join("secrets"), dir.join("state"));
    for d in [&geoip, &secrets, &state] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let city = mmdb::build_city(&mmdb::world(), mmdb::Layout::GeoIp2);
    std::fs::write(geoip.join("GeoLite2-City.mmdb"), city).expect("city");
    let asn = mmdb::build_asn(&[("192.0.2.0/24", 64500, "Example")]);
    std::fs::write(geoip.join("GeoLite2-ASN.mmdb"), asn).expect("asn");
    std::fs::write(secrets.join("admin-token"), "admin-secret\n").expect("token");
    std::fs::write(secrets.join("probe-token"), "probe-secret\n").expect("token");
    let text = std::fs::read_to_string(src.join("geolb.toml")).expect("example config");
    let text = text
        .replace("\"/var/lib/GeoIP/", &format!("\"{}/", geoip.display()))
        .replace(
            "\"/etc/geolb-secrets/",
            &format!("\"{}/", secrets.display()),
        )
        .replace("\"/var/lib/geolb/", &format!("\"{}/", state.display()));
    let outside = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.starts_with("path ="))
        .filter(|l| l.contains("= \"/") && !l.contains(&*dir.to_string_lossy()))
        .collect::<Vec<_>>();
    assert!(outside.is_empty(), "paths left unadapted: {outside:?}");
    std::fs::write(dir.join("geolb.toml"), text).expect("config");
    std::fs::copy(src.join("example.com.zone"), dir.join("example.com.zone")).expect("zone");
    dir.join("geolb.toml")
}

#[test]
fn the_production_example_passes_check_and_loads_three_regions_with_their_tiers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = production_example(dir.path());
    let (code, out) = check(&path);
    assert_eq!(code, Some(0), "{out}");
    let (snap, warnings) = geolb::snapshot::load(&path, &Default::default(), 1, None)
        .unwrap_or_else(|e| panic!("the example loads: {e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let c = &snap.config;
    assert_eq!(c.regions.len(), 3);
    assert_eq!(c.pools.len(), 3);
    assert_eq!(c.listeners.len(), 6);
    assert_eq!(c.groups.len(), 6);
    assert_eq!(c.health.vantages.len(), 3);
    assert!(
        !c.health.local_checks,
        "DNS and tier nodes leave the checking to the probers"
    );
    assert_eq!(c.health.quorum_needed(), 2, "2 of the 3 probers");
    // The same file run as a prober: it checks, and says it ignores the key.
    let ov = geolb::config::Overrides {
        vantage: Some("eu".into()),
        probe_only: true,
        ..Default::default()
    };
    let (prober, warnings) = geolb::snapshot::load(&path, &ov, 1, None).expect("prober loads");
    assert!(prober.config.health.local_checks);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].message.contains("ignored by `geolb probe`"),
        "{warnings:?}"
    );
    assert_eq!(c.server.admin_token.as_deref(), Some("admin-secret"));
    assert_eq!(c.server.watch_config, Some(Duration::from_secs(2)));
    assert_eq!(
        c.node.regions.as_deref(),
        Some(&[][..]),
        "DNS nodes run no tier"
    );
    // A tier node of each region: its listeners only.
    for region in ["eu-central", "us-east", "ap-northeast"] {
        let ov = geolb::config::Overrides {
            regions: Some(vec![region.to_string()]),
            dns_enabled: Some(false),
            ..Default::default()
        };
        let (snap, _) = geolb::snapshot::load(&path, &ov, 1, None).expect("tier node loads");
        assert!(!snap.config.node.dns);
        assert_eq!(
            snap.config.node.regions.as_deref(),
            Some(&[region.to_string()][..])
        );
    }
}

/// Every `geolb_…` name in `text`, histogram series reduced to their family.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("geolb_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_alert_rules_and_the_dashboard_use_only_metrics_geolb_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    let exported = metric_names(&read("src/metrics/render.rs"));
    assert!(exported.contains("geolb_pool_min_healthy"), "{exported:?}");
    for file in [
        "deploy/prometheus/geolb.rules.yml",
        "deploy/grafana/geolb-dashboard.json",
    ] {
        let used = metric_names(&read(file));
        assert!(used.len() > 5, "{file}: {used:?}");
        let unknown: Vec<&String> = used
            .iter()
            // Failover drills are not built yet; its alert waits for them.
            .filter(|n| !exported.contains(*n) && *n != "geolb_drill_active")
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics geolb does not export: {unknown:?}"
        );
    }
}
