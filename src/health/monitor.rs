//! Monitors: how one endpoint is checked (TCP connect, HTTP, HTTPS), and
//! the check itself. A check never hangs: every step is bounded by the
//! monitor's timeout, and at most `max_body` bytes are read.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use regex::Regex;

use crate::config::{InitialState, MonitorConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Http,
    Https,
}

/// A compiled monitor.
#[derive(Debug, Clone)]
pub struct Monitor {
    pub name: String,
    pub kind: Kind,
    pub port: Option<u16>,
    pub method: reqwest::Method,
    pub path: String,
    pub host: Option<String>,
    pub headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    pub expect: Vec<(u16, u16)>,
    pub body: Option<String>,
    pub body_regex: Option<Regex>,
    pub max_body: usize,
    pub tls_verify: bool,
    pub sni: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub jitter: f64,
    pub rise: u32,
    pub fall: u32,
    pub initial: InitialState,
}

/// One check's result, from one vantage.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Observation {
    pub vantage: String,
    /// Unix seconds.
    pub at: f64,
    pub ok: bool,
    pub error: Option<String>,
    pub rtt_ms: f64,
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Monitor {
    pub fn compile(name: &str, c: &MonitorConfig) -> Result<Monitor, String> {
        let kind = match c.kind.get_ref().as_str() {
            "tcp" => Kind::Tcp,
            "http" => Kind::Http,
            "https" => Kind::Https,
            k => {
                return Err(format!(
                    "kind {k:?}: expected \"tcp\", \"http\" or \"https\""
                ))
            }
        };
        let method = reqwest::Method::from_bytes(c.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("method {:?} is not an HTTP method", c.method))?;
        if !c.path.starts_with('/') {
            return Err(format!("path {:?} must start with '/'", c.path));
        }
        let mut headers = Vec::new();
        for (k, v) in &c.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header name {k:?} is not valid"))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| format!("header {k}: value {v:?} is not valid"))?;
            headers.push((name, value));
        }
        let body_regex = match &c.body_regex {
            Some(r) => Some(Regex::new(r.get_ref()).map_err(|e| format!("body_regex: {e}"))?),
            None => None,
        };
        if c.interval < Duration::from_millis(100) {
            return Err("interval must be at least 100ms".into());
        }
        if c.timeout.is_zero() || c.timeout > c.interval {
            return Err(format!(
                "timeout {:?} must be more than 0 and at most the interval {:?}",
                c.timeout, c.interval
            ));
        }
        if !(0.0..=0.5).contains(&c.jitter) {
            return Err(format!("jitter {} must be between 0 and 0.5", c.jitter));
        }
        if c.rise == 0 || c.fall == 0 {
            return Err("rise and fall must be at least 1".into());
        }
        if kind == Kind::Tcp && (c.body.is_some() || c.body_regex.is_some() || !c.expect.is_empty())
        {
            return Err("body, body_regex and expect only apply to http and https monitors".into());
        }
        let expect = if c.expect.is_empty() {
            vec![(200, 399)]
        } else {
            c.expect.iter().map(|r| (r.0, r.1)).collect()
        };
        Ok(Monitor {
            name: name.to_string(),
            kind,
            port: c.port,
            method,
            path: c.path.clone(),
            host: c.host.clone(),
            headers,
            expect,
            body: c.body.clone(),
            body_regex,
            max_body: c.max_body,
            tls_verify: c.tls_verify,
            sni: c.sni.clone(),
            interval: c.interval,
            timeout: c.timeout,
            jitter: c.jitter,
            rise: c.rise,
            fall: c.fall,
            initial: c.initial,
        })
    }

    /// The HTTP client for checking `addr` (none for TCP). Connections are
    /// not reused: every check opens its own.
    pub fn client(&self, addr: SocketAddr) -> Result<Option<(reqwest::Client, String)>, String> {
        if self.kind == Kind::Tcp {
            return Ok(None);
        }
        super::ensure_tls_provider();
        let scheme = if self.kind == Kind::Https {
            "https"
        } else {
            "http"
        };
        let mut b = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.timeout);
        let authority = match (&self.sni, &self.host, self.kind) {
            (Some(name), _, Kind::Https) | (None, Some(name), Kind::Https) => {
                // Connect to `addr`, but send (and verify) this name.
                let host = name.split(':').next().unwrap_or(name).to_string();
                b = b.resolve(&host, addr);
                format!("{host}:{}", addr.port())
            }
            _ => match addr {
                SocketAddr::V4(a) => a.to_string(),
                SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            },
        };
        if self.kind == Kind::Https && !self.tls_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let client = b
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Some((
            client,
            format!("{scheme}://{authority}{}", self.path),
        )))
    }

    /// Runs one check against `addr`. Returns (ok, error, round-trip).
    pub async fn check(
        &self,
        addr: SocketAddr,
        http: Option<&(reqwest::Client, String)>,
    ) -> (bool, Option<String>, Duration) {
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.run(addr, http)).await;
        let rtt = start.elapsed();
        match result {
            Ok(Ok(())) => (true, None, rtt),
            Ok(Err(e)) => (false, Some(e), rtt),
            Err(_) => (
                false,
                Some(format!("timed out after {:?}", self.timeout)),
                rtt,
            ),
        }
    }

    async fn run(
        &self,
        addr: SocketAddr,
        http: Option<&(reqwest::Client, String)>,
    ) -> Result<(), String> {
        let Some((client, url)) = http else {
            tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            return Ok(());
        };
        let mut req = client.request(self.method.clone(), url);
        if let Some(h) = &self.host {
            req = req.header(reqwest::header::HOST, h);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let mut resp = req.send().await.map_err(|e| super::error_chain(&e))?;
        let status = resp.status().as_u16();
        if !self.expect.iter().any(|&(a, b)| (a..=b).contains(&status)) {
            return Err(format!("status {status} not expected"));
        }
        if self.body.is_none() && self.body_regex.is_none() {
            return Ok(());
        }
        let mut body: Vec<u8> = Vec::new();
        while body.len() < self.max_body {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    body.extend_from_slice(&c[..c.len().min(self.max_body - body.len())])
                }
                Ok(None) => break,
                Err(e) => return Err(format!("reading body: {}", super::error_chain(&e))),
            }
        }
        let text = String::from_utf8_lossy(&body);
        if let Some(want) = &self.body {
            if !text.contains(want.as_str()) {
                return Err(format!("body does not contain {want:?}"));
            }
        }
        if let Some(re) = &self.body_regex {
            if !re.is_match(&text) {
                return Err(format!("body does not match /{}/", re.as_str()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(kind: &str, extra: &str) -> Monitor {
        let cfg: MonitorConfig =
            toml::from_str(&format!("kind = \"{kind}\"\n{extra}")).expect("monitor config");
        Monitor::compile("m", &cfg).expect("valid")
    }

    /// In paused time the timeout fires exactly at the monitor's timeout,
    /// however long the backend would hang.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_backend_fails_at_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s); // accept, never answer
            }
        });
        let m = monitor("http", "interval = \"2m\"\ntimeout = \"30s\"");
        let http = m.client(addr).expect("client");
        let start = tokio::time::Instant::now();
        let (ok, err, _) = m.check(addr, http.as_ref()).await;
        assert!(!ok);
        let err = err.unwrap_or_default();
        assert!(err.contains("timed out"), "{err}");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "{waited:?}"
        );
    }

    #[test]
    fn config_errors_are_explained() {
        for (kind, extra, want) in [
            ("ftp", "", "kind"),
            ("http", "path = \"healthz\"", "path"),
            ("http", "interval = \"1s\"\ntimeout = \"2s\"", "timeout"),
            ("http", "body_regex = \"(\"", "body_regex"),
            ("tcp", "body = \"ok\"", "only apply"),
            ("http", "method = \"G E T\"", "method"),
            ("http", "jitter = 0.9", "jitter"),
        ] {
            let cfg: MonitorConfig =
                toml::from_str(&format!("kind = \"{kind}\"\n{extra}")).expect("parses");
            let err = Monitor::compile("m", &cfg).expect_err("invalid");
            assert!(err.contains(want), "{kind} {extra}: {err}");
        }
    }
}
