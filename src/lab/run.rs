//! Starting, stopping and watching the lab's processes.
//!
//! The run directory holds `pids` (one line a process: `PID NAME
//! COMMAND LINE`), `logs/NAME.log` and the drill's report. A process is
//! the lab's only while `/proc/PID/cmdline` is still the command line the
//! lab started it with: nothing else is ever signalled, and a line whose
//! process is gone (or whose PID now runs something else) is dropped.

use std::fmt::Write as _;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::plan::{LabError, Plan, Proc, Role};

/// The pid file in the run directory.
pub const PIDS: &str = "pids";
/// How long a role's processes may take to become ready.
pub const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long the DNS nodes may take to see every pool up under one epoch.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// SIGTERM, then this long before SIGKILL.
pub const STOP_WITHIN: Duration = Duration::from_secs(5);

/// One line of the pid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub pid: u32,
    pub name: String,
    /// The arguments, binary first, joined by spaces.
    pub cmdline: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |e| LabError::Read(path.to_path_buf(), e)
}

/// The pid file's entries (none when there is no file).
pub fn read_pids(dir: &Path) -> Result<Vec<Entry>, LabError> {
    let path = dir.join(PIDS);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LabError::Read(path, e)),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.splitn(3, ' ');
        let (Some(pid), Some(name), Some(cmdline)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(pid) = pid.parse() else {
            return Err(LabError::Invalid {
                path,
                msg: format!("line {}: {pid:?} is not a PID", i + 1),
            });
        };
        out.push(Entry {
            pid,
            name: name.to_string(),
            cmdline: cmdline.to_string(),
        });
    }
    Ok(out)
}

