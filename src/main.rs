//! geolb command line: `serve` (DNS and the admin API), `check` (validate
//! config and zones), `explain` (why a client gets its answer), `probe` (run
//! the monitors as a remote vantage), and `status`/`drain`/`undrain`/`force`
//! (operator control of a running node through its admin API).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use geolb::config::Overrides;
use geolb::server::Server;

/// jemalloc: objects of one size class share slabs, so the small objects an
/// idle connection keeps are not strewn between the buffers busy ones
/// borrow; under glibc's malloc those pages stayed resident (9 930 idle
/// HTTP clients: 4.4 KB each against 2.0 KB here; ARCHITECTURE.md).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: one background thread gives freed pages back to the
/// system after a second (its default is ten), so RSS follows what is live;
/// it runs at the lowest priority (`control::demote_allocator_threads`).
// SAFETY: jemalloc reads this NUL-terminated string once, at its first
// allocation; it is the documented way to set its options at build time.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 85] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(
    name = "geolb",
    version,
    about = "GeoDNS global server load balancer: an authoritative DNS server",
    after_help = "Examples:\n  geolb serve                          # shipped sample: geolb.toml in this directory\n  geolb serve --config /etc/geolb/geolb.toml\n  geolb check --config /etc/geolb/geolb.toml"
)]
struct Cli {
    /// Log level or filter (e.g. info, debug, geolb=trace); env GEOLB_LOG also works.
    #[arg(long, global = true, env = "GEOLB_LOG", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where the admin API of a running node is.
#[derive(clap::Args)]
struct Api {
    /// Admin API address.
    #[arg(long, env = "GEOLB_ADMIN", default_value = "127.0.0.1:8053")]
    admin: String,
    /// Bearer token (server.admin_token).
    #[arg(long, env = "GEOLB_ADMIN_TOKEN")]
    token: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve DNS (UDP and TCP) and the admin API.
    #[command(
        after_help = "Examples:\n  geolb serve\n  geolb serve --config deploy/geolb.toml --dns 0.0.0.0:53 --dns [::]:53\n  geolb serve --region eu-central          # DNS + the eu-central tier\n  geolb serve --no-dns --region us-east    # a tier-only node\n  geolb serve --region none                # a DNS-only node\n  kill -HUP <pid>     # reload config and zones (the old data keeps serving if the new is invalid)"
    )]
    Serve {
        /// Config file.
        #[arg(long, short, env = "GEOLB_CONFIG", default_value = "geolb.toml")]
        config: PathBuf,
        /// DNS listen address (repeatable); replaces server.dns.
        #[arg(long = "dns", value_name = "ADDR")]
        dns: Vec<SocketAddr>,
        /// Admin API listen address; replaces server.admin.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// UDP worker threads per listen address (0 = one per CPU).
        #[arg(long, value_name = "N")]
        udp_workers: Option<usize>,
        /// Pin each UDP worker to one CPU and steer packets to the worker
        /// on the receiving CPU; sets server.udp_cpu_affinity.
        #[arg(long)]
        udp_cpu_affinity: bool,
        /// Run the tier listeners of this region (repeatable; replaces
        /// node.regions). `--region none`: no tier listeners (a DNS-only node).
        #[arg(long = "region", value_name = "REGION")]
        regions: Vec<String>,
        /// Do not answer DNS (a tier-only node); sets node.dns = false.
        #[arg(long)]
        no_dns: bool,
        /// This node's name in NSID; replaces server.nsid (for several
        /// nodes of one config on one host).
        #[arg(long, value_name = "NAME", value_parser = nsid_arg)]
        nsid: Option<String>,
    },
    /// Show why a client gets the answer it gets: location, each steering step, the answer.
    #[command(
        after_help = "Examples:\n  geolb explain www.example.com --client 203.0.113.7\n  geolb explain www.example.com AAAA --subnet 2001:db8:e0::/48\n  geolb explain www.example.com --subnet 192.0.2.0/24 --json"
    )]
    Explain {
        /// Name to explain.
        name: String,
        /// Record type.
        #[arg(default_value = "A")]
        qtype: String,
        /// Client address (sent as EDNS Client Subnet with a full prefix).
        #[arg(
            long,
            value_name = "IP",
            conflicts_with = "subnet",
            required_unless_present = "subnet"
        )]
        client: Option<String>,
        /// Client subnet (sent as EDNS Client Subnet).
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// Config file.
        #[arg(long, short, env = "GEOLB_CONFIG", default_value = "geolb.toml")]
        config: PathBuf,
        /// Print JSON (the same document as GET /v1/explain).
        #[arg(long)]
        json: bool,
    },
    /// Run the monitors from this place without serving DNS, and serve the
    /// results at GET /v1/observations for DNS nodes to read.
    #[command(
        after_help = "Examples:\n  geolb probe --config geolb.toml --vantage ams --listen 0.0.0.0:8054\n  (DNS nodes list it under [health.vantages.ams] url = \"http://prober-ams:8054\")"
    )]
    Probe {
        #[arg(long, short, env = "GEOLB_CONFIG", default_value = "geolb.toml")]
        config: PathBuf,
        /// This prober's vantage name.
        #[arg(long)]
        vantage: String,
        /// Listen address for /v1/observations (default: server.admin).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Show where a running node's HTTP listener would send a request: the
    /// rule, the group, persistence, and the backend it would pick now.
    #[command(
        name = "explain-http",
        after_help = "Examples:\n  geolb explain-http eu-http --host www.example.com --path /api/x\n  geolb explain-http eu-http --header 'x-canary: 1' --cookie 'GEOLB=…' --client 198.51.100.7 --json"
    )]
    ExplainHttp {
        /// Listener name (`[listeners.NAME]`, mode = "http").
        listener: String,
        #[arg(long)]
        host: Option<String>,
        #[arg(long, default_value = "/")]
        path: String,
        /// A request header, "name: value" (repeatable).
        #[arg(long, value_name = "HEADER")]
        header: Vec<String>,
        /// The request's Cookie header.
        #[arg(long)]
        cookie: Option<String>,
        /// Client address (source persistence, hashing, rate-limit exemptions).
        #[arg(long, value_name = "IP")]
        client: Option<String>,
        #[arg(long, default_value = "GET")]
        method: String,
        #[command(flatten)]
        api: Api,
        /// Print the JSON of GET /v1/explain-http.
        #[arg(long)]
        json: bool,
    },
    /// Show endpoint and pool health from a running node.
    #[command(
        after_help = "Examples:\n  geolb status\n  geolb status --admin 10.0.0.5:8053 --token $TOKEN --json"
    )]
    Status {
        #[command(flatten)]
        api: Api,
        /// Print the raw JSON of GET /v1/health.
        #[arg(long)]
        json: bool,
    },
    /// Take an endpoint ("pool/address"), pool or region out of answers.
    #[command(
        after_help = "Examples:\n  geolb drain eu-central --for 30m\n  geolb drain eu-web/192.0.2.10"
    )]
    Drain {
        target: String,
        /// Revert by itself after this long ("30m", "2h").
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Withdraw the target from DNS answers first; wait until the
        /// resolvers' cached answers from it have expired (resolver
        /// telemetry), then drain its tier backends.
        #[arg(long)]
        two_phase: bool,
        /// A partial drain: move only this share of client subnets (0.1 =
        /// 10 %) off the target's DNS answers, chosen by a stable hash of
        /// each client's /24 or /56; 1 is the whole drain.
        #[arg(long, value_name = "SHARE", conflicts_with = "two_phase")]
        fraction: Option<f64>,
        /// With --two-phase: the longest wait between the phases.
        #[arg(
            long,
            value_name = "DURATION",
            default_value = "5m",
            requires = "two_phase"
        )]
        max_wait: String,
        #[command(flatten)]
        api: Api,
    },
    /// Remove a drain or forced state.
    #[command(
        after_help = "Examples:\n  geolb undrain eu-central\n  geolb undrain eu-web/192.0.2.10 --admin 10.0.0.5:8053 --token $TOKEN"
    )]
    Undrain {
        target: String,
        #[command(flatten)]
        api: Api,
    },
    /// Force an endpoint, pool or region up or down regardless of checks.
    #[command(
        after_help = "Examples:\n  geolb force eu-web/192.0.2.10 up --for 1h\n  geolb force us-east down"
    )]
    Force {
        target: String,
        #[arg(value_parser = ["up", "down", "none"])]
        state: String,
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        #[command(flatten)]
        api: Api,
    },
    /// What every client of the world gets: the share of the IPv4 and IPv6
    /// address space each region and pool answers, under any health state,
    /// the change from all up or from another config, and a resilience
    /// check. Offline, with the code that answers queries.
    #[command(
        after_help = "Examples:\n  geolb simulate\n  geolb simulate --down eu-central --service www.example.com\n  geolb simulate --drain us-web/127.0.2.1 --type AAAA\n  geolb simulate --against next.toml\n  geolb simulate --admin 127.0.0.1:8053   # under the live health of a running node\n  geolb simulate --resilience 2 --json     # CI: exit 1 if some place loses its answer\n\nExit status: 0, 1 when the resilience check fails, 2 on errors."
    )]
    Simulate {
        /// Config file.
        #[arg(long, short, env = "GEOLB_CONFIG", default_value = "geolb.toml")]
        config: PathBuf,
        /// Only this service (repeatable).
        #[arg(long = "service", value_name = "NAME")]
        services: Vec<String>,
        /// Take down (as failed health checks) these regions, pools or
        /// endpoints (pool/address); comma-separated or repeated.
        #[arg(long, value_name = "TARGETS", value_delimiter = ',')]
        down: Vec<String>,
        /// Drain these regions, pools or endpoints (pool/address).
        #[arg(long, value_name = "TARGETS", value_delimiter = ',')]
        drain: Vec<String>,
        /// Start from a running node's health (its admin API, e.g.
        /// 127.0.0.1:8053): what its checks hold down, its drains and forced
        /// states, plus --down and --drain.
        #[arg(long = "admin", value_name = "ADDR")]
        live: Option<String>,
        /// Bearer token for --admin (server.admin_token).
        #[arg(long, env = "GEOLB_ADMIN_TOKEN", requires = "live")]
        token: Option<String>,
        /// Compare with another config under the same health.
        #[arg(long, value_name = "OTHER.toml")]
        against: Option<PathBuf>,
        /// Check every combination of up to K regions down; exit 1 when one
        /// leaves some place without an answer.
        #[arg(long, value_name = "K")]
        resilience: Option<usize>,
        /// Places listed per failing scenario and service.
        #[arg(long, value_name = "N", default_value_t = 10)]
        top: usize,
        /// Record type the simulated clients ask (A or AAAA).
        #[arg(long = "type", value_name = "TYPE", default_value = "A")]
        qtype: String,
        /// List every network with its answer.
        #[arg(long)]
        per_network: bool,
        /// Weigh by a query log (text or dnstap, '-': standard input):
        /// the share of its queries each region answers, all up and under
        /// --down/--drain (on --against when given), and which move (as
        /// `geolb replay`).
        #[arg(long, value_name = "LOG", conflicts_with_all = ["resilience", "per_network"])]
        queries: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Draw the world coloured by the region that answers it (SVG or PNG),
    /// with a legend; under a health scenario, or before and after one side
    /// by side. Offline, with the code that answers queries.
    #[command(
        after_help = "Examples:\n  geolb map -o map.png\n  geolb map --service www.example.com --down eu-central -o after.svg\n  geolb map --down eu-west --before-after --width 1600 -o eu-west-down.png\n\nThe format follows the output file's extension (.svg, .png) unless --format says; without -o the SVG goes to standard output.\nExit status: 0, 2 on errors."
    )]
    Map {
        /// Config file.
        #[arg(long, short, env = "GEOLB_CONFIG", default_value = "geolb.toml")]
        config: PathBuf,
        /// The service to draw (default: the first, by zone and name).
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Record type the clients ask (A or AAAA).
        #[arg(long = "type", value_name = "TYPE", default_value = "A")]
        qtype: String,
        /// Take down (as failed health checks) these regions, pools or
        /// endpoints (pool/address); comma-separated or repeated.
        #[arg(long, value_name = "TARGETS", value_delimiter = ',')]
        down: Vec<String>,
        /// Drain these regions, pools or endpoints (pool/address).
        #[arg(long, value_name = "TARGETS", value_delimiter = ',')]
        drain: Vec<String>,
        /// Draw all up beside the scenario, with one legend.
        #[arg(long)]
        before_after: bool,
        /// Output file (.svg or .png); standard output when absent.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// svg or png (default: from the output file's extension, else svg).
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
        /// Image width in pixels.
        #[arg(long, value_name = "PX", default_value_t = 1200)]
        width: u32,
    },
    /// Replay a query log against the running config and a proposed one:
    /// where its queries are answered from under each, as a region-to-region
    /// matrix of queries and of distinct resolvers, and the countries whose
    /// queries move. Offline, with the code that answers queries.
    #[command(
        after_help = "A dnstap log (Frame Streams, as Knot's mod-dnstap, CoreDNS, dnsdist and geolb's [dnstap] write it) is recognised by its START frame; its client queries (AUTH_QUERY, CLIENT_QUERY) are replayed.\n\nLog lines: CLIENT NAME [TYPE]\n  CLIENT  the resolver's address, RESOLVER/ECS_ADDRESS/PREFIX, or ADDRESS/PREFIX (a client subnet alone)\n  TYPE    A (default), AAAA, or another type (counted, not replayed)\n  '#' starts a comment; malformed lines are counted and the first few shown.\n\nExamples:\n  geolb replay queries.log --config geolb.toml --against next.toml\n  zcat queries.log.gz | geolb replay - --against next.toml --json\n  geolb replay /var/log/geolb/dnstap.fstrm --against next.toml\n\nExit status: 0, 2 on errors."
    )]
    Replay {
        /// Query log ('-': standard input).
        log: PathBuf,
        /// The running config.
        #[arg(long, short, env = "GEOLB_CONFIG", default_value = "geolb.toml")]
        config: PathBuf,
        /// The proposed config (default: the running one, for a health
        /// scenario alone).
        #[arg(long, value_name = "PROPOSED.toml")]
        against: Option<PathBuf>,
        /// Replay the proposed side with these regions, pools or endpoints
        /// (pool/address) down as failed health checks; comma-separated or
        /// repeated.
        #[arg(long, value_name = "TARGETS", value_delimiter = ',')]
        down: Vec<String>,
        /// Replay the proposed side with these drained.
        #[arg(long, value_name = "TARGETS", value_delimiter = ',')]
        drain: Vec<String>,
        /// Countries listed.
        #[arg(long, value_name = "N", default_value_t = 10)]
        top: usize,
        /// The log's format: dnstap (Frame Streams), text, or auto (dnstap
        /// when it begins with a Frame Streams START frame).
        #[arg(long, value_enum, default_value_t = LogFormatArg::Auto)]
        format: LogFormatArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a failover drill against live nodes and report what moved.
    #[command(
        after_help = "A scenario (TOML):\n  name = \"evacuate eu\"\n  expiry = \"1h\"      # the action expires by itself (max 72h)\n  baseline = \"1m\"    # watch this long before acting (at least the TTL)\n  hold = \"2m\"        # observe this long after acting, then restore\n  [[node]]\n  admin = \"10.0.0.5:8053\"\n  dns = \"10.0.0.5:53\"\n  token_file = \"admin-token\"\n  [action]\n  drain = \"eu\"        # or force_down = \"eu-web\", or command = [...] with target = \"eu\"\n  [observe]\n  name = \"www.example.com\"\n  subnets = [\"192.0.2.0/24\", \"198.51.100.0/24\"]\n  [expect]\n  converge_within = \"30s\"\n\nExamples:\n  geolb drill run evacuate-eu.toml\n  geolb drill run evacuate-eu.toml --out reports/ --json\n  geolb drill run evacuate-eu.toml --shadow --config geolb.toml   # what would change; nothing is set\n\nGradual steps ([action] of a drain): steps = [0.1, 0.5, 1.0] and step_hold = \"30s\": each step drains that share of the target's client subnets (a stable hash of each /24 or /56); the last is held for `hold`.\nTier connection drain: [[tier]] admin = \"10.0.1.5:8053\" (token_file as for nodes): its listeners' new-connection rate before, during and after.\n\nExit status: 0 SUCCEEDED (or SHADOW simulated), 1 FAILED or INTERRUPTED, 3 REFUSED by a pre-check (nothing changed), 2 on errors."
    )]
    Drill {
        #[command(subcommand)]
        cmd: DrillCmd,
    },
    /// The three-region lab on this machine's loopback addresses
    /// (deploy/lab): start it, stop it, see it, drill it.
    #[command(
        after_help = "The lab file (deploy/lab/lab.toml) names the config every process reads and the DNS nodes; the backends, tier nodes and probers come from the config. The run directory (--dir, default run/ beside the lab file) holds the pid file, logs/ and the drill report.\n\nExamples:\n  geolb lab start                    # every process, each role once the one before is ready\n  geolb lab status\n  geolb lab drill                    # the lab file's drill, then what it stopped starts again\n  geolb lab stop us-app              # a process, a [groups] table's backends, or a region\n  geolb lab start us-app             # ... and back\n  geolb lab stop                     # everything the lab started, by PID\n\nExit status: 0; 1 when the lab cannot start, stop or settle (or the drill's own status); 2 on bad arguments."
    )]
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// Validate the config and every zone without serving; exit 1 on errors.
    #[command(
        after_help = "Examples:\n  geolb check\n  geolb check --config /etc/geolb/geolb.toml && systemctl reload geolb"
    )]
    Check {
        /// Config file.
        #[arg(long, short, env = "GEOLB_CONFIG", default_value = "geolb.toml")]
        config: PathBuf,
    },
}

