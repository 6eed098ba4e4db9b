//! The lab's processes, from its file (`deploy/lab/lab.toml`) and the geolb
//! config it names: every backend of the config's `[groups]`, a prober per
//! region (a `[health.vantages]` entry, listening where its url points), a
//! tier node per region with `[listeners]`, and the DNS nodes the lab file
//! lists. Each process is a geolb command line and the URL that answers
//! 200 once it is ready.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("{0}")]
    Config(#[from] crate::diag::LoadError),
    /// Starting, stopping or driving the processes failed.
    #[error("{0}")]
    Run(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLab {
    config: PathBuf,
    #[serde(default)]
    drill: Option<PathBuf>,
    #[serde(default)]
    dns: Vec<DnsNode>,
    #[serde(default)]
    regions: BTreeMap<String, RawRegion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    #[serde(default)]
    tier_admin: Option<SocketAddr>,
    #[serde(default)]
    prober: Option<String>,
}

/// One DNS node of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsNode {
    pub name: String,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
}

/// What a process is; the lab starts them in this order (each role once
/// the one before is ready) and stops them in the reverse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Backend,
    Tier,
    Prober,
    Dns,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Backend => "backend",
            Role::Tier => "tier",
            Role::Prober => "prober",
            Role::Dns => "dns",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Role::Backend => "backends",
            Role::Tier => "tier nodes",
            Role::Prober => "probers",
            Role::Dns => "DNS nodes",
        }
    }
}

/// One process of the lab.
#[derive(Debug, Clone, PartialEq)]
pub struct Proc {
    /// Unique in the lab: `ns1`, `tier-us-east`, `prober-us`, `us-app-1`.
    pub name: String,
    pub role: Role,
    /// The region it belongs to (none for DNS nodes).
    pub region: Option<String>,
    /// A backend's `[groups]` table.
    pub group: Option<String>,
    /// The geolb arguments (after the binary).
    pub args: Vec<String>,
    /// Where `GET ready_path` answers 200 once the process is ready.
    pub ready_at: SocketAddr,
    pub ready_path: &'static str,
}

/// The lab: its files and its processes in start order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The lab file, absolute.
    pub lab: PathBuf,
    /// The geolb config every process reads, absolute.
    pub config: PathBuf,
    /// The drill scenario `geolb lab drill` runs.
    pub drill: Option<PathBuf>,
    pub dns: Vec<DnsNode>,
    pub procs: Vec<Proc>,
    /// HTTP listeners by VIP address: (listener bind, region).
    pub http_listeners: Vec<(SocketAddr, String)>,
}

