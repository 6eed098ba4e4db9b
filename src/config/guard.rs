//! `[rrl]` (response rate limiting) and `[cookies]` (DNS cookies, RFC 7873
//! and RFC 9018): the DNS listeners' defences against spoofed-source floods
//! and reflection. Values are checked in [`check`], each error at its key.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::diag::{line_col, Diagnostic};

fn d_rate() -> Spanned<u32> {
    Spanned::new(0..0, 20)
}
fn d_slip() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}
fn d_v4() -> Spanned<u8> {
    Spanned::new(0..0, 24)
}
fn d_v6() -> Spanned<u8> {
    Spanned::new(0..0, 56)
}
fn d_max_qps() -> Spanned<u64> {
    Spanned::new(0..0, 100_000)
}

/// `[rrl]`: response rate limiting over UDP, per client prefix and
/// response class.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RrlConfig {
    /// Off unless set.
    #[serde(default)]
    pub enabled: bool,
    /// Responses per second per client prefix and response class.
    #[serde(default = "d_rate")]
    pub rate: Spanned<u32>,
    /// Responses let through at once before the rate applies (default: `rate`).
    #[serde(default)]
    pub burst: Option<Spanned<u32>>,
    /// Every slip-th limited response is sent truncated (TC=1, no records)
    /// so a real resolver retries over TCP; 0 drops every one.
    #[serde(default = "d_slip")]
    pub slip: Spanned<u32>,
    /// Client prefix lengths that share one allowance.
    #[serde(default = "d_v4")]
    pub ipv4_prefix: Spanned<u8>,
    #[serde(default = "d_v6")]
    pub ipv6_prefix: Spanned<u8>,
    /// Clients never limited.
    #[serde(default)]
    pub exempt: Vec<IpNet>,
    /// Count and log what would be limited, limit nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The highest query rate the table is sized for: entries ≈ 1.4 ×
    /// max_qps / rate (a power of two, 8 bytes each).
    #[serde(default = "d_max_qps")]
    pub max_qps: Spanned<u64>,
}

impl Default for RrlConfig {
    fn default() -> Self {
        RrlConfig {
            enabled: false,
            rate: d_rate(),
            burst: None,
            slip: d_slip(),
            ipv4_prefix: d_v4(),
            ipv6_prefix: d_v6(),
            exempt: Vec::new(),
            dry_run: false,
            max_qps: d_max_qps(),
        }
    }
}

impl RrlConfig {
    pub fn burst(&self) -> u32 {
        self.burst
            .as_ref()
            .map_or(*self.rate.get_ref(), |b| *b.get_ref())
    }
    /// Table entries: 1.4 × max_qps / rate, rounded up to a power of two
    /// (at least 1024, at most 2^24).
    pub fn table_size(&self) -> usize {
        let rate = u64::from((*self.rate.get_ref()).max(1));
        let want = (self.max_qps.get_ref().saturating_mul(14) / 10 / rate) as usize;
        want.clamp(1024, 1 << 24).next_power_of_two()
    }
}

/// `[cookies]`: DNS cookies (RFC 7873) with interoperable server cookies
/// (RFC 9018).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CookiesConfig {
    /// Off unless set: cookie options are then ignored like any unknown option.
    #[serde(default)]
    pub enabled: bool,
    /// A file holding the 16-byte server secret as 32 hex digits (every
    /// server of an anycast set needs the same); absent: a random secret
    /// made at start and replaced on every reload. Either way the previous
    /// secret is still accepted after a change.
    #[serde(default)]
    pub secret_file: Option<Spanned<PathBuf>>,
    /// Over UDP, answer BADCOOKIE to a query that carries a client cookie
    /// but no valid server cookie (RFC 7873 §5.2.3, §5.2.4).
    #[serde(default)]
    pub require: bool,
}

/// Reads a cookie secret file: 32 hex digits (surrounding whitespace allowed).
pub fn read_secret(path: &std::path::Path) -> Result<[u8; 16], String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let hex = text.trim();
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .map_err(|_| format!("{}: not hex digits", path.display()))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "{}: the secret is {} bytes; it must be 16 (32 hex digits)",
            path.display(),
            b.len()
        )
    })
}