/// Writes the pid file (by rename, so a reader sees all of it or the old
/// one); no entries: no file.
fn write_pids(dir: &Path, entries: &[Entry]) -> Result<(), LabError> {
    let path = dir.join(PIDS);
    if entries.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::Read(path, e)),
            _ => Ok(()),
        };
    }
    let mut text = String::new();
    for e in entries {
        let _ = writeln!(text, "{} {} {}", e.pid, e.name, e.cmdline);
    }
    let tmp = dir.join(format!("{PIDS}.tmp"));
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// `/proc/PID/cmdline` with its arguments joined by spaces; None when
/// there is no such process, or it is a zombie. A process that is still
/// in execve(2) — as one just spawned can be — shows an empty command line
/// for a moment: it is read again for up to 100 ms.
fn cmdline_of(pid: u32) -> Option<String> {
    let mut raw = Vec::new();
    for _ in 0..20 {
        raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !raw.is_empty() || zombie {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if raw.is_empty() {
        return None;
    }
    let args: Vec<String> = raw
        .strip_suffix(&[0])
        .unwrap_or(&raw)
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(args.join(" "))
}

/// Whether the entry's process still runs the command the lab started.
pub fn running(e: &Entry) -> bool {
    cmdline_of(e.pid).is_some_and(|c| c == e.cmdline)
}

/// Sends `sig` to the entry's process if it is still the lab's.
fn signal(e: &Entry, sig: i32) {
    if !running(e) {
        return;
    }
    let Ok(pid) = i32::try_from(e.pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers; the PID was checked just above
    // to run the command line the lab started, and the signal is a valid one.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Ends the entries' processes: SIGTERM, up to [`STOP_WITHIN`], then
/// SIGKILL. Returns how many were running.
fn terminate(entries: &[&Entry], out: &mut dyn Write) -> Result<usize, LabError> {
    let live: Vec<&Entry> = entries.iter().copied().filter(|e| running(e)).collect();
    for e in &live {
        let _ = writeln!(out, "stopping {} (pid {})", e.name, e.pid);
        signal(e, libc::SIGTERM);
    }
    let gone = |limit: Duration| {
        let end = Instant::now() + limit;
        loop {
            if live.iter().all(|e| !running(e)) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    if !gone(STOP_WITHIN) {
        for e in live.iter().filter(|e| running(e)) {
            let _ = writeln!(
                out,
                "{} (pid {}) still runs after {STOP_WITHIN:?}: SIGKILL",
                e.name, e.pid
            );
            signal(e, libc::SIGKILL);
        }
        if !gone(Duration::from_secs(2)) {
            let left: Vec<String> = live
                .iter()
                .filter(|e| running(e))
                .map(|e| format!("{} (pid {})", e.name, e.pid))
                .collect();
            return Err(LabError::Run(format!(
                "still running after SIGKILL: {}",
                left.join(", ")
            )));
        }
    }
    Ok(live.len())
}

/// Stops the lab's processes in `dir` — those named in `only`, or all —
/// and removes them from the pid file (the file itself once empty).
/// Idempotent: with nothing running it says so and succeeds.
pub fn stop(dir: &Path, only: Option<&[String]>, out: &mut dyn Write) -> Result<usize, LabError> {
    let entries = read_pids(dir)?;
    let (mine, keep): (Vec<&Entry>, Vec<&Entry>) = entries
        .iter()
        .partition(|e| only.is_none_or(|names| names.contains(&e.name)));
    // Newest role first: DNS nodes before the probers, tiers and backends.
    let mine: Vec<&Entry> = mine.into_iter().rev().collect();
    let n = terminate(&mine, out)?;
    let keep: Vec<Entry> = keep.into_iter().filter(|e| running(e)).cloned().collect();
    write_pids(dir, &keep)?;
    if n == 0 {
        let _ = writeln!(out, "nothing of the lab runs in {}", dir.display());
    } else {
        let _ = writeln!(out, "stopped {n} processes");
    }
    Ok(n)
}

/// Held while processes are being started in a run directory, so two
/// starts cannot interleave their pid files.
struct StartLock(PathBuf);

impl StartLock {
    fn take(dir: &Path) -> Result<StartLock, LabError> {
        let path = dir.join("start.lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(StartLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let alive = holder
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .and_then(cmdline_of)
                        .is_some_and(|c| c.contains(" lab "));
                    if alive {
                        return Err(LabError::Run(format!(
                            "another `geolb lab` (pid {}) is starting processes in {}",
                            holder.trim(),
                            dir.display()
                        )));
                    }
                    // Left by a start that died: take it over.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(LabError::Read(path, e)),
            }
        }
        Err(LabError::Run(format!("cannot lock {}", path.display())))
    }
}

impl Drop for StartLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The admin APIs' client, for the short synchronous calls of the lab.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Result<Http, LabError> {
        crate::health::ensure_tls_provider();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LabError::Run(format!("cannot start the async runtime: {e}")))?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| LabError::Run(format!("HTTP client: {e}")))?;
        Ok(Http { rt, client })
    }

    fn get(&self, addr: SocketAddr, path: &str) -> Result<Value, String> {
        self.rt.block_on(crate::admin::client::call(
            &self.client,
            &addr.to_string(),
            None,
            "GET",
            path,
            None,
        ))
    }
}

/// Begins what a process the lab started writes to its log.
const LOG_HEADER: &str = "---- geolb lab started";

/// The last `n` lines of a log, of its newest process only (logs are
/// appended to across restarts).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let newest = text.rfind(LOG_HEADER).map_or(&text[..], |i| &text[i..]);
    let lines: Vec<&str> = newest.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn now_unix() -> f64 {
    crate::health::unix(std::time::SystemTime::now())
}

/// The lab in a run directory.
pub struct Lab<'a> {
    pub plan: &'a Plan,
    /// The run directory, absolute.
    pub dir: PathBuf,
    /// The geolb binary every process runs.
    pub bin: PathBuf,
    /// How to call the lab in hints ("deploy/lab/lab", "geolb lab").
    pub command: String,
}

struct Started<'p> {
    proc: &'p Proc,
    child: Child,
    entry: Entry,
    ready: bool,
}

impl<'a> Lab<'a> {
    /// The run directory's default: `run/` beside the lab file.
    pub fn default_dir(lab: &Path) -> PathBuf {
        std::path::absolute(lab)
            .unwrap_or_else(|_| lab.to_path_buf())
            .parent()
            .unwrap_or(Path::new("/"))
            .join("run")
    }

