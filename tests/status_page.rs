//! The status page on the admin listener: served without a token (it holds
//! no data) with its security headers, while the data routes still need
//! the token; every API field its script reads exists in a real server's
//! JSON; and, where Chromium is installed, the page rendered by a headless
//! browser shows the regions, endpoints and health words, and a region
//! whose endpoint dies turns red within a refresh with no console error.

use crate::common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::*;
use serde_json::Value;

const TOKEN: &str = "page-test-token";
const JS: &str = include_str!("../src/admin/ui/app.js");

/// Regions eu and us, a monitored pool in each, a service `www` over
/// both, a remote vantage that never answers (port 9 on loopback: closed),
/// GeoIP, and a tier group whose members are `live` and `dead` behind one
/// TCP listener.
fn page_config(token: &str, live: SocketAddr, dead: SocketAddr) -> String {
    let token = if token.is_empty() {
        String::new()
    } else {
        format!("admin_token = \"{token}\"\n")
    };
    format!(
        r#"[server]
dns = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
udp_workers = 1
nsid = "page-node"
{token}
[geoip]
city = "city.mmdb"

[health]
vantage = "here"
fresh_for = "2s"
poll_interval = "1s"

[health.vantages.far]
url = "http://127.0.0.1:9"

[monitors.tcp]
kind = "tcp"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1

[regions]
eu = {{ location = [50.1, 8.7] }}
us = {{ location = [39.0, -77.5] }}

[pools]
eu-web = {{ region = "eu", monitor = "tcp", endpoints = [{{ address = "127.0.1.1", check = "{live}" }}] }}
us-web = {{ region = "us", monitor = "tcp", endpoints = [{{ address = "127.0.2.1", check = "{dead}" }}] }}

[zones."example.com"]
file = "example.com.zone"

[zones."example.com".services.www]
pools = ["eu-web", "us-web"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 1
geo = {{ default = ["eu", "us"], continent = {{ NA = ["us", "eu"] }} }}

[listeners.eu-tcp]
region = "eu"
bind = "127.0.1.1:0"
group = "eu-app"

[groups.eu-app]
region = "eu"
algorithm = "round_robin"
ejection = {{ failures = 1, base_time = "5m", max_percent = 50 }}
members = [{{ address = "{live}" }}, {{ address = "{dead}" }}]
"#
    )
}

fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn start_page_server(token: &str, live: SocketAddr, dead: SocketAddr) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let city = mmdb::build_city(&mmdb::world(), mmdb::Layout::GeoIp2);
    std::fs::write(dir.path().join("city.mmdb"), city).expect("write mmdb");
    std::fs::write(dir.path().join("example.com.zone"), TIER_ZONE).expect("write zone");
    std::fs::write(
        dir.path().join("geolb.toml"),
        page_config(token, live, dead),
    )
    .expect("write config");
    TestServer::start_dir(dir)
}

fn admin(s: &TestServer) -> SocketAddr {
    s.admin.expect("admin listener")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn page_and_assets_are_served_without_a_token_and_data_routes_still_need_it() {
    let live = Backend::start(common::backend::OK);
    let s = start_page_server(TOKEN, live.addr, closed_port());
    let a = admin(&s);
    for (path, ctype, marker) in [
        ("/", "text/html; charset=utf-8", "<!doctype html>"),
        ("/ui", "text/html; charset=utf-8", "<!doctype html>"),
        (
            "/ui/app.js",
            "text/javascript; charset=utf-8",
            "// geolb status page",
        ),
        ("/ui/app.css", "text/css; charset=utf-8", ":root"),
    ] {
        let (code, head, body) = http_raw(a, "GET", path, None, "");
        assert_eq!(code, 200, "{path}: {head}");
        assert_eq!(header(&head, "content-type"), Some(ctype), "{path}");
        assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
        let csp = header(&head, "content-security-policy").expect("CSP");
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(body.starts_with(marker), "{path}: {body:.60}");
        // The page holds no data of this node.
        for secret in ["page-node", "eu-web", "127.0.1.1", TOKEN] {
            assert!(!body.contains(secret), "{path} contains {secret}");
        }
    }
    // The data routes are as closed as before.
    for path in [
        "/v1/status",
        "/v1/health",
        "/v1/tier",
        "/v1/map.svg",
        "/v1/resolvers/summary",
        "/metrics",
        "/ui/../v1/status",
        "/ui/app.js/../../v1/status",
        "/v1/status?/ui/app.js",
        "/ui/nothing",
    ] {
        let (code, _, body) = http_raw(a, "GET", path, None, "");
        assert_eq!(code, 401, "{path} without a token: {body}");
        assert!(!body.contains("page-node"), "{path}: {body}");
    }
    let (code, _, _) = http_raw(a, "GET", "/v1/status", Some("wrong"), "");
    assert_eq!(code, 401);
    let (code, _, body) = http_raw(a, "GET", "/v1/status", Some(TOKEN), "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"nsid\":\"page-node\""), "{body:.200}");
    // The page's routes serve nothing but GET (and HEAD).
    let (code, _, _) = http_raw(a, "POST", "/", None, "");
    assert_eq!(code, 405);
}