/// Checks `[rrl]` and `[cookies]`; every error at its key's line.
pub fn check(
    rrl: &RrlConfig,
    cookies: &CookiesConfig,
    path: &std::path::Path,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let mut err = |span: std::ops::Range<usize>, msg: String| {
        let (l, c) = if span.is_empty() {
            (0, 0)
        } else {
            line_col(text, span.start)
        };
        diags.push(Diagnostic::error(path, l, c, msg));
    };
    // The table keeps time in microseconds (so at most 1 000 000/s) and a
    // burst of at most a day's worth at the rate.
    let rate = *rrl.rate.get_ref();
    if !(1..=1_000_000).contains(&rate) {
        err(
            rrl.rate.span(),
            format!("rrl.rate = {rate}: must be 1 to 1000000 responses per second"),
        );
    }
    if let Some(b) = &rrl.burst {
        let max = u64::from(rate.max(1)) * 86_400;
        if *b.get_ref() == 0 || u64::from(*b.get_ref()) > max.min(1_000_000) {
            err(
                b.span(),
                format!(
                    "rrl.burst = {}: must be 1 to {} (a day at the rate, at most 1000000)",
                    b.get_ref(),
                    max.min(1_000_000)
                ),
            );
        }
    }
    if *rrl.slip.get_ref() > 100 {
        err(
            rrl.slip.span(),
            format!(
                "rrl.slip = {}: must be 0 (drop every limited response) to 100",
                rrl.slip.get_ref()
            ),
        );
    }
    for (key, v, min, max) in [
        ("ipv4_prefix", &rrl.ipv4_prefix, 8, 32),
        ("ipv6_prefix", &rrl.ipv6_prefix, 16, 128),
    ] {
        if !(min..=max).contains(v.get_ref()) {
            err(
                v.span(),
                format!("rrl.{key} = {}: must be {min} to {max}", v.get_ref()),
            );
        }
    }
    if *rrl.max_qps.get_ref() == 0 {
        err(rrl.max_qps.span(), "rrl.max_qps must be at least 1".into());
    }
    if let Some(f) = &cookies.secret_file {
        if let Err(e) = read_secret(f.get_ref()) {
            err(f.span(), format!("cookies.secret_file: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_value_is_an_error_at_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.zone"), "").expect("write");
        std::fs::write(dir.path().join("short.key"), "abcd\n").expect("write");
        let text = "[zones.\"example.com\"]\nfile = \"a.zone\"\n[rrl]\nenabled = true\n\
                    rate = 0\nslip = 101\nipv4_prefix = 33\nipv6_prefix = 8\nburst = 0\n\
                    max_qps = 0\n[cookies]\nsecret_file = \"short.key\"\n";
        let e =
            crate::config::Config::parse(&dir.path().join("g.toml"), text).expect_err("invalid");
        let lines: Vec<(usize, String)> = e.errors().map(|d| (d.line, d.message.clone())).collect();
        let at = |line: usize, what: &str| {
            assert!(
                lines.iter().any(|(l, m)| *l == line && m.contains(what)),
                "{what} at line {line}: {lines:?}"
            )
        };
        at(5, "rrl.rate");
        at(6, "rrl.slip");
        at(7, "rrl.ipv4_prefix");
        at(8, "rrl.ipv6_prefix");
        at(9, "rrl.burst");
        at(10, "rrl.max_qps");
        at(12, "16 (32 hex digits)");
        std::fs::write(
            dir.path().join("good.key"),
            "e5e973e5a6b2a43f48e7dc849e37bfcf\n",
        )
        .expect("write");
        let ok = "[zones.\"example.com\"]\nfile = \"a.zone\"\n[cookies]\nenabled = true\nsecret_file = \"good.key\"\n";
        let c = crate::config::Config::parse(&dir.path().join("g.toml"), ok).expect("valid");
        assert!(c.cookies.enabled && c.cookies.secret_file.is_some());
    }

    #[test]
    fn table_size_follows_the_rate() {
        let mut c = RrlConfig::default();
        assert_eq!(c.table_size(), 8192, "1.4 × 100 000 / 20 = 7000");
        c.rate = Spanned::new(0..0, 1);
        assert_eq!(c.table_size(), 1 << 18);
        c.rate = Spanned::new(0..0, 1_000_000);
        assert_eq!(c.table_size(), 1024);
        c.rate = Spanned::new(0..0, 1_000_001);
        c.burst = Some(Spanned::new(0..0, 5));
        let mut d = Vec::new();
        check(
            &c,
            &CookiesConfig::default(),
            std::path::Path::new("g.toml"),
            "",
            &mut d,
        );
        assert!(d[0].message.contains("1 to 1000000"), "{d:?}");
    }
}
