//! Why an HTTP request would go where it goes: the rule it matches, the
//! group, what persistence says, and the backend the group's balancer
//! would pick now — computed on a copy of the balancer, so asking changes
//! nothing (no round-robin turn, no rate-limit token, no sticky entry).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use super::http::{route_for, Sticky};
use super::plan::{Action, Mode, Persistence};
use super::Tier;
use crate::balance::Context;

/// The request to explain.
#[derive(Debug, Clone, Default)]
pub struct HttpQuestion {
    pub listener: String,
    pub method: String,
    pub host: Option<String>,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub client: Option<IpAddr>,
}

/// What an HTTP listener would do with a request.
#[derive(Debug, Clone, Serialize)]
pub struct HttpExplain {
    pub listener: String,
    /// 1-based index of the matching rule, none: the listener's group.
    pub rule: Option<usize>,
    pub rule_text: String,
    /// `proxy` or `respond`.
    pub action: &'static str,
    pub status: Option<u16>,
    pub group: Option<String>,
    pub algorithm: Option<String>,
    pub persistence: Option<&'static str>,
    /// What persistence decided, in words.
    pub persistence_outcome: Option<String>,
    /// The rate limits that apply to this client.
    pub rate_limit: Option<String>,
    /// The backend it would go to now.
    pub backend: Option<String>,
    /// Why that backend (or why none).
    pub why: String,
    /// The group's backends as the balancer sees them now.
    pub backends: Vec<crate::balance::BackendView>,
}

/// Why an HTTP request cannot be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no listener named {0:?} runs on this node")]
    NoListener(String),
    #[error("listener {0:?} is a TCP listener; explain-http is for mode = \"http\"")]
    NotHttp(String),
    #[error("header {0:?}: {1}")]
    BadHeader(String, String),
}

impl Tier {
    /// Explains `q` against the running listener it names.
    pub fn explain_http(&self, q: &HttpQuestion) -> Result<HttpExplain, ExplainError> {
        let route = {
            let run = self.lock();
            run.listeners
                .values()
                .map(|l| l.route.load_full())
                .find(|r| r.plan.name == q.listener)
                .ok_or_else(|| ExplainError::NoListener(q.listener.clone()))?
        };
        let Mode::Http(plan) = &route.plan.mode else {
            return Err(ExplainError::NotHttp(q.listener.clone()));
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &q.headers {
            let n = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|e| ExplainError::BadHeader(k.clone(), e.to_string()))?;
            let v = HeaderValue::from_str(v.trim())
                .map_err(|e| ExplainError::BadHeader(k.clone(), e.to_string()))?;
            headers.append(n, v);
        }
        let host = q.host.as_deref().map(|h| {
            h.split(':')
                .next()
                .unwrap_or(h)
                .trim_end_matches('.')
                .to_ascii_lowercase()
        });
        let client = q.client.unwrap_or(IpAddr::from([192, 0, 2, 1]));
        let mut out = HttpExplain {
            listener: q.listener.clone(),
            rule: None,
            rule_text: format!("no rule matched: the listener's group {}", route.plan.group),
            action: "proxy",
            status: None,
            group: None,
            algorithm: None,
            persistence: None,
            persistence_outcome: None,
            rate_limit: route.limits.as_ref().map(|l| l.describe(client)),
            backend: None,
            why: String::new(),
            backends: Vec::new(),
        };
        let group = match route_for(plan, host.as_deref(), &q.path, &headers) {
            Some(i) => {
                let r = &plan.rules[i];
                out.rule = Some(i + 1);
                out.rule_text = r.conditions();
                match (&r.action, route.rule_groups.get(i).cloned().flatten()) {
                    (Action::Respond { status, .. }, _) => {
                        out.action = "respond";
                        out.status = Some(*status);
                        out.why = format!("rule {} answers by itself with {status}", i + 1);
                        return Ok(out);
                    }
                    (Action::Group(g), None) => {
                        out.group = Some(g.clone());
                        out.why = format!("group {g} is not running here: 503");
                        return Ok(out);
                    }
                    (Action::Group(_), Some(g)) => g,
                }
            }
            None => route.group.clone(),
        };
        let now = self.now_ms();
        let sticky = Sticky::read(&group, &headers, &q.path, client, now);
        let st = group.lock();
        out.group = Some(group.name.clone());
        out.algorithm = Some(st.plan.settings.algorithm.name().to_string());
        out.backends = st.balancer.view(now);
        out.persistence = Some(st.plan.persistence.name());
        let stuck = sticky.to.as_ref().and_then(|b| st.sticky_ok(b, now, &[]));
        out.persistence_outcome = match (&st.plan.persistence, &sticky.to, stuck) {
            (Persistence::None, _, _) => None,
            (Persistence::Hash(_), _, _) => Some(match &sticky.key {
                Some(k) => format!("hashes {:?}", String::from_utf8_lossy(k)),
                None => "the hashed part is absent: hashes the client address".into(),
            }),
            (_, None, _) if sticky.had.is_some() => {
                Some("the cookie names no backend of this group (forged, stale or another key): balanced as new".into())
            }
            (_, None, _) => Some("not stuck yet: balanced as new".into()),
            (_, Some(b), Some(_)) => Some(format!("stuck to {} and it serves", b.addr)),
            (_, Some(b), None) => Some(format!(
                "stuck to {} but it cannot serve now (down, ejected, full or drained): balanced as new, and the client re-sticks",
                b.addr
            )),
        };
        let pick = match stuck {
            Some(i) => Ok(i),
            None => {
                let mut copy = st.balancer.clone();
                let mut ctx = Context::at(now).client(client);
                if let Some(k) = &sticky.key {
                    ctx = ctx.key(k);
                }
                copy.pick(&ctx)
            }
        };
        match pick {
            Ok(i) => {
                let id = st.balancer.id(i).unwrap_or_default();
                let addr = st.backends.get(id).map(|b| b.addr.to_string());
                out.why = match stuck {
                    Some(_) => "persistence".into(),
                    None => format!(
                        "{} over {} eligible backend(s)",
                        st.plan.settings.algorithm.name(),
                        out.backends.iter().filter(|b| b.eligible).count()
                    ),
                };
                out.backend = addr;
            }
            Err(e) => out.why = format!("no backend: {e} (503)"),
        }
        Ok(out)
    }
}
