//! Text → the config loader (`config::Config::read`: TOML, schema, every
//! section's checks) and what a load compiles from the config alone: the
//! steering model (`snapshot::steering::compile`), the tier's plan and
//! gates (`snapshot::tier`) and the DNS defences (`snapshot::guard`).
//!
//! Properties: no panic, no unbounded allocation; every error names the
//! config file and a line within the text (line 0 only for an unreadable
//! referenced file). Inputs that name device or process files are skipped.
//! The config is read as if from a directory holding the zone files, key
//! and CIDR list the seed configs name.
#![no_main]

#[path = "../../tests/common/props.rs"]
mod props;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use geolb::config::Config;
use geolb::diag::Diagnostic;
use geolb::snapshot;
use libfuzzer_sys::fuzz_target;

fn whole_file(d: &Diagnostic) -> bool {
    d.message.contains("_file")
}

/// The directory the config is read from, holding the files the seed
/// configs name, so a config that parses goes on to compile.
fn config_path() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("tempdir");
        let zone = "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n";
        std::fs::create_dir_all(d.path().join("zones")).expect("dir");
        std::fs::create_dir_all(d.path().join("geo")).expect("dir");
        for f in ["example.com.zone", "zones/example.com.zone", "hosts.zone"] {
            std::fs::write(d.path().join(f), zone).expect("zone");
        }
        std::fs::write(
            d.path().join("cookie.key"),
            "00112233445566778899aabbccddeeff\n",
        )
        .expect("key");
        std::fs::write(d.path().join("geo/office-networks.txt"), "10.0.0.0/8 eu\n").expect("cidrs");
        let p = d.path().join("geolb.toml");
        (d, p)
    });
    p
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > 16384 || ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    let path = config_path();
    let check = |diags: &[Diagnostic]| {
        if let Err(e) = props::check_diagnostics(path, text, diags, whole_file) {
            panic!("{e}\ntext: {text:?}");
        }
    };
    let (config, diags) = match Config::read(path, text) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                e.errors().next().is_some(),
                "a failed read without an error"
            );
            check(&e.0);
            return;
        }
    };
    check(&diags);
    if diags.iter().any(Diagnostic::is_error) {
        return;
    }
    let mut diags = Vec::new();
    let compiled = snapshot::steering::compile(&config, &mut diags);
    let plan = snapshot::tier::compile(&config, &compiled.monitors, &mut diags);
    snapshot::tier::gates(&config, &compiled.topology, &plan, &mut diags);
    snapshot::guard::compile(&config, None, 1, &mut diags);
    check(&diags);
});
