//! Text → the zone-file reader (`zone::read_zone_text`: the line lexer,
//! directives, hickory-proto's RDATA parser, the SVCB/HTTPS and
//! character-string parsers) and whole-zone validation (`zone::build_zone`)
//! for example.com.
//!
//! Properties: no panic; every error has the file and a line within the
//! text (line 0 only for what the zone lacks as a whole); a zone that loads
//! compiles (`snapshot::compile_zone`), and printed back in the generic
//! form of RFC 3597 it reads again into the same RRsets (owners, types,
//! TTLs, RDATA bytes). `$INCLUDE` is skipped: it reads other files.
#![no_main]

#[path = "../../tests/common/props.rs"]
mod props;

use std::path::Path;

use geolb::diag::Diagnostic;
use geolb::zone::{build_zone, read_zone_text, ZoneData};
use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;

fn load(origin: &Name, path: &Path, text: &str) -> (ZoneData, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let records = read_zone_text(origin, path, text, &mut diags);
    let z = build_zone(origin, path, records, &mut diags);
    (z, diags)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > 16384 || text.to_ascii_lowercase().contains("$include") {
        return;
    }
    let origin = Name::from_ascii("example.com.").expect("origin");
    let path = Path::new("/nonexistent/fuzz.zone");
    let (zone, diags) = load(&origin, path, text);
    let whole = |d: &Diagnostic| d.message.starts_with("zone example.com. has no");
    if let Err(e) = props::check_diagnostics(path, text, &diags, whole) {
        panic!("{e}\ntext: {text:?}");
    }
    if diags.iter().any(Diagnostic::is_error) {
        return;
    }
    let printed = match props::zone_as_generic(&zone) {
        Ok(p) => p,
        Err(e) => panic!("a loaded zone does not encode: {e}\ntext: {text:?}"),
    };
    let (again, d2) = load(&origin, path, &printed);
    let errors: Vec<String> = d2
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "the printed zone does not load: {errors:?}\ntext: {text:?}\nprinted: {printed}"
    );
    if let Err(e) = props::same_zone(&zone, &again) {
        panic!("{e}\ntext: {text:?}\nprinted: {printed}");
    }
    if let Err(d) = geolb::snapshot::compile_zone(zone, Vec::new(), Vec::new(), path) {
        panic!("a loaded zone does not compile: {d:?}\ntext: {text:?}");
    }
});