    fn log_of(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn cmdline(&self, p: &Proc) -> String {
        std::iter::once(self.bin.to_string_lossy().into_owned())
            .chain(p.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn spawn(&self, p: &Proc) -> Result<(Child, Entry), LabError> {
        let log_path = self.log_of(&p.name);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let cmdline = self.cmdline(p);
        let _ = writeln!(log, "{LOG_HEADER} at {:.0} (unix): {cmdline}", now_unix());
        let err_log = log.try_clone().map_err(io_err(&log_path))?;
        use std::os::unix::process::CommandExt;
        let child = Command::new(&self.bin)
            .args(&p.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            // Its own process group: a Ctrl-C in the terminal that ran
            // `lab start` later does not reach the lab.
            .process_group(0)
            .env_remove("NOTIFY_SOCKET")
            .spawn()
            .map_err(|e| LabError::Run(format!("{}: {}: {e}", p.name, self.bin.display())))?;
        let entry = Entry {
            pid: child.id(),
            name: p.name.clone(),
            cmdline,
        };
        Ok((child, entry))
    }

    /// Starts `procs`, role by role, each role once the one before is
    /// ready. On any failure stops every process it started and says why,
    /// with the end of that process's log.
    fn start_procs(
        &self,
        procs: &[&Proc],
        kept: &[Entry],
        out: &mut dyn Write,
    ) -> Result<(), LabError> {
        let http = Http::new()?;
        let mut started: Vec<Started<'_>> = Vec::new();
        let res = self.start_roles(procs, kept, &http, &mut started, out);
        if let Err(e) = res {
            let _ = writeln!(out, "failed; stopping what was started");
            let entries: Vec<&Entry> = started.iter().rev().map(|s| &s.entry).collect();
            let stopped = terminate(&entries, out);
            for s in &mut started {
                let _ = s.child.try_wait();
            }
            write_pids(&self.dir, kept)?;
            stopped?;
            return Err(e);
        }
        Ok(())
    }

    fn start_roles<'p>(
        &self,
        procs: &[&'p Proc],
        kept: &[Entry],
        http: &Http,
        started: &mut Vec<Started<'p>>,
        out: &mut dyn Write,
    ) -> Result<(), LabError> {
        for role in [Role::Backend, Role::Tier, Role::Prober, Role::Dns] {
            let these: Vec<&&Proc> = procs.iter().filter(|p| p.role == role).collect();
            if these.is_empty() {
                continue;
            }
            let first = started.len();
            for p in these {
                let (child, entry) = self.spawn(p)?;
                let _ = writeln!(out, "started {} (pid {})", p.name, entry.pid);
                started.push(Started {
                    proc: p,
                    child,
                    entry,
                    ready: false,
                });
                // Written after every start, so a `lab stop` finds every
                // process even if this one dies half-way.
                let all: Vec<Entry> = kept
                    .iter()
                    .cloned()
                    .chain(started.iter().map(|s| s.entry.clone()))
                    .collect();
                write_pids(&self.dir, &all)?;
            }
            let end = Instant::now() + READY_WITHIN;
            loop {
                let mut waiting = Vec::new();
                for s in started[first..].iter_mut().filter(|s| !s.ready) {
                    if let Ok(Some(status)) = s.child.try_wait() {
                        return Err(LabError::Run(format!(
                            "{} exited ({status}) before it was ready; the end of {}:\n{}",
                            s.proc.name,
                            self.log_of(&s.proc.name).display(),
                            tail(&self.log_of(&s.proc.name), 15)
                        )));
                    }
                    match http.get(s.proc.ready_at, s.proc.ready_path) {
                        Ok(_) => s.ready = true,
                        Err(e) => waiting.push((s.proc.name.clone(), e)),
                    }
                }
                if waiting.is_empty() {
                    let _ = writeln!(out, "{} ready", role.plural());
                    break;
                }
                if Instant::now() >= end {
                    let (name, why) = &waiting[0];
                    return Err(LabError::Run(format!(
                        "{name} was not ready within {READY_WITHIN:?} ({why}); the end of {}:\n{}",
                        self.log_of(name).display(),
                        tail(&self.log_of(name), 15)
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Starts the lab (`names` empty), refused while any of it runs; or
    /// the processes `names` pick, refused if one of them runs.
    pub fn start(&self, names: &[String], out: &mut dyn Write) -> Result<(), LabError> {
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(io_err(&logs))?;
        let _lock = StartLock::take(&self.dir)?;
        let live: Vec<Entry> = read_pids(&self.dir)?.into_iter().filter(running).collect();
        if names.is_empty() && !live.is_empty() {
            return Err(LabError::Run(format!(
                "the lab in {} is already running ({} processes; {}); stop it first: {}",
                self.dir.display(),
                live.len(),
                self.cmd("status"),
                self.cmd("stop")
            )));
        }
        let procs = self.plan.select(names)?;
        if let Some(e) = live.iter().find(|e| procs.iter().any(|p| p.name == e.name)) {
            return Err(LabError::Run(format!(
                "{} is already running (pid {})",
                e.name, e.pid
            )));
        }
        write_pids(&self.dir, &live)?;
        self.start_procs(&procs, &live, out)?;
        if names.is_empty() {
            let _ = writeln!(
                out,
                "waiting until {} see every pool up under one health epoch",
                self.dns_names()
            );
            match self.settle(SETTLE_WITHIN) {
                Ok(epoch) => {
                    let _ = writeln!(out, "settled: health epoch {epoch} on every DNS node");
                }
                Err(e) => {
                    let _ = writeln!(out, "not settled within {SETTLE_WITHIN:?}: {e}");
                }
            }
            self.hints(out);
        }
        Ok(())
    }

    fn dns_names(&self) -> String {
        let n: Vec<&str> = self.plan.dns.iter().map(|d| d.name.as_str()).collect();
        n.join(" and ")
    }

    /// Whether every DNS node sees every vantage fresh and every pool
    /// healthy, all under one health epoch: its id, or what is not so yet.
    fn settled(&self, http: &Http) -> Result<String, String> {
        let mut ids: Vec<(String, String)> = Vec::new();
        for n in &self.plan.dns {
            let st = http.get(n.admin, "/v1/status")?;
            let h = &st["health"];
            let empty = Vec::new();
            for v in h["vantages"].as_array().unwrap_or(&empty) {
                if v["fresh"] != true {
                    return Err(format!("{}: vantage {} is not fresh", n.name, v["vantage"]));
                }
            }
            for p in h["pools"].as_array().unwrap_or(&empty) {
                if p["healthy"] != true {
                    return Err(format!("{}: pool {} is down", n.name, p["pool"]));
                }
            }
            let id = h["epoch"]["id"].as_str().unwrap_or("?").to_string();
            ids.push((n.name.clone(), id));
        }
        match ids.first() {
            Some((_, first)) if ids.iter().all(|(_, id)| id == first) => Ok(first.clone()),
            Some(_) => Err(format!(
                "health epochs differ: {}",
                ids.iter()
                    .map(|(n, id)| format!("{n} {id}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => Err("the lab has no DNS node".into()),
        }
    }

    /// Waits up to `limit` for [`Self::settled`].
    pub fn settle(&self, limit: Duration) -> Result<String, String> {
        let http = Http::new().map_err(|e| e.to_string())?;
        let end = Instant::now() + limit;
        loop {
            match self.settled(&http) {
                Ok(id) => return Ok(id),
                Err(e) if Instant::now() >= end => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The lab command `sub` as the user types it (with `--dir` when the
    /// run directory is not the default one).
    fn cmd(&self, sub: &str) -> String {
        let mut c = format!("{} {sub}", self.command);
        if self.dir != Lab::default_dir(&self.plan.lab) {
            let _ = write!(c, " --dir {}", self.dir.display());
        }
        c
    }

    /// The geolb binary as the user can type it: relative to the current
    /// directory when it lies below it.
    fn bin_shown(&self) -> String {
        let cwd = std::env::current_dir().unwrap_or_default();
        match self.bin.strip_prefix(&cwd) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => self.bin.display().to_string(),
        }
    }

    /// What to type next, with the answers the lab gives right now.
    fn hints(&self, out: &mut dyn Write) {
        let Some(ns1) = self.plan.dns.first() else {
            return;
        };
        let (ip, port) = (ns1.dns.ip(), ns1.dns.port());
        let name = "www.lab.example";
        let shown = |a: &[IpAddr]| {
            if a.is_empty() {
                "no answer yet".to_string()
            } else {
                a.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let mut lines: Vec<(String, String)> = Vec::new();
        let plain = ask(ns1.dns, name, None);
        lines.push((
            format!("dig @{ip} -p {port} {name} +nsid"),
            format!("{}: no client subnet, the default order", shown(&plain)),
        ));
        for (vip, region) in &self.plan.http_listeners {
            let IpAddr::V4(v4) = vip.ip() else {
                continue;
            };
            let o = v4.octets();
            let subnet = format!("{}.{}.{}.0/24", o[0], o[1], o[2]);
            let got = ask(ns1.dns, name, Some(&subnet));
            lines.push((
                format!("dig @{ip} -p {port} {name} +subnet={subnet}"),
                format!("{}: a client of {region}", shown(&got)),
            ));
        }
        if let Some(vip) = plain.first().and_then(|a| {
            self.plan
                .http_listeners
                .iter()
                .find(|(l, _)| l.ip() == *a)
                .map(|(l, _)| *l)
        }) {
            lines.push((
                format!("curl http://{vip}/"),
                "through that VIP's tier to a backend".into(),
            ));
        }
        for n in &self.plan.dns {
            lines.push((
                format!("http://{}/", n.admin),
                format!("{}'s status page (in a browser)", n.name),
            ));
        }
        lines.push((
            format!("{} status --admin {}", self.bin_shown(), ns1.admin),
            "pools, votes, health epoch, tier backends".into(),
        ));
        lines.push((self.cmd("status"), "every process of the lab".into()));
        if let Some(d) = &self.plan.drill {
            lines.push((
                self.cmd("drill"),
                format!("the drill of {}, and its report", d.display()),
            ));
        }
        lines.push((self.cmd("stop"), "every process the lab started".into()));
        let width = lines.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "\nThe lab runs: {} processes; pids in {}, logs in {}/.\nTry:",
            self.plan.procs.len(),
            self.dir.join(PIDS).display(),
            self.dir.join("logs").display(),
        );
        for (c, why) in lines {
            let _ = writeln!(out, "  {c:<width$}   # {why}");
        }
    }

    /// Each process: pid, running, ready; each DNS node's health epoch.
    pub fn status(&self, out: &mut dyn Write) -> Result<(), LabError> {
        let http = Http::new()?;
        let entries = read_pids(&self.dir)?;
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:>8}  {:<10} ready at",
            "process", "role", "pid", "state"
        );
        for p in &self.plan.procs {
            let e = entries.iter().find(|e| e.name == p.name);
            let (pid, state) = match e {
                Some(e) if running(e) => (
                    e.pid.to_string(),
                    if http.get(p.ready_at, p.ready_path).is_ok() {
                        "ready"
                    } else {
                        "not ready"
                    },
                ),
                _ => ("-".into(), "stopped"),
            };
            let _ = writeln!(
                out,
                "{:<20} {:<8} {pid:>8}  {state:<10} http://{}{}",
                p.name,
                p.role.name(),
                p.ready_at,
                p.ready_path
            );
        }
        for n in &self.plan.dns {
            let line = match http.get(n.admin, "/v1/status") {
                Ok(st) => format!("health epoch {}", st["health"]["epoch"]["id"]),
                Err(e) => e,
            };
            let _ = writeln!(out, "{}: {line}", n.name);
        }
        Ok(())
    }

    /// The lab's processes that do not run, and the pid file's entries.
    fn not_running(&self) -> Result<(Vec<&'a Proc>, Vec<Entry>), LabError> {
        let entries = read_pids(&self.dir)?;
        let down = self
            .plan
            .procs
            .iter()
            .filter(|p| !entries.iter().any(|e| e.name == p.name && running(e)))
            .collect();
        Ok((down, entries))
    }

    /// Runs the lab's drill with `geolb drill run`, the report written to
    /// `report`; then starts again what the drill's command stopped.
    /// Returns the drill's exit status.
    pub fn drill(
        &self,
        scenario: &Path,
        report: &Path,
        out: &mut dyn Write,
    ) -> Result<i32, LabError> {
        let (down, _) = self.not_running()?;
        if !down.is_empty() {
            let names: Vec<&str> = down.iter().map(|p| p.name.as_str()).collect();
            return Err(LabError::Run(format!(
                "not running: {}; start the lab first: {}",
                names.join(", "),
                self.cmd("start")
            )));
        }
        let _ = writeln!(
            out,
            "waiting until {} see every pool up under one health epoch",
            self.dns_names()
        );
        let epoch = self
            .settle(SETTLE_WITHIN)
            .map_err(|e| LabError::Run(format!("the lab did not settle: {e}")))?;
        let _ = writeln!(
            out,
            "health epoch {epoch}; running the drill {}",
            scenario.display()
        );
        let _ = out.flush();
        // A Ctrl-C reaches the drill too, which restores, reports
        // INTERRUPTED and ends; this process outlives it to start again
        // what it stopped.
        let http = Http::new()?;
        let _ctrl_c = {
            let _rt = http.rt.enter();
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok()
        };
        // The scenario's command runs `geolb lab ...`: this binary, on this
        // lab, whatever the caller's PATH holds.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let bin_dir = self.bin.parent().unwrap_or(Path::new("/"));
        let path = std::env::join_paths(
            std::iter::once(bin_dir.to_path_buf()).chain(std::env::split_paths(&path)),
        )
        .map_err(|e| LabError::Run(format!("PATH: {e}")))?;
        let status = Command::new(&self.bin)
            .arg("drill")
            .arg("run")
            .arg(scenario)
            .arg("--out")
            .arg(report)
            .env("PATH", path)
            .env("GEOLB_LAB", &self.plan.lab)
            .env("GEOLB_LAB_DIR", &self.dir)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| LabError::Run(format!("geolb drill run: {e}")))?;
        let code = status.code().unwrap_or(1);
        // What the drill's command stopped comes back.
        let (stopped, entries) = self.not_running()?;
        if !stopped.is_empty() {
            let names: Vec<&str> = stopped.iter().map(|p| p.name.as_str()).collect();
            let _ = writeln!(
                out,
                "starting again what the drill stopped: {}",
                names.join(", ")
            );
            let _lock = StartLock::take(&self.dir)?;
            let live: Vec<Entry> = entries.into_iter().filter(running).collect();
            self.start_procs(&stopped, &live, out)?;
        }
        let _ = writeln!(
            out,
            "\ndrill report: {} (report.json and timeline.svg beside it); exit {code}",
            report.join("report.md").display()
        );
        Ok(code)
    }
}

/// The A records `dns` answers for `name`, asked over UDP (with ECS when
/// `subnet` is given); empty when it does not answer.
fn ask(dns: SocketAddr, name: &str, subnet: Option<&str>) -> Vec<IpAddr> {
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::{Name, RData, RecordType};
    let Ok(qname) = Name::from_ascii(name) else {
        return Vec::new();
    };
    let mut m = Message::query();
    m.metadata.id = (std::process::id() & 0xffff) as u16;
    m.add_query(Query::query(qname, RecordType::A));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some(net) = subnet.and_then(|s| s.parse::<ipnet::IpNet>().ok()) {
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            net.network(),
            net.prefix_len(),
            0,
        )));
    }
    m.edns = Some(e);
    let reply = (|| {
        let sock = UdpSocket::bind((IpAddr::from([0u8, 0, 0, 0]), 0)).ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        sock.send_to(&m.to_vec().ok()?, dns).ok()?;
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).ok()?;
        Message::from_vec(&buf[..n]).ok()
    })();
    reply
        .map(|r| {
            r.answers
                .iter()
                .filter_map(|a| match &a.data {
                    RData::A(ip) => Some(IpAddr::V4(ip.0)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_file_reads_back_what_was_written_and_goes_when_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries = vec![
            Entry {
                pid: 42,
                name: "ns1".into(),
                cmdline: "/path with space/geolb serve --config /x/geolb.toml".into(),
            },
            Entry {
                pid: 7,
                name: "us-app-1".into(),
                cmdline: "geolb lab backend".into(),
            },
        ];
        write_pids(dir.path(), &entries).expect("write");
        assert_eq!(read_pids(dir.path()).expect("read"), entries);
        write_pids(dir.path(), &[]).expect("write");
        assert!(!dir.path().join(PIDS).exists());
        assert_eq!(read_pids(dir.path()).expect("read"), []);
    }

    #[test]
    fn a_pid_counts_as_the_labs_only_while_it_runs_the_recorded_command_line() {
        let me = std::process::id();
        let mine = cmdline_of(me).expect("this process has a command line");
        let e = |cmdline: &str| Entry {
            pid: me,
            name: "x".into(),
            cmdline: cmdline.into(),
        };
        assert!(running(&e(&mine)));
        // The same PID running something else (a reused PID) is not ours.
        assert!(!running(&e("/usr/sbin/sshd -D")));
        // Nor is a PID that no longer exists.
        let gone = Entry {
            pid: u32::MAX - 1,
            ..e(&mine)
        };
        assert!(!running(&gone));
    }

    #[test]
    fn stop_signals_only_its_own_processes_and_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = child.id();
        let ours = Entry {
            pid,
            name: "sleeper".into(),
            cmdline: cmdline_of(pid).expect("cmdline"),
        };
        // A line whose PID now runs another command is not signalled.
        let other = Entry {
            pid: std::process::id(),
            name: "reused".into(),
            cmdline: "something else".into(),
        };
        write_pids(dir.path(), &[ours, other]).expect("write");
        let mut out = Vec::new();
        let n = stop(dir.path(), None, &mut out).expect("stop");
        assert_eq!(n, 1, "{}", String::from_utf8_lossy(&out));
        let status = child.wait().expect("reaped");
        assert!(!status.success(), "ended by SIGTERM: {status}");
        assert!(!dir.path().join(PIDS).exists());
        let n = stop(dir.path(), None, &mut out).expect("again");
        assert_eq!(n, 0);
        assert!(String::from_utf8_lossy(&out).contains("nothing of the lab runs"));
    }
}