/// `http://127.0.1.54:8054` (a trailing `/` allowed) → the address.
fn url_addr(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

fn to_args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

impl Plan {
    pub fn read(lab: &Path) -> Result<Plan, LabError> {
        let lab = std::path::absolute(lab).map_err(|e| LabError::Read(lab.to_path_buf(), e))?;
        let text = std::fs::read_to_string(&lab).map_err(|e| LabError::Read(lab.clone(), e))?;
        let invalid = |msg: String| LabError::Invalid {
            path: lab.clone(),
            msg,
        };
        let raw: RawLab = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let base = lab.parent().unwrap_or(Path::new("/"));
        let config = base.join(&raw.config);
        let cfg = crate::config::Config::load(&config)?;
        let cfg_arg = config.to_string_lossy().to_string();

        let mut procs = Vec::new();
        for g in &cfg.groups {
            let region = g.value.region.get_ref();
            for (i, m) in g.value.members.get_ref().iter().enumerate() {
                let addr = m.address.to_string();
                procs.push(Proc {
                    name: format!("{}-{}", g.name, i + 1),
                    role: Role::Backend,
                    region: Some(region.clone()),
                    group: Some(g.name.clone()),
                    args: to_args(&[
                        "lab",
                        "backend",
                        "--listen",
                        &addr,
                        "--name",
                        &format!("{}/{addr}", g.name),
                    ]),
                    ready_at: m.address,
                    ready_path: "/healthz",
                });
            }
        }
        for (region, r) in &raw.regions {
            if !cfg.regions.iter().any(|x| &x.name == region) {
                return Err(invalid(format!(
                    "regions.{region}: no such region in {}",
                    config.display()
                )));
            }
            let has_listeners = cfg
                .listeners
                .iter()
                .any(|l| l.value.region.get_ref() == region);
            match (r.tier_admin, has_listeners) {
                (Some(admin), true) => procs.push(Proc {
                    name: format!("tier-{region}"),
                    role: Role::Tier,
                    region: Some(region.clone()),
                    group: None,
                    args: to_args(&[
                        "serve",
                        "--config",
                        &cfg_arg,
                        "--no-dns",
                        "--region",
                        region,
                        "--admin",
                        &admin.to_string(),
                    ]),
                    ready_at: admin,
                    ready_path: "/v1/ready",
                }),
                (None, true) => {
                    return Err(invalid(format!(
                        "regions.{region}: the region has [listeners]; tier_admin says where its tier node's admin API listens"
                    )))
                }
                (Some(_), false) => {
                    return Err(invalid(format!(
                        "regions.{region}.tier_admin: the region has no [listeners] to run"
                    )))
                }
                (None, false) => {}
            }
            if let Some(v) = &r.prober {
                let Some(vc) = cfg.health.vantages.get(v) else {
                    return Err(invalid(format!(
                        "regions.{region}.prober: no [health.vantages.{v}] in {}",
                        config.display()
                    )));
                };
                let Some(listen) = url_addr(&vc.url) else {
                    return Err(invalid(format!(
                        "regions.{region}.prober: [health.vantages.{v}] url {:?} is not http://ADDRESS:PORT",
                        vc.url
                    )));
                };
                procs.push(Proc {
                    name: format!("prober-{v}"),
                    role: Role::Prober,
                    region: Some(region.clone()),
                    group: None,
                    args: to_args(&[
                        "probe",
                        "--config",
                        &cfg_arg,
                        "--vantage",
                        v,
                        "--listen",
                        &listen.to_string(),
                    ]),
                    ready_at: listen,
                    ready_path: "/v1/ready",
                });
            }
        }
        for v in cfg.health.vantages.keys() {
            if !raw.regions.values().any(|r| r.prober.as_ref() == Some(v)) {
                return Err(invalid(format!(
                    "[health.vantages.{v}] of {} is run by no region here (regions.NAME.prober = {v:?})",
                    config.display()
                )));
            }
        }
        for n in &raw.dns {
            procs.push(Proc {
                name: n.name.clone(),
                role: Role::Dns,
                region: None,
                group: None,
                args: to_args(&[
                    "serve",
                    "--config",
                    &cfg_arg,
                    "--region",
                    "none",
                    "--dns",
                    &n.dns.to_string(),
                    "--admin",
                    &n.admin.to_string(),
                    "--nsid",
                    &n.name,
                ]),
                ready_at: n.admin,
                ready_path: "/v1/ready",
            });
        }
        procs.sort_by_key(|p| p.role);
        let mut seen = std::collections::BTreeSet::new();
        for p in &procs {
            if p.name.is_empty() || p.name.contains(char::is_whitespace) || p.name.contains('/') {
                return Err(invalid(format!(
                    "process name {:?}: no spaces or slashes",
                    p.name
                )));
            }
            if !seen.insert(p.name.as_str()) {
                return Err(invalid(format!("two processes are named {:?}", p.name)));
            }
        }
        let http_listeners = cfg
            .listeners
            .iter()
            .filter(|l| l.value.mode.as_ref().is_some_and(|m| m.get_ref() == "http"))
            .map(|l| (*l.value.bind.get_ref(), l.value.region.get_ref().clone()))
            .collect();
        Ok(Plan {
            config,
            drill: raw.drill.map(|d| base.join(d)),
            dns: raw.dns,
            procs,
            http_listeners,
            lab,
        })
    }

    /// The processes `names` pick: each a process's name, a `[groups]`
    /// table (its backends) or a region (its backends, tier and prober).
    /// None: every process.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Proc>, LabError> {
        if names.is_empty() {
            return Ok(self.procs.iter().collect());
        }
        let mut out: Vec<&Proc> = Vec::new();
        for n in names {
            let picked: Vec<&Proc> = self
                .procs
                .iter()
                .filter(|p| {
                    &p.name == n || p.group.as_ref() == Some(n) || p.region.as_ref() == Some(n)
                })
                .collect();
            if picked.is_empty() {
                return Err(LabError::Run(format!(
                    "{n:?} is no process, group or region of the lab ({})",
                    self.lab.display()
                )));
            }
            for p in picked {
                if !out.iter().any(|q| q.name == p.name) {
                    out.push(p);
                }
            }
        }
        out.sort_by_key(|p| p.role);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Plan {
        let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/lab/lab.toml");
        Plan::read(&lab).expect("the shipped lab reads")
    }

    #[test]
    fn the_shipped_lab_runs_nine_backends_three_tiers_three_probers_and_two_dns_nodes() {
        let p = shipped();
        let count = |r: Role| p.procs.iter().filter(|x| x.role == r).count();
        assert_eq!(
            [Role::Backend, Role::Tier, Role::Prober, Role::Dns].map(count),
            [9, 3, 3, 2]
        );
        // Start order: backends, tiers, probers, DNS nodes.
        assert!(p.procs.windows(2).all(|w| w[0].role <= w[1].role));
        let ns2 = p.procs.iter().find(|x| x.name == "ns2").expect("ns2");
        assert_eq!(ns2.ready_at.to_string(), "127.0.10.2:8053");
        assert!(ns2.args.ends_with(&to_args(&[
            "--region",
            "none",
            "--dns",
            "127.0.10.2:5353",
            "--admin",
            "127.0.10.2:8053",
            "--nsid",
            "ns2"
        ])));
        let prober = p.procs.iter().find(|x| x.name == "prober-us").expect("us");
        assert_eq!(prober.ready_at.to_string(), "127.0.2.54:8054");
        assert_eq!(prober.region.as_deref(), Some("us-east"));
        // Every address of a region lies in its own 127.0.R.0/24.
        for x in &p.procs {
            let octet = match x.region.as_deref() {
                Some("eu-central") => 1,
                Some("us-east") => 2,
                Some("ap-northeast") => 3,
                _ => 10,
            };
            match x.ready_at.ip() {
                std::net::IpAddr::V4(v4) => assert_eq!(v4.octets()[..3], [127, 0, octet], "{x:?}"),
                v6 => panic!("{v6}"),
            }
        }
    }

    #[test]
    fn processes_are_picked_by_name_group_or_region() {
        let p = shipped();
        let names = |sel: &[&str]| -> Vec<String> {
            let sel: Vec<String> = sel.iter().map(|s| s.to_string()).collect();
            p.select(&sel)
                .expect("known")
                .iter()
                .map(|x| x.name.clone())
                .collect()
        };
        assert_eq!(names(&["us-app"]), ["us-app-1", "us-app-2", "us-app-3"]);
        assert_eq!(names(&["ns1", "eu-app-2", "ns1"]), ["eu-app-2", "ns1"]);
        assert_eq!(
            names(&["ap-northeast"]),
            [
                "ap-app-1",
                "ap-app-2",
                "ap-app-3",
                "tier-ap-northeast",
                "prober-ap"
            ]
        );
        assert_eq!(names(&[]).len(), 17);
        let e = p.select(&["nope".into()]).expect_err("unknown").to_string();
        assert!(e.contains("\"nope\""), "{e}");
    }

    #[test]
    fn a_lab_file_that_does_not_match_its_config_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/lab");
        for f in ["geolb.toml", "lab.example.zone"] {
            std::fs::copy(src.join(f), dir.path().join(f)).expect("copy");
        }
        let good = std::fs::read_to_string(src.join("lab.toml")).expect("lab.toml");
        for (from, to, why) in [
            (
                "prober = \"us\"",
                "prober = \"uk\"",
                "no [health.vantages.uk]",
            ),
            ("prober = \"us\"", "", "run by no region"),
            ("tier_admin = \"127.0.2.10:8053\"", "", "tier_admin says"),
            ("[regions.us-east]", "[regions.us-west]", "no such region"),
            ("name = \"ns2\"", "name = \"ns1\"", "two processes"),
            ("config = ", "bogus = 1\nconfig = ", "bogus"),
        ] {
            let lab = dir.path().join("lab.toml");
            std::fs::write(&lab, good.replacen(from, to, 1)).expect("write");
            let e = Plan::read(&lab).expect_err(why).to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
