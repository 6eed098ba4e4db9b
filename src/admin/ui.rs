//! The status page: one HTML page, its script and its style sheet, built
//! into the binary and served by the admin listener at `/` (and `/ui`).
//!
//! The page holds no data: its script fetches `/v1/status` and `/v1/ready`
//! with the operator's bearer token and renders them. So these routes are
//! open, and they live in a router of their own, merged beside the API's
//! rather than exempted inside its token check: nothing here can open a
//! data route. Every response carries a Content-Security-Policy that allows
//! only this origin's script and style (no inline code), `nosniff`, and
//! forbids framing.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const HTML: &str = include_str!("ui/index.html");
const JS: &str = include_str!("ui/app.js");
const CSS: &str = include_str!("ui/app.css");

/// Only this origin's script, style and API; no plugins, no framing, no
/// forms posting elsewhere.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page's routes; they need no token and no server state.
pub fn router() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Small, and a new binary may bring a new page: revalidate every time.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_loads_its_assets_from_this_origin_only() {
        assert!(HTML.contains(r#"src="/ui/app.js""#));
        assert!(HTML.contains(r#"href="/ui/app.css""#));
        for banned in ["<script>", "style=", "http://", "https://", "onclick"] {
            assert!(!HTML.contains(banned), "inline or remote: {banned}");
        }
        assert!(!CSP.contains("unsafe"));
    }

    #[test]
    fn script_never_writes_html() {
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!JS.contains(banned), "app.js uses {banned}");
        }
    }
}
