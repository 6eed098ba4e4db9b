//! geolb command line: `serve` and `check`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use geolb::config::{Config, Overrides};
use geolb::server::Server;

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

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve DNS (UDP and TCP) and the admin API.
    #[command(
        after_help = "Examples:\n  geolb serve\n  geolb serve --config deploy/geolb.toml --dns 0.0.0.0:53 --dns [::]:53\n  kill -HUP <pid>     # reload config and zones (the old data keeps serving if the new is invalid)"
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

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(level).with_context(|| format!("invalid log level {level:?}"))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    let res = match cli.cmd {
        Cmd::Check { config } => return check(&config),
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
        } => serve(
            config,
            Overrides {
                dns: (!dns.is_empty()).then_some(dns),
                admin,
                udp_workers,
                ..Overrides::default()
            },
        ),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("geolb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let result = Config::load(path).and_then(|c| geolb::snapshot::build(c, 0, None));
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

fn explain(
    path: &std::path::Path,
    name: &str,
    qtype: &str,
    client: String,
    json: bool,
) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (snap, _) = geolb::snapshot::build(config, 0, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = geolb::explain::ClientSpec::parse(&client)?;
    let ex = geolb::explain::explain(&snap, name, qtype, spec)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&ex)?);
    } else {
        print!("{ex}");
    }
    Ok(())
}

fn serve(config: PathBuf, overrides: Overrides) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
        signals.wait(&server).await;
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
                    let shared = server.shared.clone();
                    let _ = tokio::task::spawn_blocking(move || shared.reload()).await;
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
