//! `geolb map` end to end: the real binary over a City database built here.
//! Countries take the colour of the region that answers them, a region
//! going down recolours them with its failover, before/after draws both,
//! a split country gets dots of both colours, output is the same bytes for
//! the same input, PNGs are PNGs of the width asked, bad arguments fail
//! clearly.

use crate::common;

use std::path::Path;

use common::mmdb::{build_city, new_york, world, Layout};

/// Region colours in the order of the topology (regions by name): ap, eu, us.
const AP: &str = "#4e79a7";
const EU: &str = "#f28e2b";
const US: &str = "#59a14f";
const NO_DATA: &str = "#d4d4d4";

const ZONE: &str =
    "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n";

/// The config: `www` by continent (California to ap), `near` by distance.
fn config() -> String {
    let body = r#"
[geoip]
city = "city.mmdb"

[zones."example.com".services.www]
pools = ["eu-web", "us-web", "ap-web"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 2
geo = { default = ["us", "eu"], subdivision = { "US-CA" = ["ap", "us"] }, continent = { EU = ["eu", "us"], NA = ["us", "eu"], AS = ["ap", "us"], SA = ["us", "eu"] } }

[zones."example.com".services.near]
pools = ["eu-web", "us-web", "ap-web"]
chain = ["healthy", "nearest", "failover", "first_n"]
first_n = 2
"#;
    format!("{}{body}", common::THREE_REGIONS)
}

/// The geo tests' world (DE, GB, FR by IPv6 only, JP, BR, US: San Jose's
/// /16 and Ashburn's /24) and New York's /16, so that the US is split
/// between ap (California) and us (the rest) about evenly.
fn dir() -> tempfile::TempDir {
    let mut nets = world();
    nets.push(new_york("12.0.0.0/16"));
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::write(p.join("geolb.toml"), config()).expect("w");
    std::fs::write(p.join("example.com.zone"), ZONE).expect("w");
    std::fs::write(p.join("city.mmdb"), build_city(&nets, Layout::GeoIp2)).expect("w");
    dir
}

/// Runs `geolb map --config CONFIG ARGS…`: exit status, stdout, stderr.
fn map(config: &Path, args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let out = common::run_geolb("map", config, args);
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The SVG `geolb map` writes to standard output.
fn svg(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = map(config, args);
    assert_eq!(code, Some(0), "{err}");
    String::from_utf8(out).expect("SVG is UTF-8")
}

/// The fill of country `cc` in the panel `panel` of `svg`.
fn fill<'a>(svg: &'a str, panel: &str, cc: &str) -> &'a str {
    let start = svg
        .find(&format!("<g data-panel=\"{panel}\">"))
        .unwrap_or_else(|| panic!("no panel {panel}"));
    let tag = format!("<path data-cc=\"{cc}\" fill=\"");
    let at = svg[start..]
        .find(&tag)
        .unwrap_or_else(|| panic!("no country {cc} in panel {panel}"))
        + start
        + tag.len();
    let end = svg[at..].find('"').expect("fill ends") + at;
    &svg[at..end]
}

/// The circles' fills of panel `panel`.
fn dots<'a>(svg: &'a str, panel: &str) -> Vec<&'a str> {
    let start = svg
        .find(&format!("<g data-panel=\"{panel}\">"))
        .expect("panel");
    let end = svg[start + 1..]
        .find("<g data-panel=")
        .map_or(svg.len(), |e| e + start + 1);
    svg[start..end]
        .split("<circle ")
        .skip(1)
        .filter_map(|c| {
            let at = c.find("fill=\"")? + 6;
            Some(&c[at..at + c[at..].find('"')?])
        })
        .collect()
}

#[test]
fn a_country_is_filled_with_the_colour_of_the_region_answering_it() {
    let d = dir();
    let s = svg(
        &d.path().join("geolb.toml"),
        &["--service", "www.example.com"],
    );
    assert!(
        s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{}",
        &s[..80]
    );
    assert_eq!(fill(&s, "map", "DE"), EU);
    assert_eq!(fill(&s, "map", "GB"), EU);
    // IPv6 only: its IPv6 addresses decide.
    assert_eq!(fill(&s, "map", "FR"), EU);
    assert_eq!(fill(&s, "map", "JP"), AP);
    assert_eq!(fill(&s, "map", "BR"), US);
    // Nothing of Australia in the database.
    assert_eq!(fill(&s, "map", "AU"), NO_DATA);
    // The US is split: us by a few addresses, with dots of both colours.
    assert_eq!(fill(&s, "map", "US"), US);
    let d = dots(&s, "map");
    assert!(d.contains(&AP) && d.contains(&US), "{d:?}");
    // Only split countries get dots: 3 cells (New York, Ashburn, San Jose).
    assert_eq!(d.len(), 3, "{d:?}");
}

