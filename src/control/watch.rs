//! The config watcher: reloads by itself when the config file, a zone file
//! or another file in their directories changes (`[server] watch_config`).
//!
//! Kubernetes updates a mounted ConfigMap by writing the new files into a
//! fresh `..<timestamp>` directory and renaming a new `..data` symlink over
//! the old one, while `geolb.toml -> ..data/geolb.toml` stays the same link
//! (kubernetes#112677: a watch on the file itself misses the swap). So the
//! watcher polls, inotify-free like the GeoIP watcher: each round it takes a
//! [`Stamp`] of the watched directories — the `..data` link's target and,
//! following links, every visible file's size, modification time and inode —
//! and reloads through [`Control::reload`] (the path SIGHUP and the API take)
//! once a changed stamp has held for one more round, so a file caught
//! half-written is not loaded. A reload that fails keeps the old state and is
//! reported like any other; the watcher tries again at the next change.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{in_background, Control};
use crate::config::Config;

/// Files listed per directory at most; a directory with more is stamped by
/// its first ones (by name) and reported once.
const MAX_ENTRIES: usize = 1024;

/// The watched directories' state: compared, never read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<(PathBuf, Seen)>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// Where a directory's `..data` link points (none: no such link).
    Link(Option<PathBuf>),
    /// A file's size, modification time and inode (following links).
    File(u64, i64, i64, u64),
    /// A directory that could not be read, or that has more files than
    /// are listed.
    Unreadable(String),
    Truncated,
}

impl Stamp {
    /// The directories of the config file and of every zone file, less the
    /// files geolb writes itself (the state file) or watches on its own
    /// (GeoIP databases). Hidden names — the `..data` link's targets, editor
    /// swap files — are left out, and backup files ending in `~`.
    pub fn of(config: &Config) -> Stamp {
        let mut skip: BTreeSet<PathBuf> = config.health.state_file.iter().cloned().collect();
        if let Some(g) = &config.geoip {
            skip.insert(g.city.get_ref().clone());
            skip.extend(g.asn.as_ref().map(|a| a.get_ref().clone()));
        }
        let mut seen = Vec::new();
        for d in Stamp::dirs(config) {
            let link = std::fs::read_link(d.join("..data")).ok();
            seen.push((d.join("..data"), Seen::Link(link)));
            stamp_dir(&d, &skip, &mut seen);
        }
        Stamp(seen)
    }
}

impl Stamp {
    /// The watched directories: the config file's and each zone file's.
    pub fn dirs(config: &Config) -> BTreeSet<PathBuf> {
        let dir = |p: &Path| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut dirs = BTreeSet::new();
        dirs.insert(dir(&config.path));
        for z in &config.zones {
            dirs.insert(dir(&z.file));
        }
        dirs
    }
}

fn stamp_dir(d: &Path, skip: &BTreeSet<PathBuf>, out: &mut Vec<(PathBuf, Seen)>) {
    let entries = match std::fs::read_dir(d) {
        Ok(e) => e,
        Err(e) => {
            out.push((d.to_path_buf(), Seen::Unreadable(e.to_string())));
            return;
        }
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| {
            let n = n.to_string_lossy();
            !n.starts_with('.') && !n.ends_with('~')
        })
        .map(|n| d.join(n))
        .filter(|p| !skip.contains(p))
        .collect();
    names.sort();
    if names.len() > MAX_ENTRIES {
        names.truncate(MAX_ENTRIES);
        out.push((d.to_path_buf(), Seen::Truncated));
    }
    for p in names {
        // Following links: a ConfigMap's `geolb.toml -> ..data/geolb.toml`
        // changes inode when `..data` moves.
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => {
                let seen = Seen::File(m.len(), m.mtime(), m.mtime_nsec(), m.ino());
                out.push((p, seen));
            }
            Ok(_) => {}
            Err(e) => out.push((p, Seen::Unreadable(e.kind().to_string()))),
        }
    }
}

/// How often to look, from the config being served (`None`: off).
fn interval(control: &Control) -> Option<Duration> {
    control.config_path.as_ref()?;
    control.source.load().config.server.watch_config
}

/// Watches until `shutdown` turns true; with `watch_config` off it only
/// looks once a second whether a reload turned it on.
pub(super) async fn run(control: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    let mut pending: Option<Stamp> = None;
    let mut told_truncated = false;
    loop {
        let every = interval(&control);
        tokio::select! {
            _ = tokio::time::sleep(every.unwrap_or(Duration::from_secs(1))) => {}
            _ = shutdown.changed() => return,
        }
        if every.is_none() {
            pending = None;
            continue;
        }
        let c = control.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || Stamp::of(&c.source.load().config)).await
        else {
            continue;
        };
        if !told_truncated && now.0.iter().any(|(_, s)| *s == Seen::Truncated) {
            told_truncated = true;
            tracing::warn!("watch_config: a watched directory has more than {MAX_ENTRIES} files; only the first are watched");
        }
        if control.config_stamp().as_ref() == Some(&now) {
            pending = None;
            continue;
        }
        // Changed: reload once the change has held for a whole round.
        if pending.as_ref() != Some(&now) {
            pending = Some(now);
            continue;
        }
        pending = None;
        tracing::info!("config files changed: reloading");
        let c = control.clone();
        if let Err(e) = in_background("geolb-reload", move || c.reload()).await {
            tracing::error!("reload: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        std::fs::write(dir.join("a.zone"), "x").expect("zone");
        let text = "[zones.\"example.com\"]\nfile = \"a.zone\"\n";
        std::fs::write(dir.join("geolb.toml"), text).expect("config");
        let (c, _) = Config::read(&dir.join("geolb.toml"), text).expect("reads");
        c
    }

    #[test]
    fn a_stamp_changes_with_a_file_or_the_data_link_and_not_with_hidden_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path());
        let first = Stamp::of(&c);
        assert_eq!(first, Stamp::of(&c), "nothing changed");
        std::fs::write(dir.path().join(".geolb.toml.swp"), "x").expect("swap");
        std::fs::write(dir.path().join("geolb.toml~"), "x").expect("backup");
        assert_eq!(first, Stamp::of(&c), "hidden and backup files");
        std::fs::write(dir.path().join("a.zone"), "yy").expect("zone");
        let second = Stamp::of(&c);
        assert_ne!(first, second, "a zone file changed");
        std::os::unix::fs::symlink("..2026", dir.path().join("..data")).expect("link");
        assert_ne!(second, Stamp::of(&c), "a ..data link appeared");
    }
}
