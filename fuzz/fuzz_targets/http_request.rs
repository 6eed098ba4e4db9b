//! Bytes → an HTTP/1.x client connection, parsed by hyper's server as the
//! tier's listeners parse it (over an in-memory pipe, no socket), each
//! request then taken through the tier's own checks and rewriting:
//! `tier::http::admit` (one valid Host), `route_for`, `forward_head`
//! (hop-by-hop fields removed, forwarding headers, the Host a backend
//! gets).
//!
//! The first byte picks the plan: bits 0-1 `forwarded_for` (off, replace,
//! append), bit 2 a client that is not a trusted proxy. Properties, per
//! request: `props::check_forwarded` (no hop-by-hop field, one Host that
//! is the routed host, no Content-Length conflict); one `Forwarded` field
//! whose last element is exactly this client's, and `X-Forwarded-For`
//! ending with this client, whatever the client sent.
#![no_main]

#[path = "../../tests/common/props.rs"]
mod props;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::Bytes;
use geolb::tier::http::{admit, forward_head, route_for};
use geolb::tier::plan::{ForwardedFor, HttpPlan};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

/// The listener plans, by `forwarded_for` mode (off, replace, append).
fn plans() -> &'static [HttpPlan; 3] {
    static P: OnceLock<[HttpPlan; 3]> = OnceLock::new();
    P.get_or_init(|| ["off", "replace", "append"].map(props::http_plan))
}

fn check<B>(plan: &HttpPlan, client: SocketAddr, req: Request<B>) -> StatusCode {
    let host = match admit(&req) {
        Ok(h) => h,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let _ = route_for(plan, host.as_deref(), req.uri().path(), req.headers());
    let sent = req.headers().clone();
    let (mut parts, _body) = req.into_parts();
    forward_head(plan, &mut parts, client, host.as_deref());
    let h = &parts.headers;
    if let Err(e) = props::check_forwarded(&sent, h, host.as_deref()) {
        panic!("{e}\nsent: {sent:?}\nforwarded: {h:?}");
    }
    let ip = client.ip().to_string();
    let fwd: Vec<_> = h.get_all(header::FORWARDED).iter().collect();
    assert_eq!(fwd.len(), 1, "one Forwarded field: {h:?}");
    let last = fwd[0]
        .to_str()
        .expect("Forwarded is text")
        .rsplit(", ")
        .next()
        .unwrap_or_default()
        .to_string();
    let want = match &host {
        Some(hst) => format!("for={ip};proto=http;host=\"{hst}\""),
        None => format!("for={ip};proto=http"),
    };
    assert_eq!(last, want, "our Forwarded element");
    if plan.forwarded_for != ForwardedFor::Off {
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff.len(), 1, "one X-Forwarded-For: {h:?}");
        let v = xff[0].to_str().expect("X-Forwarded-For is text");
        assert!(
            v == ip || v.ends_with(&format!(", {ip}")),
            "X-Forwarded-For {v}"
        );
    }
    StatusCode::OK
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let plan = &plans()[usize::from(ctl & 3).min(2)];
    let client: SocketAddr = if ctl & 4 != 0 {
        "192.0.2.7:5000".parse().expect("addr")
    } else {
        "10.1.2.3:5000".parse().expect("addr")
    };
    let input = input.to_vec();
    runtime().block_on(async {
        let (mut near, far) = tokio::io::duplex(1 << 16);
        let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
            let status = check(plan, client, req);
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = status;
            async move { Ok::<_, Infallible>(r) }
        });
        let server = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(far), svc)
            .with_upgrades();
        let talk = async move {
            let _ = near.write_all(&input).await;
            let _ = near.shutdown().await;
            let mut sink = Vec::new();
            let _ = near.read_to_end(&mut sink).await;
        };
        let (_, ()) = tokio::join!(server, talk);
    });
});