/// The script with its comments and string literals blanked, so that what
/// is left is code.
fn code_of(js: &str) -> String {
    let mut out = String::with_capacity(js.len());
    let mut chars = js.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' | '\'' | '`' => {
                while let Some(n) = chars.next() {
                    if n == '\\' {
                        chars.next();
                    } else if n == c {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every `.name` the script reads.
fn member_names(js: &str) -> BTreeSet<String> {
    let code = code_of(js);
    let b = code.as_bytes();
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices('.') {
        let rest = &code[i + 1..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '$')
            .collect();
        let starts_ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        // `...rest` spreads a variable; it reads no field.
        let spread = i >= 2 && b[i - 1] == b'.' && b[i - 2] == b'.';
        if starts_ident && !spread {
            names.insert(name);
        }
    }
    names
}

/// Names the script reads that are not API fields: the browser's and the
/// language's, and the page's own objects (the fetched pair, the problem
/// list, the pending action, the drain request's `for`, the map's state
/// and the timeline's samples).
const NOT_API: &[&str] = &[
    "Authorization",
    "abs",
    "addEventListener",
    "all",
    "append",
    "attributes",
    "ceil",
    "createElementNS",
    "documentElement",
    "forEach",
    "from",
    "getAttribute",
    "getElementsByTagName",
    "importNode",
    "includes",
    "localName",
    "min",
    "namespaceURI",
    "parseFromString",
    "pop",
    "remove",
    "removeAttribute",
    "reverse",
    "shift",
    "split",
    "concat",
    "text",
    "className",
    "close",
    "createElement",
    "createTextNode",
    "dataset",
    "disabled",
    "entries",
    "filter",
    "find",
    "flat",
    "flatMap",
    "floor",
    "focus",
    "get",
    "getElementById",
    "getItem",
    "has",
    "headers",
    "hidden",
    "isArray",
    "isInteger",
    "join",
    "json",
    "length",
    "map",
    "max",
    "message",
    "padStart",
    "preventDefault",
    "push",
    "querySelectorAll",
    "reduce",
    "removeItem",
    "replace",
    "replaceChildren",
    "round",
    "set",
    "setAttribute",
    "setItem",
    "showModal",
    "slice",
    "some",
    "sort",
    "startsWith",
    "stringify",
    "test",
    "textContent",
    "title",
    "toFixed",
    "toISOString",
    "trim",
    "value",
    "values",
    // the page's own
    "at",
    "body",
    "code",
    "color",
    "kind",
    "skew",
    "status",
    "what",
    "why",
    "for",
    // the `{"error": ...}` of a refused drain
    "error",
    // the map's state (ETag, SVG, in flight) and its legend entries
    // (fill, share); the timeline's samples (t, s) and override spans (to)
    "etag",
    "svg",
    "loading",
    "fill",
    "share",
    "t",
    "s",
    "to",
];

/// Paths the page's structure relies on ("[]": every element of an array).
const PATHS: &[&str] = &[
    "version",
    "nsid",
    "now",
    "started_at",
    "config",
    "generation",
    "loaded_at",
    "last_reload.ok",
    "last_reload.at",
    "last_reload.generation",
    "last_reload.errors",
    "last_reload.warnings",
    "listeners.dns",
    "zones[].name",
    "zones[].serial",
    "zones[].records",
    "zones[].file",
    "geoip.city.path",
    "geoip.city.database_type",
    "geoip.city.build_epoch",
    "geoip.city.copy",
    "geoip.city.wrong_type_records",
    "geoip.city.first_wrong_type",
    "geoip.asn",
    "geoip.last_swap",
    "geoip.last_error",
    "geoip.last_error_at",
    "geoip.building_since",
    "counters",
    "udp_workers[].worker",
    "udp_workers[].listener",
    "udp_workers[].cpu",
    "udp_workers[].queries",
    "health.epoch.id",
    "health.vantage",
    "health.quorum",
    "health.local_checks",
    "health.vantages[].vantage",
    "health.vantages[].url",
    "health.vantages[].fresh",
    "health.vantages[].last_ok",
    "health.vantages[].last_error",
    "health.pools[].pool",
    "health.pools[].region",
    "health.pools[].endpoints",
    "health.pools[].up",
    "health.pools[].min_healthy",
    "health.pools[].healthy",
    "health.endpoints[].endpoint",
    "health.endpoints[].pool",
    "health.endpoints[].up",
    "health.endpoints[].checked_up",
    "health.endpoints[].reason",
    "health.endpoints[].votes",
    "health.endpoints[].last_error",
    "health.endpoints[].last_change",
    "health.endpoints[].rtt_ewma_ms",
    "health.endpoints[].override",
    "health.overrides[].target",
    "health.overrides[].state",
    "health.overrides[].until",
    "health.overrides[].set_at",
    "tier.listeners[].name",
    "tier.listeners[].mode",
    "tier.listeners[].bind",
    "tier.listeners[].region",
    "tier.listeners[].group",
    "tier.listeners[].active",
    "tier.listeners[].max_connections",
    "tier.listeners[].parked",
    "tier.listeners[].accepted",
    "tier.listeners[].requests",
    "tier.listeners[].responses",
    "tier.listeners[].refused_max",
    "tier.listeners[].no_backend",
    "tier.listeners[].errors",
    "tier.groups[].name",
    "tier.groups[].region",
    "tier.groups[].algorithm",
    "tier.groups[].protocol",
    "tier.groups[].persistence",
    "tier.groups[].slow_start_s",
    "tier.groups[].backends[].address",
    "tier.groups[].backends[].backup",
    "tier.groups[].backends[].up",
    "tier.groups[].backends[].eligible",
    "tier.groups[].backends[].health",
    "tier.groups[].backends[].admin",
    "tier.groups[].backends[].drain",
    "tier.groups[].backends[].ejection",
    "tier.groups[].backends[].ejection_ends_in_s",
    "tier.groups[].backends[].active",
    "tier.groups[].backends[].idle_connections",
    "tier.groups[].backends[].weight",
    "tier.groups[].backends[].effective_weight",
    "tier.groups[].backends[].latency_ms",
    "tier.groups[].backends[].total",
    "tier.groups[].backends[].connect_errors",
    "tier.groups[].backends[].http_responses",
    "services",
    "health.events[].kind",
    "health.events[].at",
    "health.events[].target",
    "health.events[].state",
    "health.events[].until",
    "health.events[].set_at",
    "health.events[].id",
    "health.events[].down",
    "health.events[].up",
    "health.events[].more_down",
    "health.events[].more_up",
];

/// The paths of `/v1/resolvers/summary` the timeline reads.
const SUMMARY_PATHS: &[&str] = &[
    "armed",
    "armed_at",
    "tracked",
    "now",
    "regions[].service",
    "regions[].region",
    "regions[].resolvers",
    "regions[].holding",
    "history",
];

/// Whether `path` exists in `v`: in at least one element of each array
/// (an empty array proves nothing and fails).
fn has_path(v: &Value, path: &[&str]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    match first.strip_suffix("[]") {
        Some(key) => v[key]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| has_path(x, rest))),
        None => v
            .as_object()
            .is_some_and(|o| o.get(*first).is_some_and(|x| has_path(x, rest))),
    }
}

fn keys(v: &Value, into: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                into.insert(k.clone());
                keys(x, into);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| keys(x, into)),
        _ => {}
    }
}

