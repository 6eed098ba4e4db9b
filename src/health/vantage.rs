//! Remote vantages: every `poll_interval`, this node reads each prober's
//! `/v1/observations`, all at once, so one hanging prober delays no other.
//! What they say becomes their votes in the quorum.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;

use super::{ensure_tls_provider, error_chain, HealthService, Observations};
use crate::config::VantageConfig;

/// Reads one remote vantage's observations.
async fn fetch(client: reqwest::Client, v: VantageConfig) -> Result<Observations, String> {
    let url = format!("{}/v1/observations", v.url.trim_end_matches('/'));
    let mut req = client.get(&url);
    if let Some(t) = &v.token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => match r.bytes().await {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| format!("bad observations from {url}: {e}"))
            }
            Err(e) => Err(format!("{url}: {}", error_chain(&e))),
        },
        Ok(r) => {
            // The vantage's own word on why (a JSON `error`), when it gives one.
            let status = r.status();
            let why = r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| {
                    let e = v.get("error")?.as_str()?;
                    Some(format!(": {}", e.chars().take(300).collect::<String>()))
                })
                .unwrap_or_default();
            Err(format!("{url}: HTTP {status}{why}"))
        }
        Err(e) => Err(format!("{url}: {}", error_chain(&e))),
    }
}

/// Polls every configured vantage until shutdown (a prober, configured
/// with none, only waits).
pub(super) async fn poll(service: Weak<HealthService>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let Some(cfg) = service.upgrade().map(|s| s.config()) else {
            return;
        };
        if !cfg.vantages.is_empty() {
            let timeout = cfg
                .poll_interval
                .max(Duration::from_millis(200))
                .min(Duration::from_secs(5));
            ensure_tls_provider();
            let client = match reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("cannot build the vantage client: {e}");
                    return;
                }
            };
            let mut round = tokio::task::JoinSet::new();
            for (name, v) in &cfg.vantages {
                let (name, v, client) = (name.clone(), v.clone(), client.clone());
                round.spawn(async move {
                    let r = fetch(client, v.clone()).await;
                    (name, v.url, r)
                });
            }
            while let Some(done) = round.join_next().await {
                let Ok((name, url, result)) = done else {
                    continue;
                };
                let Some(s) = service.upgrade() else { return };
                s.remote(&name, url, result);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.poll_interval.max(Duration::from_millis(100))) => {}
            _ = shutdown.changed() => return,
        }
    }
}
