//! A client of the admin API (the CLI's commands and `geolb drill`): one
//! JSON request, with the error the API gave as the message.

use serde_json::Value;

/// `base`: "http://host:port" or "host:port".
pub fn base_url(admin: &str) -> String {
    if admin.starts_with("http://") || admin.starts_with("https://") {
        admin.trim_end_matches('/').to_string()
    } else {
        format!("http://{admin}")
    }
}

/// Sends `method path` (GET, POST or DELETE) with an optional JSON body and
/// bearer token; the JSON answer, or a message naming the URL and what went
/// wrong (unreachable, or the API's `error`).
pub async fn call(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let url = format!("{}{path}", base_url(base));
    let mut req = match method {
        "POST" => client.post(&url),
        "DELETE" => client.delete(&url),
        _ => client.get(&url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.map_err(|e| {
        format!(
            "cannot reach the admin API at {url}: {}",
            crate::health::error_chain(&e)
        )
    })?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let msg = v
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| v.to_string(), str::to_string);
        return Err(format!("{method} {url}: {status}: {msg}"));
    }
    Ok(v)
}