fn get_json(a: SocketAddr, path: &str) -> Value {
    let (code, _, body) = http_raw(a, "GET", path, Some(TOKEN), "");
    assert!(code == 200 || code == 503, "{path}: {code} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn post_ok(a: SocketAddr, path: &str, body: &str) {
    let (code, _, resp) = http_raw(a, "POST", path, Some(TOKEN), body);
    assert_eq!(code, 200, "{path} {body}: {resp}");
}

fn backend(status: &Value, addr: SocketAddr) -> &Value {
    let addr = addr.to_string();
    status["tier"]["groups"][0]["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["address"] == addr.as_str()))
        .unwrap_or_else(|| panic!("no backend {addr}: {status}"))
}

#[test]
fn every_field_the_page_reads_exists_in_the_api() {
    let live = Backend::start(common::backend::OK);
    let dead = closed_port();
    let s = start_page_server(TOKEN, live.addr, dead);
    let a = admin(&s);
    let vip = *s
        .server()
        .tier
        .local_addrs()
        .get("eu-tcp")
        .expect("listener");
    // Put the node in every state the page shows: a reload done, an
    // endpoint drained with an expiry, its pool partially drained, a
    // backend ejected by a connection failure, another drained.
    post_ok(a, "/v1/reload", "");
    post_ok(
        a,
        "/v1/drain",
        r#"{"target": "us-web/127.0.2.1", "for": "10m"}"#,
    );
    post_ok(
        a,
        "/v1/drain",
        r#"{"target": "us-web", "for": "10m", "fraction": 0.5}"#,
    );
    let ejected = wait_for(Duration::from_secs(10), || {
        drop(TcpStream::connect_timeout(&vip, Duration::from_secs(1)));
        backend(&get_json(a, "/v1/status"), dead)["ejection"].is_object()
    });
    assert!(ejected.is_some(), "{}", get_json(a, "/v1/tier"));
    post_ok(
        a,
        "/v1/drain",
        &format!(r#"{{"target": "eu-app/{}", "for": "10m"}}"#, live.addr),
    );
    let drained = wait_for(Duration::from_secs(10), || {
        backend(&get_json(a, "/v1/status"), live.addr)["drain"].is_object()
    });
    assert!(drained.is_some(), "{}", get_json(a, "/v1/tier"));
    // Every kind of health event: an override set and undone, one that
    // expires, and the epochs they make.
    post_ok(
        a,
        "/v1/force",
        r#"{"target": "eu-web/127.0.1.1", "state": "down"}"#,
    );
    post_ok(a, "/v1/undrain", r#"{"target": "eu-web/127.0.1.1"}"#);
    post_ok(a, "/v1/drain", r#"{"target": "eu", "for": "1s"}"#);
    let kinds = |st: &Value| -> BTreeSet<String> {
        st["health"]["events"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|e| e["kind"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let all_kinds = wait_for(Duration::from_secs(10), || {
        kinds(&get_json(a, "/v1/status")).len() == 4
    });
    assert!(
        all_kinds.is_some(),
        "{}",
        get_json(a, "/v1/status")["health"]["events"]
    );
    // Tracked resolvers, for the timeline's summary.
    post_ok(a, "/v1/resolvers/track", r#"{"for": "10m"}"#);
    let dns = s.dns;
    ask_from("127.0.0.2", dns);
    ask_from("127.0.0.3", dns);

    let status = get_json(a, "/v1/status");
    let ready = get_json(a, "/v1/ready");
    let summary = get_json(a, "/v1/resolvers/summary");
    let missing: Vec<&&str> = SUMMARY_PATHS
        .iter()
        .filter(|p| !has_path(&summary, &p.split('.').collect::<Vec<_>>()))
        .collect();
    assert!(
        missing.is_empty(),
        "not in /v1/resolvers/summary: {missing:?}\n{summary}"
    );
    let missing: Vec<&&str> = PATHS
        .iter()
        .filter(|p| !has_path(&status, &p.split('.').collect::<Vec<_>>()))
        .collect();
    assert!(
        missing.is_empty(),
        "not in /v1/status: {missing:?}\n{status}"
    );
    for p in ["ready", "reason"] {
        assert!(ready.get(p).is_some(), "not in /v1/ready: {p}: {ready}");
    }

    // Every other name the script reads is a field the API sends.
    let mut api = BTreeSet::new();
    keys(&status, &mut api);
    keys(&ready, &mut api);
    keys(&summary, &mut api);
    let read = member_names(JS);
    let unknown: Vec<&String> = read
        .iter()
        .filter(|n| !api.contains(*n) && !NOT_API.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "app.js reads fields the API does not send: {unknown:?}"
    );
    // The path list follows the script: each path ends in a name it reads.
    let stale: Vec<&&str> = PATHS
        .iter()
        .chain(SUMMARY_PATHS)
        .filter(|p| {
            let leaf = p.rsplit('.').next().unwrap_or(p).trim_end_matches("[]");
            !read.contains(leaf)
        })
        .collect();
    assert!(stale.is_empty(), "paths app.js no longer reads: {stale:?}");
    // And the check sees the script's reads at all.
    for n in [
        "endpoints",
        "votes",
        "ejection_ends_in_s",
        "idle_connections",
        "epoch",
    ] {
        assert!(read.contains(n), "{n} not found in app.js");
    }
}

#[test]
fn member_names_skip_strings_comments_and_spreads() {
    let js = "// a.comment\nconst x = \"b.string\" + y.field + f(...rest) + 'c.d' + z.other_one;";
    let names: Vec<String> = member_names(js).into_iter().collect();
    assert_eq!(names, ["field", "other_one"]);
}

// ---- headless browser ----------------------------------------------------

/// Chromium's command, or None (with why) when it is not installed. With
/// GEOLB_REQUIRE_CHROMIUM set (.ci/run sets it after installing Chromium)
/// a missing browser is a failure, not a skip.
fn chromium() -> Option<String> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Some(name.to_string());
        }
    }
    assert!(
        std::env::var_os("GEOLB_REQUIRE_CHROMIUM").is_none(),
        "GEOLB_REQUIRE_CHROMIUM is set but no chromium is installed"
    );
    eprintln!(
        "SKIPPED: the headless browser test needs chromium (Debian: apt-get install chromium; .ci/run installs it)"
    );
    None
}

/// The DOM of `url` after its script ran, as headless Chromium dumps it.
fn dump_dom(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if t0.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within 60 s");
            }
        }
    }
    reader.join().expect("reader")
}

#[test]
fn headless_browser_renders_regions_endpoints_and_health_words() {
    let Some(browser) = chromium() else { return };
    let live = Backend::start(common::backend::OK);
    let dead = closed_port();
    let s = start_page_server("", live.addr, dead);
    let a = admin(&s);
    // Wait until the dead pool's check has failed, so both words show.
    let down = wait_for(Duration::from_secs(10), || {
        let h: Value = serde_json::from_str(&http(a, "GET", "/v1/health").1).unwrap_or_default();
        h["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["pool"] == "us-web"))
            .is_some_and(|e| e["up"] == false)
    });
    assert!(down.is_some(), "{}", http(a, "GET", "/v1/health").1);
    let dom = dump_dom(&browser, &format!("http://{a}/"));
    for want in [
        "region eu",
        "region us",
        "pool eu-web",
        "eu-web/127.0.1.1",
        "us-web/127.0.2.1",
        "group eu-app",
        ">up<",
        ">down<",
        "Needs attention",
        "page-node",
        &live.addr.to_string(),
    ] {
        assert!(dom.contains(want), "rendered page lacks {want:?}:\n{dom}");
    }
    // The failing endpoint's reason is on the page, not only its colour.
    assert!(dom.contains("light red"), "{dom}");
    // The answer map: the SVG inline, countries filled, its legend listed.
    assert!(dom.contains("Answer map"), "{dom}");
    assert!(dom.contains("class=\"worldmap\""), "no map drawn:\n{dom}");
    assert!(dom.contains("<path data-cc=\"DE\" fill=\"#"), "{dom}");
    assert!(dom.contains("data-legend=\"eu\""), "{dom}");
    // With us down by its check, eu answers everyone: 100 % in the legend.
    assert!(dom.contains(" eu 100.0%"), "{dom}");
}

#[test]
fn headless_browser_shows_the_timeline_of_a_drain_with_tracked_resolvers() {
    let Some(browser) = chromium() else { return };
    let live = Backend::start(common::backend::OK);
    let s = start_page_server("", live.addr, closed_port());
    let a = admin(&s);
    let (code, body) = http_json(a, "/v1/resolvers/track", r#"{"for": "10m"}"#);
    assert_eq!(code, 200, "{body}");
    ask_from("127.0.0.2", s.dns);
    let (code, body) = http_json(a, "/v1/drain", r#"{"target": "eu-web", "for": "10m"}"#);
    assert_eq!(code, 200, "{body}");
    ask_from("127.0.0.3", s.dns);
    let dom = dump_dom(&browser, &format!("http://{a}/"));
    for want in [
        "id=\"timeline-card\"",
        "class=\"timeline\"",
        // The drain's lane, its bar, what is still to come, and the list.
        ">eu-web<",
        "class=\"span drain\"",
        "class=\"span pending drain\"",
        "drain eu-web",
        // The epoch it made, naming the endpoint it took down.
        "down: eu-web/127.0.1.1",
        // The tracked resolvers' lane.
        "tracked resolvers",
        "class=\"share\"",
    ] {
        assert!(dom.contains(want), "the timeline lacks {want:?}:\n{dom}");
    }
}

#[test]
fn headless_browser_asks_for_the_token_and_shows_no_data_without_it() {
    let Some(browser) = chromium() else { return };
    let live = Backend::start(common::backend::OK);
    let s = start_page_server(TOKEN, live.addr, closed_port());
    let dom = dump_dom(&browser, &format!("http://{}/", admin(&s)));
    assert!(dom.contains("needs its bearer token"), "{dom}");
    assert!(!dom.contains("<form id=\"login\" hidden"), "{dom}");
    for secret in ["page-node", "eu-web", "region eu"] {
        assert!(
            !dom.contains(secret),
            "{secret} shown without a token:\n{dom}"
        );
    }
}

/// What a person watching the page sees when a region's only endpoint dies:
/// the region's light turns from green to red within a refresh (3 s) of the
/// health check's verdict, and the console shows no error all along.
#[test]
fn headless_browser_turns_a_dying_region_red_within_a_refresh_and_logs_no_console_error() {
    let Some(browser) = chromium() else { return };
    let eu = Backend::start(common::backend::OK);
    let mut us = Backend::start(common::backend::OK);
    let s = start_page_server("", eu.addr, us.addr);
    let a = admin(&s);
    let us_down = || {
        let h: Value = serde_json::from_str(&http(a, "GET", "/v1/health").1).unwrap_or_default();
        h["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["pool"] == "us-web"))
            .is_some_and(|e| e["up"] == false)
    };
    let mut b = common::cdp::Browser::launch(&browser);
    b.navigate(&format!("http://{a}/"));
    let light = |colour: &str| {
        format!(
            "(() => {{ const h = [...document.querySelectorAll('.region h3')]\
             .find((h) => h.textContent.includes('region us'));\
             const l = h && h.querySelector('.light');\
             return !!l && l.className === 'light {colour}'; }})()"
        )
    };
    assert!(
        b.wait_for(&light("green"), Duration::from_secs(15))
            .is_some(),
        "region us never shown green: {}",
        b.eval("document.body.innerText")
    );
    us.kill();
    let verdict = wait_for(Duration::from_secs(10), us_down);
    assert!(verdict.is_some(), "{}", http(a, "GET", "/v1/health").1);
    let red = b.wait_for(&light("red"), Duration::from_secs(10));
    let red = red.unwrap_or_else(|| {
        panic!(
            "region us not red 10 s after the verdict: {}",
            b.eval("document.body.innerText")
        )
    });
    eprintln!("region us red {red:?} after the health verdict");
    // The answer map is drawn (inline SVG, countries filled) under the
    // health the page shows: with us down, eu answers every country.
    let map = "(() => { const m = document.querySelector('svg.worldmap'); \
               const eu = m && m.querySelector('[data-legend=\"eu\"]'); \
               return !!eu && m.querySelectorAll('[fill]').length > 10 && \
               parseFloat(eu.getAttribute('data-share')) > 0.999; })()";
    assert!(
        b.wait_for(map, Duration::from_secs(10)).is_some(),
        "no map with eu at 100 %: {}",
        b.eval("document.querySelector('#map-card') ? document.querySelector('#map-card').outerHTML : document.body.innerHTML")
    );
    // The page refreshes every 3 s; one refresh, and the time to draw it.
    assert!(red <= Duration::from_millis(4000), "red after {red:?}");
    let errors = b.errors();
    assert!(errors.is_empty(), "the console shows errors: {errors:#?}");
    // The collector itself sees a console error and an uncaught one.
    b.eval("console.error('collector check'); setTimeout(() => { throw new Error('thrown check'); }, 0); true");
    let seen = b.wait_for(
        "new Promise((r) => setTimeout(() => r(true), 50))",
        Duration::from_secs(5),
    );
    assert!(seen.is_some());
    let errors = b.errors().join("\n");
    assert!(
        errors.contains("collector check") && errors.contains("thrown check"),
        "{errors}"
    );
}