#[test]
fn a_region_down_recolours_its_countries_with_the_failover_region() {
    let d = dir();
    let cfg = d.path().join("geolb.toml");
    let s = svg(&cfg, &["--service", "www.example.com", "--down", "eu"]);
    assert_eq!(fill(&s, "map", "DE"), US);
    assert_eq!(fill(&s, "map", "GB"), US);
    assert_eq!(fill(&s, "map", "JP"), AP);
    // Everything down: every answer fails open, hatched.
    let s = svg(
        &cfg,
        &["--service", "www.example.com", "--down", "eu,us,ap"],
    );
    assert_eq!(fill(&s, "map", "DE"), "url(#fail-open)");
    assert!(s.contains("<pattern id=\"fail-open\""));
}

#[test]
fn before_after_draws_both_panels_with_one_legend() {
    let d = dir();
    let cfg = d.path().join("geolb.toml");
    let (code, out, err) = map(
        &cfg,
        &[
            "--service",
            "www.example.com",
            "--down",
            "eu",
            "--before-after",
            "--format",
            "svg",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let s = String::from_utf8(out).expect("utf-8");
    assert_eq!(fill(&s, "before", "DE"), EU);
    assert_eq!(fill(&s, "after", "DE"), US);
    assert_eq!(fill(&s, "before", "JP"), AP);
    assert_eq!(fill(&s, "after", "JP"), AP);
    assert_eq!(s.matches("<g data-panel=").count(), 2);
    // One legend: a swatch per region and one for no data, once.
    assert_eq!(s.matches("<rect x=").count(), 4, "legend swatches");
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let d = dir();
    let cfg = d.path().join("geolb.toml");
    for args in [
        &["--down", "eu", "--before-after"][..],
        &["--service", "near.example.com."][..],
    ] {
        assert_eq!(svg(&cfg, args), svg(&cfg, args), "{args:?}");
    }
    let a = d.path().join("a.png");
    let b = d.path().join("b.png");
    for out in [&a, &b] {
        let (code, _, err) = map(&cfg, &["--down", "us", "-o", out.to_str().expect("path")]);
        assert_eq!(code, Some(0), "{err}");
    }
    let (a, b) = (std::fs::read(a).expect("a"), std::fs::read(b).expect("b"));
    assert!(a == b, "two runs wrote different PNGs");
}

#[test]
fn png_is_a_png_of_the_width_asked() {
    let d = dir();
    let out = d.path().join("m.png");
    let (code, stdout, err) = map(
        &d.path().join("geolb.toml"),
        &["--width", "640", "-o", out.to_str().expect("path")],
    );
    assert_eq!(code, Some(0), "{err}");
    let png = std::fs::read(&out).expect("png written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
    let height = u32::from_be_bytes(png[20..24].try_into().expect("4 bytes"));
    assert_eq!(width, 640);
    // The summary names the size and the service (the first by name).
    let said = String::from_utf8_lossy(&stdout);
    assert!(said.contains(&format!("640x{height} px")), "{said}");
    assert!(said.contains("near.example.com."), "{said}");
    assert!((200..640).contains(&height), "{height}");
}

#[test]
fn bad_arguments_fail_with_a_clear_error() {
    let d = dir();
    let cfg = d.path().join("geolb.toml");
    let png = d.path().join("x.png");
    let png = png.to_str().expect("path");
    for (args, want) in [
        (
            &["--service", "nope.example.com"][..],
            "no service named \"nope.example.com\"",
        ),
        (
            &["--down", "mars"][..],
            "\"mars\" is not a region, pool or endpoint",
        ),
        (&["--type", "MX"][..], "record type \"MX\""),
        (
            &["--width", "10"][..],
            "map width 10: give 320 to 4096 pixels",
        ),
        (&["-o", "map.gif"][..], "map.gif: name a .svg or .png file"),
        (
            &["--format", "jpeg"][..],
            "--format \"jpeg\": give svg or png",
        ),
        (&["--before-after"][..], "--before-after needs a scenario"),
        (
            &["--drain", "eu-web/10.9.9.9", "-o", png][..],
            "\"eu-web/10.9.9.9\" is not a region",
        ),
    ] {
        let (code, out, err) = map(&cfg, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} wrote to stdout");
    }
    assert!(!Path::new(png).exists(), "nothing written on error");
}