#[derive(clap::Subcommand)]
enum DrillCmd {
    /// Pre-check, act, observe, restore, report.
    Run {
        scenario: PathBuf,
        /// Also write report.json, report.md and timeline.svg into this
        /// directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Print the JSON report instead of Markdown.
        #[arg(long)]
        json: bool,
        /// Run the pre-checks and simulate what the action would change,
        /// from each node's live health; set nothing on any node.
        #[arg(long)]
        shadow: bool,
        /// The config the nodes run, for --shadow (else the scenario's
        /// `config`).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// `--nsid`: what `server.nsid` takes (at most 512 bytes).
fn nsid_arg(s: &str) -> Result<String, String> {
    if s.len() > 512 {
        return Err("at most 512 bytes".into());
    }
    Ok(s.to_string())
}

/// Where the lab is defined and where it runs.
#[derive(clap::Args)]
struct LabAt {
    /// The lab file.
    #[arg(long, env = "GEOLB_LAB", default_value = "deploy/lab/lab.toml")]
    lab: PathBuf,
    /// The run directory: pids, logs, drill report (default: run/ beside the lab file).
    #[arg(long, env = "GEOLB_LAB_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum LabCmd {
    /// Start the lab, or the processes named (a process, group or region).
    Start {
        #[command(flatten)]
        at: LabAt,
        names: Vec<String>,
    },
    /// Stop what the lab started, or the processes named.
    Stop {
        #[command(flatten)]
        at: LabAt,
        names: Vec<String>,
    },
    /// Each process's state, and each DNS node's health epoch.
    Status {
        #[command(flatten)]
        at: LabAt,
    },
    /// Run the lab's drill (or --scenario) and write its report.
    Drill {
        #[command(flatten)]
        at: LabAt,
        /// Scenario (default: the lab file's `drill`).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Report directory (default: drill/ in the run directory).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The lab's HTTP backend: GET /healthz answers ok, anything else who
    /// served it and what it saw of the client.
    Backend {
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// The name it answers with.
        #[arg(long)]
        name: String,
    },
}

fn lab(cmd: LabCmd) -> ExitCode {
    use geolb::lab::plan::Plan;
    use geolb::lab::run::{self, Lab};
    let fail = |e: String| {
        eprintln!("geolb lab: {e}");
        ExitCode::FAILURE
    };
    let dir_of = |at: &LabAt| {
        at.dir.as_ref().map_or_else(
            || Lab::default_dir(&at.lab),
            |d| std::path::absolute(d).unwrap_or_else(|_| d.clone()),
        )
    };
    let mut out = std::io::stdout();
    let at = match cmd {
        LabCmd::Backend { listen, name } => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(format!("cannot start the async runtime: {e}")),
            };
            return match rt.block_on(geolb::lab::backend::serve(listen, name)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("backend on {listen}: {e}")),
            };
        }
        // Stopping everything needs only the pid file: it works even when
        // the lab file is gone or broken.
        LabCmd::Stop { at, names } if names.is_empty() => {
            return match run::stop(&dir_of(&at), None, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(e.to_string()),
            };
        }
        LabCmd::Start { ref at, .. }
        | LabCmd::Stop { ref at, .. }
        | LabCmd::Status { ref at }
        | LabCmd::Drill { ref at, .. } => (at.lab.clone(), dir_of(at)),
    };
    let (lab_file, dir) = at;
    let plan = match Plan::read(&lab_file) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let bin = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot find this binary: {e}")),
    };
    let lab = Lab {
        plan: &plan,
        dir,
        bin,
        command: std::env::var("GEOLB_LAB_COMMAND").unwrap_or_else(|_| "geolb lab".into()),
    };
    let res = match cmd {
        LabCmd::Start { names, .. } => lab.start(&names, &mut out).map(|()| 0),
        LabCmd::Stop { names, .. } => plan.select(&names).and_then(|procs| {
            let names: Vec<String> = procs.iter().map(|p| p.name.clone()).collect();
            run::stop(&lab.dir, Some(&names), &mut out).map(|_| 0)
        }),
        LabCmd::Status { .. } => lab.status(&mut out).map(|()| 0),
        LabCmd::Drill {
            scenario,
            out: report,
            ..
        } => match scenario.or_else(|| plan.drill.clone()) {
            None => {
                return fail(format!(
                    "{}: no drill = \"...\" and no --scenario",
                    plan.lab.display()
                ))
            }
            Some(s) => {
                let report = report.unwrap_or_else(|| lab.dir.join("drill"));
                lab.drill(&s, &report, &mut out)
            }
        },
        LabCmd::Backend { .. } => Ok(0),
    };
    match res {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => fail(e.to_string()),
    }
}

