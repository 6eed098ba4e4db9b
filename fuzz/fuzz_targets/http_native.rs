//! Bytes → a client connection's requests as the native HTTP/1.1 engine
//! reads them (`tier::h1`, no socket): each head it takes is rewritten for
//! the backend and must parse back and pass `props::check_forwarded`; its
//! body is skipped by its framing (chunked through the validator), and the
//! next request follows. The same bytes are also read as a backend's
//! response head, whose client head must parse back.
//!
//! The first byte picks the plan: bits 0-1 `forwarded_for` (off, replace,
//! append), bit 2 a client that is not a trusted proxy, bit 3 a group with
//! cookie persistence (cookie `geo` removed).
#![no_main]

#[path = "../../tests/common/props.rs"]
mod props;

use std::net::SocketAddr;
use std::sync::OnceLock;

use geolb::tier::h1::{self, Framing};
use geolb::tier::plan::HttpPlan;
use libfuzzer_sys::fuzz_target;

fn plans() -> &'static [HttpPlan; 3] {
    static P: OnceLock<[HttpPlan; 3]> = OnceLock::new();
    P.get_or_init(|| ["off", "replace", "append"].map(props::http_plan))
}

fn header_map(fields: &[httparse::Header<'_>]) -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for f in fields {
        m.append(
            http::HeaderName::from_bytes(f.name.as_bytes()).expect("a parsed name is a name"),
            http::HeaderValue::from_bytes(f.value).expect("a parsed value is a value"),
        );
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, mut input)) = data.split_first() else {
        return;
    };
    let plan = &plans()[usize::from(ctl & 3).min(2)];
    let client: SocketAddr = if ctl & 4 != 0 {
        "192.0.2.7:5000".parse().expect("addr")
    } else {
        "10.1.2.3:5000".parse().expect("addr")
    };
    let strip = (ctl & 8 != 0).then_some("geo");
    let mut ipb = [0u8; 48];
    let n = h1::ip_text(client.ip(), &mut ipb);
    let whole = input;
    while !input.is_empty() {
        let mut fields = h1::fields();
        let Ok(head) = h1::parse_request(input, &mut fields) else {
            break;
        };
        assert!(head.len <= input.len());
        let routed = h1::routing_host(head.host);
        let mut out = Vec::new();
        h1::write_backend_head(
            &head,
            &h1::Forward {
                plan,
                client,
                client_text: &ipb[..n],
                host: routed.as_deref(),
                strip_cookie: strip,
            },
            &mut out,
        );
        out.extend_from_slice(b"\r\n");
        let mut back = [httparse::EMPTY_HEADER; 256];
        let mut parsed = httparse::Request::new(&mut back);
        match parsed.parse(&out) {
            Ok(httparse::Status::Complete(k)) => assert_eq!(k, out.len()),
            other => panic!(
                "backend head does not parse: {other:?}\n{}",
                String::from_utf8_lossy(&out)
            ),
        }
        let sent = header_map(head.headers);
        let mut fwd = header_map(parsed.headers);
        if head.framing == Framing::Chunked {
            fwd.remove("transfer-encoding");
        }
        if let Err(e) = props::check_forwarded(&sent, &fwd, routed.as_deref()) {
            panic!("{e}\n{}", String::from_utf8_lossy(&out));
        }
        let framing = head.framing;
        let len = head.len;
        input = &input[len..];
        match framing {
            Framing::None => {}
            Framing::Length(b) => {
                let b = usize::try_from(b).unwrap_or(usize::MAX).min(input.len());
                input = &input[b..];
            }
            Framing::Chunked => {
                let mut c = h1::Chunked::default();
                match c.feed(input) {
                    Ok(k) if c.is_done() => input = &input[k..],
                    _ => break,
                }
            }
            Framing::Close => break,
        }
    }
    for method in ["GET", "HEAD"] {
        let mut out = Vec::new();
        let back = |h: &h1::ResponseHead| h1::Back {
            via: true,
            set_cookie: Some(b"geo=t; Path=/"),
            close: h.framing == Framing::Close,
            clock: Some(std::time::SystemTime::now),
        };
        if let Ok(h) = h1::parse_response_into(whole, method, back, &mut out) {
            assert!(h.len <= whole.len());
            if (100..200).contains(&h.status) {
                continue;
            }
            let mut f = [httparse::EMPTY_HEADER; 256];
            let mut r = httparse::Response::new(&mut f);
            assert!(
                matches!(r.parse(&out), Ok(httparse::Status::Complete(k)) if k == out.len()),
                "client head does not parse: {}",
                String::from_utf8_lossy(&out)
            );
        }
    }
});
