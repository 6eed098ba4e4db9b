//! `[rrl]` and `[cookies]` compiled into the snapshot's [`Guard`]. The
//! rate-limit table is kept across reloads while its settings are the same
//! (so a reload does not hand every limited client a fresh burst); the
//! cookie secret rotates (the old one still verifies); counters carry over.

use std::sync::Arc;

use ring::rand::SecureRandom;

use crate::config::guard::read_secret;
use crate::config::Config;
use crate::diag::Diagnostic;
use crate::guard::{cookie, rrl, Guard};

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No system randomness: still unpredictable enough to keep keys
        // apart per process (never expected on a working system).
        let mut r = fastrand::Rng::new();
        b.iter_mut().for_each(|x| *x = r.u8(..));
    }
    b
}

/// The settings `[rrl]` compiles to, when enabled.
pub fn rrl_settings(config: &Config) -> Option<rrl::Settings> {
    let c = &config.rrl;
    c.enabled.then(|| rrl::Settings {
        rate: *c.rate.get_ref(),
        burst: c.burst(),
        slip: *c.slip.get_ref(),
        ipv4_prefix: *c.ipv4_prefix.get_ref(),
        ipv6_prefix: *c.ipv6_prefix.get_ref(),
        exempt: c.exempt.clone(),
        dry_run: c.dry_run,
        table_size: c.table_size(),
    })
}

/// Compiles the defences; `slots` is the number of counter slots.
pub fn compile(
    config: &Config,
    prev: Option<&Guard>,
    slots: usize,
    diags: &mut Vec<Diagnostic>,
) -> Guard {
    let rrl_stats = prev.map_or_else(|| Arc::new(rrl::Stats::new(slots)), |p| p.rrl_stats.clone());
    let cookie_stats = prev.map_or_else(
        || Arc::new(cookie::Stats::new(slots)),
        |p| p.cookie_stats.clone(),
    );
    let rrl = rrl_settings(config).map(|s| {
        // Same settings: the running table goes on (its counts are state).
        match prev
            .and_then(|p| p.rrl.as_ref())
            .filter(|l| l.settings == s)
        {
            Some(l) => l.clone(),
            None => {
                let k: [u8; 16] = random();
                let (a, b) = k.split_at(8);
                let key = (
                    u64::from_le_bytes(a.try_into().unwrap_or_default()),
                    u64::from_le_bytes(b.try_into().unwrap_or_default()),
                );
                Arc::new(rrl::Limiter::new(s, key, rrl_stats.clone()))
            }
        }
    });
    let cookies = config.cookies.enabled.then(|| {
        let next = match &config.cookies.secret_file {
            Some(f) => match read_secret(f.get_ref()) {
                Ok(s) => s,
                Err(e) => {
                    diags.push(Diagnostic::error(
                        &config.path,
                        0,
                        0,
                        format!("cookies.secret_file: {e}"),
                    ));
                    random()
                }
            },
            None => random(),
        };
        let secrets = match prev.and_then(|p| p.cookies.as_ref()) {
            Some(c) => c.secrets.rotate(next),
            None => cookie::Secrets {
                current: next,
                previous: None,
            },
        };
        cookie::Cookies {
            secrets,
            require: config.cookies.require,
            stats: cookie_stats.clone(),
        }
    });
    Guard {
        rrl,
        cookies,
        rrl_stats,
        cookie_stats,
    }
}