fn drill(cmd: DrillCmd) -> ExitCode {
    let DrillCmd::Run {
        scenario,
        out,
        json,
        shadow,
        config,
    } = cmd;
    let fail = |e: String| {
        eprintln!("geolb: {e}");
        ExitCode::from(2)
    };
    let mut s = match geolb::drill::scenario::Scenario::read(&scenario) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    s.shadow |= shadow;
    if config.is_some() {
        s.config = config;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let report = rt.block_on(geolb::drill::run::run(&s, async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }));
    let md = geolb::drill::markdown::render(&report);
    let js = serde_json::to_string_pretty(&report).unwrap_or_default();
    if let Some(dir) = out {
        let svg = geolb::drill::svg::render(&report);
        let md_file = format!("{md}\n![timeline](timeline.svg)\n");
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("report.md"), &md_file))
            .and_then(|()| std::fs::write(dir.join("report.json"), &js))
            .and_then(|()| std::fs::write(dir.join("timeline.svg"), &svg));
        if let Err(e) = written {
            eprintln!("geolb: {}: {e}", dir.display());
        }
    }
    println!("{}", if json { &js } else { &md });
    use geolb::drill::run::Outcome;
    match report.outcome {
        Outcome::Succeeded => ExitCode::SUCCESS,
        Outcome::Failed | Outcome::Interrupted => ExitCode::from(1),
        Outcome::Refused => ExitCode::from(3),
        Outcome::Shadow if report.shadow.is_none() => ExitCode::from(1),
        Outcome::Shadow if report.prechecks.iter().any(|c| !c.ok) => ExitCode::from(3),
        Outcome::Shadow => ExitCode::SUCCESS,
    }
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(level).with_context(|| format!("invalid log level {level:?}"))?;
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.log_level, cli.log_format) {
        eprintln!("geolb: {e:#}");
        return ExitCode::from(2);
    }
    let json_logs = matches!(cli.log_format, LogFormat::Json);
    let res = match cli.cmd {
        Cmd::Check { config } => return check(&config),
        Cmd::Drill { cmd } => return drill(cmd),
        Cmd::Lab { cmd } => return lab(cmd),
        Cmd::Simulate {
            config,
            services,
            down,
            drain,
            live,
            token,
            against,
            resilience,
            top,
            qtype,
            per_network,
            queries,
            json,
        } => {
            let mut scenario = geolb::sim::Scenario {
                down,
                drain,
                partial: Vec::new(),
            };
            if let Some(admin) = live {
                let api = Api { admin, token };
                match api_call(&api, "GET", "/v1/health", None) {
                    Ok(h) => {
                        let n = scenario.add_live(&h);
                        if !json {
                            eprintln!(
                                "live health from {}: {n} targets down or drained",
                                api.admin
                            );
                        }
                    }
                    Err(e) => {
                        eprintln!("geolb: {e:#}");
                        return ExitCode::from(2);
                    }
                }
            }
            if let Some(log) = queries {
                let opts = geolb::sim::replay::ReplayOptions {
                    top,
                    format: geolb::sim::replay::LogFormat::Auto,
                    health: scenario,
                };
                let against = against.unwrap_or_else(|| config.clone());
                return exit_2_on_error(replay(&log, &config, &against, opts, json));
            }
            let opts = geolb::sim::QType::parse(&qtype).map(|qtype| geolb::sim::Options {
                services,
                scenario,
                qtype,
                resilience,
                top,
                per_network,
            });
            return match opts
                .map_err(anyhow::Error::from)
                .and_then(|o| simulate(&config, against.as_deref(), &o, json))
            {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("geolb: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Cmd::Map {
            config,
            service,
            qtype,
            down,
            drain,
            before_after,
            output,
            format,
            width,
        } => {
            let opts = map_options(
                service,
                &qtype,
                geolb::sim::Scenario {
                    down,
                    drain,
                    partial: Vec::new(),
                },
                before_after,
                output.as_deref(),
                format.as_deref(),
                width,
            );
            return match opts.and_then(|o| map(&config, output.as_deref(), &o)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("geolb: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Cmd::Replay {
            log,
            config,
            against,
            down,
            drain,
            top,
            format,
            json,
        } => {
            let format = match format {
                LogFormatArg::Auto => geolb::sim::replay::LogFormat::Auto,
                LogFormatArg::Text => geolb::sim::replay::LogFormat::Text,
                LogFormatArg::Dnstap => geolb::sim::replay::LogFormat::Dnstap,
            };
            let health = geolb::sim::Scenario {
                down,
                drain,
                partial: Vec::new(),
            };
            if against.is_none() && health.is_all_up() {
                eprintln!("geolb: replay needs --against PROPOSED.toml, a health scenario (--down, --drain), or both");
                return ExitCode::from(2);
            }
            let opts = geolb::sim::replay::ReplayOptions {
                top,
                format,
                health,
            };
            let against = against.unwrap_or_else(|| config.clone());
            return exit_2_on_error(replay(&log, &config, &against, opts, json));
        }
        Cmd::Probe {
            config,
            vantage,
            listen,
        } => serve(
            config,
            Overrides {
                admin: listen,
                vantage: Some(vantage),
                probe_only: true,
                ..Overrides::default()
            },
        ),
        Cmd::ExplainHttp {
            listener,
            host,
            path,
            header,
            cookie,
            client,
            method,
            api,
            json,
        } => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("listener", &listener)
                .append_pair("path", &path)
                .append_pair("method", &method);
            if let Some(h) = &host {
                q.append_pair("host", h);
            }
            if !header.is_empty() {
                q.append_pair("header", &header.join("\n"));
            }
            if let Some(c) = &cookie {
                q.append_pair("cookie", c);
            }
            if let Some(c) = &client {
                q.append_pair("client", c);
            }
            let path = format!("/v1/explain-http?{}", q.finish());
            api_call(&api, "GET", &path, None).and_then(|v| {
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print_explain_http(&v);
                }
                Ok(())
            })
        }
        Cmd::Status { api, json } => api_call(&api, "GET", "/v1/health", None).and_then(|v| {
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
            Ok(())
        }),
        Cmd::Drain {
            target,
            duration,
            two_phase: true,
            max_wait,
            api,
            ..
        } => two_phase_drain(&api, &target, duration.as_deref(), &max_wait),
        Cmd::Drain {
            target,
            duration,
            fraction,
            api,
            ..
        } => {
            let body = serde_json::json!({"target": target, "for": duration, "fraction": fraction});
            api_call(&api, "POST", "/v1/drain", Some(body)).map(|v| println!("{v}"))
        }
        Cmd::Undrain { target, api } => {
            let body = serde_json::json!({"target": target});
            api_call(&api, "POST", "/v1/undrain", Some(body)).map(|v| println!("{v}"))
        }
        Cmd::Force {
            target,
            state,
            duration,
            api,
        } => {
            let body = serde_json::json!({"target": target, "state": state, "for": duration});
            api_call(&api, "POST", "/v1/force", Some(body)).map(|v| println!("{v}"))
        }
        Cmd::Explain {
            name,
            qtype,
            client,
            subnet,
            config,
            json,
        } => explain(
            &config,
            &name,
            &qtype,
            client.or(subnet).unwrap_or_default(),
            json,
        ),
        Cmd::Serve {
            config,
            dns,
            admin,
            udp_workers,
            udp_cpu_affinity,
            regions,
            no_dns,
            nsid,
        } => serve(
            config,
            Overrides {
                dns: (!dns.is_empty()).then_some(dns),
                admin,
                udp_workers,
                udp_cpu_affinity: udp_cpu_affinity.then_some(true),
                regions: (!regions.is_empty())
                    .then(|| regions.into_iter().filter(|r| r != "none").collect()),
                dns_enabled: no_dns.then_some(false),
                nsid,
                ..Overrides::default()
            },
        ),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        // Once: logs go to stderr too, so text logs get the plain line
        // (shown at any log level) and JSON logs a JSON record.
        Err(e) if json_logs => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("geolb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let result = geolb::snapshot::load(path, &Default::default(), 0, None);
    match result {
        Ok((snap, warnings)) => {
            for w in &warnings {
                println!("{w}");
            }
            let records: usize = snap.zones.zones.iter().map(|z| z.data.record_count()).sum();
            println!(
                "{}: ok ({} zones, {} records)",
                path.display(),
                snap.zones.zones.len(),
                records
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for d in &e.0 {
                println!("{d}");
            }
            println!("{}: {} error(s)", path.display(), e.errors().count());
            ExitCode::FAILURE
        }
    }
}

/// Calls the admin API of a running node; errors carry the API's message.
fn print_explain_http(v: &serde_json::Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    println!("listener   {}", s("listener"));
    let rule = match v["rule"].as_u64() {
        Some(n) => format!("rule {n}: {}", s("rule_text")),
        None => s("rule_text"),
    };
    println!("route      {rule}");
    if v["action"] == "respond" {
        println!("answer     fixed response {}", v["status"]);
        return;
    }
    println!("group      {} ({})", s("group"), s("algorithm"));
    if let Some(p) = v["persistence_outcome"].as_str() {
        println!("persist    {}: {p}", s("persistence"));
    }
    if let Some(r) = v["rate_limit"].as_str() {
        println!("limits     {r}");
    }
    println!("backend    {}", s("backend"));
    println!("why        {}", s("why"));
    for b in v["backends"].as_array().into_iter().flatten() {
        println!(
            "  {:<28} {:<10} active {:<4} weight {}",
            b["id"].as_str().unwrap_or("?"),
            if b["eligible"] == true {
                "eligible"
            } else {
                "out"
            },
            b["active"],
            b["effective_weight"]
        );
    }
}

fn api_call(
    api: &Api,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        geolb::health::ensure_tls_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        geolb::admin::client::call(
            &client,
            &api.admin,
            api.token.as_deref(),
            method,
            path,
            body,
        )
        .await
        .map_err(anyhow::Error::msg)
    })
}

/// `geolb drain TARGET --two-phase`: DNS first, the tier once the answers
/// resolvers cached from the target have expired.
fn two_phase_drain(
    api: &Api,
    target: &str,
    duration: Option<&str>,
    max_wait: &str,
) -> anyhow::Result<()> {
    use geolb::drill::analyse::{holding_until, ResolverLine};
    let max_wait = humantime::parse_duration(max_wait).context("--max-wait")?;
    let now = || geolb::health::unix(std::time::SystemTime::now());
    // Resolver telemetry: a drill's, if one is running, else our own.
    let armed = api_call(api, "GET", "/v1/resolvers?service=-", None)?["armed"] == true;
    if !armed {
        let window = humantime::format_duration(max_wait + std::time::Duration::from_secs(60));
        api_call(
            api,
            "POST",
            "/v1/resolvers/track",
            Some(serde_json::json!({"for": window.to_string()})),
        )?;
    }
    let t1 = now();
    let body = serde_json::json!({"target": target, "for": duration, "only": "dns"});
    let v = api_call(api, "POST", "/v1/drain", Some(body))?;
    println!(
        "phase 1 (dns): {target} withdrawn from DNS answers ({} endpoints)",
        v["endpoints"]
    );
    let deadline = t1 + max_wait.as_secs_f64();
    let reason = loop {
        let r = api_call(api, "GET", "/v1/resolvers", None)?;
        let lines: Vec<ResolverLine> =
            serde_json::from_value(r["resolvers"].clone()).unwrap_or_default();
        let (holders, until) = holding_until(&lines, target, t1);
        let t = now();
        match until {
            // Tracking began with this drain: answers given before it are
            // unseen until a resolver asks again and shows the TTL.
            None if !armed && t < deadline => {
                println!("waiting for resolver traffic to learn the TTL of {target}'s answers");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            None => break format!("no resolver holds an answer from {target}"),
            Some(_) if t >= deadline => {
                break format!(
                "--max-wait reached with {holders} resolvers still holding answers from {target}"
            )
            }
            Some(u) if u <= t => {
                break format!("the answers resolvers cached from {target} have expired")
            }
            Some(u) => {
                println!(
                    "waiting: {holders} resolvers hold answers from {target}; the last expires in {:.1} s",
                    u - t
                );
                std::thread::sleep(std::time::Duration::from_secs_f64((u - t).clamp(0.2, 1.0)));
            }
        }
    };
    let body = serde_json::json!({"target": target, "for": duration});
    let v = api_call(api, "POST", "/v1/drain", Some(body))?;
    println!(
        "phase 2 (tier) after {:.1} s ({reason}): {target} drained everywhere ({} endpoints and backends); tier connections close by their group's drain_timeout",
        now() - t1,
        v["endpoints"]
    );
    if !armed {
        api_call(api, "DELETE", "/v1/resolvers/track", None)?;
    }
    Ok(())
}

/// Each region's capacity and load, and each `capacity` share (only what
/// is configured or known).
fn print_capacity(c: &serde_json::Value) {
    let num = |x: &serde_json::Value, digits: usize| {
        x.as_f64()
            .map_or("-".to_string(), |n| format!("{n:.digits$}"))
    };
    let regions: Vec<&serde_json::Value> = c["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| !r["load"].is_null() || !r["connections"].is_null())
        .collect();
    if !regions.is_empty() {
        println!("capacity:");
    }
    for r in regions {
        println!(
            "  {:<20} load {:<5} connections {} of {}, {} req/s of {} (from {})",
            r["region"].as_str().unwrap_or(""),
            num(&r["load"], 2),
            num(&r["connections"], 0),
            num(&r["capacity_connections"], 0),
            num(&r["rps"], 1),
            num(&r["capacity_rps"], 0),
            r["reporters"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
    }
    for svc in c["services"].as_array().into_iter().flatten() {
        let groups: Vec<String> = svc["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                format!(
                    "{} {} ({})",
                    g["group"].as_str().unwrap_or(""),
                    num(&g["share"], 2),
                    g["why"].as_str().unwrap_or("")
                )
            })
            .collect();
        println!(
            "  shares of {}: {}",
            svc["service"].as_str().unwrap_or(""),
            groups.join(", ")
        );
    }
}

fn print_status(v: &serde_json::Value) {
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("").to_string();
    if v["local_checks"].as_bool() == Some(false) {
        println!(
            "vantage {} (no local checks: the remote vantages decide, quorum {})",
            s(&v["vantage"]),
            v["quorum"]
        );
    } else {
        println!("vantage {} (quorum {})", s(&v["vantage"]), v["quorum"]);
    }
    let e = &v["epoch"];
    if let Some(id) = e["id"].as_str() {
        let changed = e["changed_at"].as_f64().map_or(String::new(), |t| {
            let ago = geolb::health::unix(std::time::SystemTime::now()) - t;
            format!(", changed {:.0} s ago", ago.max(0.0))
        });
        println!(
            "health epoch {id} (local #{}{changed}, {} changes)",
            e["seq"], e["changes"]
        );
    }
    for van in v["vantages"].as_array().into_iter().flatten() {
        println!(
            "  vantage {:<12} {:<6} {}",
            s(&van["vantage"]),
            if van["fresh"].as_bool() == Some(true) {
                "fresh"
            } else {
                "STALE"
            },
            s(&van["last_error"])
        );
    }
    println!("pools:");
    for p in v["pools"].as_array().into_iter().flatten() {
        println!(
            "  {:<20} {:<14} {}/{} up (needs {}) {}",
            s(&p["pool"]),
            s(&p["region"]),
            p["up"],
            p["endpoints"],
            p["min_healthy"],
            if p["healthy"].as_bool() == Some(true) {
                ""
            } else {
                "UNHEALTHY"
            }
        );
    }
    println!("endpoints:");
    for e in v["endpoints"].as_array().into_iter().flatten() {
        println!(
            "  {:<32} {:<5} {}{}",
            s(&e["endpoint"]),
            if e["up"].as_bool() == Some(true) {
                "up"
            } else {
                "DOWN"
            },
            s(&e["reason"]),
            e["last_error"]
                .as_str()
                .map(|x| format!(" (last error: {x})"))
                .unwrap_or_default()
        );
    }
    print_capacity(&v["capacity"]);
    let tier = &v["tier"];
    let listeners = tier["listeners"].as_array().into_iter().flatten();
    let mut first = true;
    for l in listeners {
        if std::mem::take(&mut first) {
            println!("tier listeners:");
        }
        println!(
            "  {:<20} {:<14} {:<22} -> {:<16} active {} total {} refused {} no-backend {}",
            s(&l["name"]),
            s(&l["region"]),
            s(&l["bind"]),
            s(&l["group"]),
            l["active"],
            l["accepted"],
            l["refused_max"],
            l["no_backend"]
        );
        if l["mode"] == "http" {
            let r = &l["responses"];
            let mut extra = Vec::new();
            for (k, label) in [
                ("rate_limited_client", "429 per client"),
                ("rate_limited_listener", "429 listener"),
                ("upgrades", "upgrades"),
                ("body_timeouts", "408 body"),
                ("header_timeouts", "408 header"),
                ("h2_streams", "h2 streams"),
                ("h2_refused", "h2 refused"),
                ("h2_stream_errors", "h2 stream errors"),
                ("h2_connection_errors", "h2 connection errors"),
                ("tls_handshake_errors", "TLS handshake errors"),
            ] {
                if l[k].as_u64().is_some_and(|n| n > 0) {
                    extra.push(format!("{label} {}", l[k]));
                }
            }
            println!(
                "    http: requests {}  1xx {} 2xx {} 3xx {} 4xx {} 5xx {}{}{}",
                l["requests"],
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                if extra.is_empty() { "" } else { "  " },
                extra.join(", ")
            );
            for rt in l["routes"].as_array().into_iter().flatten() {
                let c = &rt["responses"];
                println!(
                    "      route {:<32} requests {:<7} 2xx {} 4xx {} 5xx {} retries {} mean {}",
                    s(&rt["route"]),
                    rt["requests"],
                    c[1],
                    c[3],
                    c[4],
                    rt["retries"],
                    rt["mean_latency_ms"]
                        .as_f64()
                        .map_or("-".to_string(), |m| format!("{m:.2} ms"))
                );
            }
        }
    }
    for g in tier["groups"].as_array().into_iter().flatten() {
        let persist = match g["persistence"].as_str() {
            None | Some("none") => String::new(),
            Some(p) => format!(", persistence {p}"),
        };
        println!(
            "tier group {} ({}, {}{persist}):",
            s(&g["name"]),
            s(&g["region"]),
            s(&g["algorithm"])
        );
        for b in g["backends"].as_array().into_iter().flatten() {
            let mut notes = Vec::new();
            if b["backup"].as_bool() == Some(true) {
                notes.push("backup".to_string());
            }
            if let Some(w) = b["effective_weight"].as_f64().filter(|w| *w < 0.999) {
                notes.push(format!("slow start {:.0}%", w * 100.0));
            }
            if let Some(e) = b["ejection"].as_object() {
                notes.push(format!("EJECTED {}", serde_json::Value::Object(e.clone())));
            }
            if let Some(d) = b["drain"].as_object() {
                notes.push(format!(
                    "draining: {} left, closed in {}s",
                    d.get("remaining").cloned().unwrap_or_default(),
                    d.get("deadline_in_s").cloned().unwrap_or_default()
                ));
            }
            let h = &b["http_responses"];
            if h.as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_u64() > Some(0)))
                || b["http_errors"].as_u64() > Some(0)
            {
                notes.push(format!(
                    "http 2xx {} 4xx {} 5xx {} errors {} timeouts {}",
                    h[1], h[3], h[4], b["http_errors"], b["http_timeouts"]
                ));
            }
            println!(
                "  {:<24} {:<5} active {:<4} total {:<6} connect-errors {:<4} {} {}",
                s(&b["address"]),
                if b["eligible"].as_bool() == Some(true) {
                    "up"
                } else {
                    "DOWN"
                },
                b["active"],
                b["total"],
                b["connect_errors"],
                s(&b["health"]),
                notes.join(", ")
            );
        }
    }
}

fn explain(
    path: &std::path::Path,
    name: &str,
    qtype: &str,
    client: String,
    json: bool,
) -> anyhow::Result<()> {
    let (snap, _) = geolb::snapshot::load(path, &Default::default(), 0, None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = geolb::explain::ClientSpec::parse(&client)?;
    let ex = geolb::explain::explain(&snap, name, qtype, spec)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&ex)?);
    } else {
        print!("{ex}");
    }
    Ok(())
}

/// A config's snapshot without its compiled geo table: the simulation
/// walks the databases itself.
fn load_uncompiled(p: &std::path::Path) -> anyhow::Result<geolb::snapshot::Snapshot> {
    geolb::snapshot::load_with(p, &Default::default(), 0, None, false)
        .map(|(s, _)| s)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot load {}", p.display()))
}

/// `geolb replay --format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Auto,
    Text,
    Dnstap,
}

/// Exit status 0, or 2 with the error on stderr.
fn exit_2_on_error(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geolb: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs `geolb replay` (and `geolb simulate --queries`).
fn replay(
    log: &std::path::Path,
    path: &std::path::Path,
    against: &std::path::Path,
    opts: geolb::sim::replay::ReplayOptions,
    json: bool,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let snap = load_uncompiled(path)?;
    let other = if against == path {
        None
    } else {
        Some(load_uncompiled(against)?)
    };
    let other = other.as_ref().unwrap_or(&snap);
    let loaded = started.elapsed().as_millis() as u64;
    let (current, proposed) = (path.display().to_string(), against.display().to_string());
    let run = |r: &mut dyn std::io::BufRead, name: &str| {
        geolb::sim::replay::replay(r, name, (&snap, &current), (other, &proposed), &opts)
    };
    let mut report = if log.as_os_str() == "-" {
        run(&mut std::io::stdin().lock(), "(stdin)")?
    } else {
        let f =
            std::fs::File::open(log).with_context(|| format!("cannot open {}", log.display()))?;
        run(
            &mut std::io::BufReader::with_capacity(1 << 16, f),
            &log.display().to_string(),
        )?
    };
    report.timings_ms.load = loaded;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// `geolb map`'s options from its arguments.
fn map_options(
    service: Option<String>,
    qtype: &str,
    scenario: geolb::sim::Scenario,
    before_after: bool,
    output: Option<&std::path::Path>,
    format: Option<&str>,
    width: u32,
) -> anyhow::Result<geolb::sim::map::MapOptions> {
    use geolb::sim::map::Format;
    let format = match (format, output) {
        (Some(f), _) => {
            Format::parse(f).ok_or_else(|| anyhow::anyhow!("--format {f:?}: give svg or png"))?
        }
        (None, Some(p)) => Format::of_path(p).ok_or_else(|| {
            anyhow::anyhow!("{}: name a .svg or .png file, or say --format", p.display())
        })?,
        (None, None) => Format::Svg,
    };
    if before_after && scenario.is_all_up() {
        anyhow::bail!("--before-after needs a scenario: --down or --drain");
    }
    Ok(geolb::sim::map::MapOptions {
        service,
        qtype: geolb::sim::QType::parse(qtype)?,
        scenario,
        before_after,
        width,
        format,
    })
}

/// Runs `geolb map`.
fn map(
    path: &std::path::Path,
    output: Option<&std::path::Path>,
    opts: &geolb::sim::map::MapOptions,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let snap = load_uncompiled(path)?;
    let loaded = started.elapsed();
    let drawn = geolb::sim::map::draw(&snap, opts)?;
    use std::io::Write;
    let Some(out) = output else {
        return std::io::stdout()
            .write_all(&drawn.bytes)
            .context("cannot write to standard output");
    };
    std::fs::write(out, &drawn.bytes).with_context(|| format!("cannot write {}", out.display()))?;
    let [walk, decide, draw, png] = drawn.timings_ms;
    let mut said = format!(
        "{}: {}x{} px, {} {}; {} ms (load {} ms, walk {walk} ms, decide {decide} ms, draw {draw} ms, PNG {png} ms)\n",
        out.display(),
        drawn.width,
        drawn.height,
        drawn.service,
        opts.qtype.name(),
        started.elapsed().as_millis(),
        loaded.as_millis(),
    );
    for p in &drawn.panels {
        let shares: Vec<String> = p
            .shares
            .iter()
            .map(|(name, s)| format!("{name} {:.1}%", s * 100.0))
            .collect();
        said += &format!("  {}: {}\n", p.label, shares.join(", "));
        if !p.split.is_empty() {
            said += &format!(
                "    split (no region answers {:.0}%): {}\n",
                geolb::sim::map::SPLIT * 100.0,
                p.split.join(" ")
            );
        }
    }
    // The map is written; a reader that went away early is no error.
    match std::io::stdout().write_all(said.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// Runs `geolb simulate`; false when the resilience check failed.
fn simulate(
    path: &std::path::Path,
    against: Option<&std::path::Path>,
    opts: &geolb::sim::Options,
    json: bool,
) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    let snap = load_uncompiled(path)?;
    let other = against.map(load_uncompiled).transpose()?;
    let loaded = started.elapsed().as_millis() as u64;
    let label = path.display().to_string();
    let other_label = against.map(|p| p.display().to_string());
    let pair = other.as_ref().zip(other_label.as_deref());
    let mut report = geolb::sim::run(&snap, &label, pair, opts)?;
    report.timings_ms.load = loaded;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(report.resilience.as_ref().is_none_or(|r| r.ok))
}

fn serve(config: PathBuf, overrides: Overrides) -> anyhow::Result<()> {
    geolb::control::return_freed_tables();
    // Two runtime threads (TCP DNS, the admin API, health checks, the
    // tier), or one when the process may use one CPU only (taskset,
    // cpuset): two threads on one core wake each other through futexes
    // and switch contexts ~3 times per proxied connection, for ~11 % more
    // CPU per connection than one thread (benches/tier.sh).
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(2));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("geolb-rt")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let server = Server::start(config.clone(), overrides)
            .await
            .with_context(|| format!("cannot start with {}", config.display()))?;
        // Handlers are installed before the "listening" line, so a signal
        // sent by anyone who has seen that line is never lost.
        let signals = Signals::install();
        let dns: Vec<String> = server.dns_addrs.iter().map(|a| a.to_string()).collect();
        let admin = server
            .admin_addr
            .map_or("off".to_string(), |a| a.to_string());
        tracing::info!(
            "listening dns={} admin={} generation=1 pid={}",
            dns.join(","),
            admin,
            std::process::id()
        );
        notify::send("READY=1");
        signals.wait(&server).await;
        notify::send("STOPPING=1");
        tracing::info!("shutting down");
        server.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

#[cfg(unix)]
struct Signals(
    Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
);

#[cfg(unix)]
impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(h), Ok(t), Ok(i)) => Signals(Some((h, t, i))),
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                Signals(None)
            }
        }
    }

    async fn wait(self, server: &Server) {
        let Some((mut hup, mut term, mut int)) = self.0 else {
            std::future::pending::<()>().await;
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    notify::reloading();
                    let control = server.control.clone();
                    if let Err(e) = geolb::control::in_background("geolb-reload", move || control.reload()).await {
                        tracing::error!("reload: {e}");
                    }
                    notify::send("READY=1");
                }
                _ = term.recv() => return,
                _ = int.recv() => return,
            }
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Signals {
        Signals
    }
    async fn wait(self, _server: &Server) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// systemd's readiness protocol (sd_notify): one datagram to the socket in
/// `$NOTIFY_SOCKET`, when there is one (`Type=notify` units). Failures are
/// logged once and otherwise ignored: serving matters more.
#[cfg(target_os = "linux")]
mod notify {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    pub fn send(state: &str) {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name),
            None => SocketAddr::from_pathname(&path),
        };
        let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &a));
        if let Err(e) = sent {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| tracing::warn!("cannot notify systemd ({path:?}): {e}"));
        }
    }

    /// RELOADING=1 with the monotonic time systemd asks for.
    pub fn reloading() {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the valid,
        // exclusively borrowed `ts` and reads nothing else.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
        send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }
}

#[cfg(not(target_os = "linux"))]
mod notify {
    pub fn send(_: &str) {}
    pub fn reloading() {}
}
