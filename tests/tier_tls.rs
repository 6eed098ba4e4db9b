//! TLS on the tier's HTTP listeners and to backends, end to end: a real
//! server, real hyper backends (cleartext and TLS, HTTP/1.1 and h2) on
//! loopback (region eu on 127.0.1.0/24), a rustls client, and
//! certificates made at test time by a test CA (rcgen). Certificate choice
//! by SNI, ALPN, forwarding headers, reloads with bad and changed
//! certificates, handshake failures, backend verification.

use crate::common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::runtime::Runtime;

use common::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Leaf {
    fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert.as_bytes())
            .expect("pem")
            .to_vec()
    }
}

impl Pki {
    fn new(name: &str) -> Pki {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).expect("ca");
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A certificate for `names` (DNS names, wildcards, IP addresses).
    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        let cert = p.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn rt() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A hyper backend (HTTP/1.1 and h2, over TLS when given a certificate):
/// its body is `NAME VERSION METHOD PATH` and then the request's headers.
struct Be {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

fn backend(rt: &Runtime, ip: &str, name: &'static str, leaf: Option<&Leaf>) -> Be {
    let tls = leaf.map(|l| {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(l.cert.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(l.key.as_bytes()).expect("key");
        let mut c = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("cert");
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(c))
    });
    let l = rt
        .block_on(tokio::net::TcpListener::bind((ip, 0)))
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let (tls, hits) = (tls.clone(), h.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    hits.fetch_add(1, Ordering::Relaxed);
                    let mut text = format!(
                        "{name} {:?} {} {}\n",
                        req.version(),
                        req.method(),
                        req.uri().path()
                    );
                    for (k, v) in req.headers() {
                        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                    }
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(text))))
                    }
                });
                let b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(s).await {
                            let _ = b.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = b.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
            });
        }
    });
    Be { addr, hits }
}

/// What a request over TLS found.
#[derive(Debug)]
struct Got {
    alpn: Option<String>,
    /// The certificate the listener showed (DER).
    cert: Vec<u8>,
    version: http::Version,
    status: u16,
    body: String,
}

/// A rustls client trusting `ca_pem`, presenting `name` (a DNS name is
/// sent as SNI; an IP address sends none) and offering `alpn`.
fn client(ca_pem: &str, alpn: &[&str]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca")).expect("add");
    }
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(c))
}

async fn fetch(
    addr: SocketAddr,
    ca_pem: &str,
    name: &str,
    alpn: &[&str],
    path: &str,
) -> std::io::Result<Got> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_string()).expect("name");
    let tls = client(ca_pem, alpn).connect(server_name, tcp).await?;
    let (_, conn) = tls.get_ref();
    let negotiated = conn
        .alpn_protocol()
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let io = TokioIo::new(tls);
    let req = hyper::Request::builder()
        .uri(format!("https://{name}{path}"))
        .header("host", name)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let other = |e: hyper::Error| std::io::Error::other(e.to_string());
    let resp = if negotiated.as_deref() == Some("h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(other)?;
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut().remove("host");
        send.send_request(req).await.map_err(other)?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(other)?;
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = path.parse().expect("path");
        send.send_request(req).await.map_err(other)?
    };
    let version = resp.version();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(other)?.to_bytes();
    Ok(Got {
        alpn: negotiated,
        cert,
        version,
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn group(name: &str, extra: &str, member: SocketAddr) -> String {
    format!("[groups.{name}]\nregion = \"eu\"\n{extra}\nmembers = [{{ address = \"{member}\" }}]\n")
}

/// An HTTPS listener `h` on 127.0.1.1 with the certificates `certs`
/// (file stems: `NAME.pem`, `NAME.key`).
fn https_listener(group: &str, certs: &[&str], extra: &str) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|c| format!("{{ cert = \"{c}.pem\", key = \"{c}.key\" }}"))
        .collect();
    format!(
        "[listeners.h]\nregion = \"eu\"\nbind = \"127.0.1.1:0\"\nmode = \"http\"\ngroup = \"{group}\"\n\
         tls = {{ certificates = [{}] }}\n{extra}\n",
        list.join(", ")
    )
}

fn vip(s: &TestServer) -> SocketAddr {
    *s.server().tier.local_addrs().get("h").expect("listener h")
}

fn tier_status(s: &TestServer) -> serde_json::Value {
    let (code, body) = http(s.admin.expect("admin"), "GET", "/v1/tier");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// A cleartext backend `a` on 127.0.1.11 behind an HTTPS listener `h`
/// (with `extra`) whose one certificate is `app`.
fn serve_app(rt: &Runtime, app: &Leaf, extra: &str) -> (TestServer, Be) {
    let be = backend(rt, "127.0.1.11", "a", None);
    let s = start_tier(
        &format!(
            "{}{}",
            group("g", "", be.addr),
            https_listener("g", &["app"], extra)
        ),
        &[("app.pem", &app.cert), ("app.key", &app.key)],
    );
    (s, be)
}

/// Fails unless `body` contains each of `parts`.
fn assert_has(body: &str, parts: &[&str]) {
    for p in parts {
        assert!(body.contains(p), "{p:?} not in:\n{body}");
    }
}

/// Two certificates signed by one CA: `app` (the default, also for the
/// VIP's address) and `api` (with a wildcard).
fn two_certs(pki: &Pki) -> (Leaf, Leaf) {
    (
        pki.leaf(&["app.example.test", "127.0.1.1"]),
        pki.leaf(&["api.example.test", "*.api.example.test"]),
    )
}

/// RFC 6066 §3: the listener answers each server name with the certificate
/// that has it, and a client that sends none gets the first certificate.
#[test]
fn rfc6066_3_sni_chooses_the_certificate_and_a_client_without_sni_gets_the_default() {
    let rt = rt();
    let pki = Pki::new("test CA");
    let (app, api) = two_certs(&pki);
    let be = backend(&rt, "127.0.1.11", "a", None);
    let s = start_tier(
        &format!(
            "{}{}",
            group("g", "", be.addr),
            https_listener("g", &["app", "api"], "")
        ),
        &[
            ("app.pem", &app.cert),
            ("app.key", &app.key),
            ("api.pem", &api.cert),
            ("api.key", &api.key),
        ],
    );
    let l = vip(&s);
    let ca = pki.ca_pem.as_str();
    for (name, want) in [
        ("app.example.test", &app),
        ("api.example.test", &api),
        ("v2.api.example.test", &api),
        // An IP address is never sent as SNI (RFC 6066 §3).
        ("127.0.1.1", &app),
    ] {
        let got = rt
            .block_on(fetch(l, ca, name, &["http/1.1"], "/"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.cert, want.der(), "{name}");
        assert_eq!(got.status, 200, "{name}: {}", got.body);
    }
    assert_eq!(be.hits.load(Ordering::Relaxed), 4);
    let t = tier_status(&s);
    let lst = &t["listeners"][0];
    assert_eq!(
        lst["tls_certificates"],
        serde_json::json!([
            ["app.example.test"],
            ["api.example.test", "*.api.example.test"]
        ]),
        "{lst}"
    );
    assert_eq!(lst["tls_handshakes"], 4, "{lst}");
}

/// RFC 7301 §3.2: the server picks h2 when the client offers it, and the
/// request is proxied over it to an HTTP/1.1 backend, which learns that
/// the client spoke HTTPS (X-Forwarded-Proto, RFC 7239 proto).
#[test]
fn rfc7301_3_2_alpn_h2_is_negotiated_and_the_backend_is_told_the_client_used_https() {
    let rt = rt();
    let pki = Pki::new("test CA");
    let (app, _) = two_certs(&pki);
    let (s, _be) = serve_app(&rt, &app, "forwarded = true");
    let got = rt
        .block_on(fetch(
            vip(&s),
            &pki.ca_pem,
            "app.example.test",
            &["h2", "http/1.1"],
            "/over-h2",
        ))
        .expect("h2 over TLS");
    assert_eq!(got.alpn.as_deref(), Some("h2"));
    assert_eq!(got.version, http::Version::HTTP_2);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_has(
        &got.body,
        &[
            "a HTTP/1.1 GET /over-h2\n",
            "\nx-forwarded-proto: https\n",
            ";proto=https;",
            "\nhost: app.example.test",
        ],
    );
}

/// RFC 7301 §3.2: a client offering only http/1.1 gets it; one offering
/// no ALPN at all speaks HTTP/1.1 too.
#[test]
fn rfc7301_3_2_alpn_http11_and_no_alpn_are_served_as_http11() {
    let rt = rt();
    let pki = Pki::new("test CA");
    let (app, _) = two_certs(&pki);
    let (s, _be) = serve_app(&rt, &app, "");
    for alpn in [&["http/1.1"][..], &[]] {
        let got = rt
            .block_on(fetch(
                vip(&s),
                &pki.ca_pem,
                "app.example.test",
                alpn,
                "/one",
            ))
            .expect("http/1.1 over TLS");
        assert_eq!(got.alpn.as_deref(), alpn.first().copied());
        assert_eq!(got.version, http::Version::HTTP_11);
        assert_has(
            &got.body,
            &["a HTTP/1.1 GET /one\n", "\nx-forwarded-proto: https\n"],
        );
    }
}

/// Reads one response with a Content-Length body from `io`: status and
/// body (what was read past it is kept in `rest`).
async fn read_response<I: tokio::io::AsyncRead + Unpin>(
    io: &mut I,
    rest: &mut Vec<u8>,
) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&rest[..end]).into_owned();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let len = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if rest.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&rest[end + 4..end + 4 + len]).into_owned();
                rest.drain(..end + 4 + len);
                return (status, body);
            }
        }
        let n = io.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before a whole response: {rest:?}");
        rest.extend_from_slice(&chunk[..n]);
    }
}

/// An HTTPS keep-alive connection idle between requests parks (its
/// request buffers given back, the TLS session kept) and serves its next
/// request; pipelined requests are answered in order; a request the
/// native loop hands on (HTTP/1.0) is served by hyper on the same
/// connection.
#[test]
fn an_https_keep_alive_connection_parks_between_requests_and_serves_the_next() {
    use tokio::io::AsyncWriteExt;
    let rt = rt();
    let pki = Pki::new("test CA");
    let (app, _) = two_certs(&pki);
    let (s, be) = serve_app(&rt, &app, "header_timeout = \"10s\"");
    let parked = |n: u64| {
        wait_for(Duration::from_secs(5), || {
            tier_status(&s)["listeners"][0]["parked"] == n
        })
        .is_some()
    };
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(vip(&s)).await.expect("tcp");
        let name = ServerName::try_from("app.example.test".to_string()).expect("name");
        let mut tls = client(&pki.ca_pem, &["http/1.1"])
            .connect(name, tcp)
            .await
            .expect("handshake");
        let mut rest = Vec::new();
        let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: app.example.test\r\n\r\n");
        tls.write_all(get("/one").as_bytes()).await.expect("write");
        let (code, body) = read_response(&mut tls, &mut rest).await;
        assert_eq!(code, 200, "{body}");
        assert_has(
            &body,
            &["a HTTP/1.1 GET /one\n", "\nx-forwarded-proto: https\n"],
        );
        assert!(
            tokio::task::block_in_place(|| parked(1)),
            "parked while idle"
        );
        // After parking, two pipelined requests in one write.
        tls.write_all(format!("{}{}", get("/two"), get("/three")).as_bytes())
            .await
            .expect("write");
        for want in ["GET /two", "GET /three"] {
            let (code, body) = read_response(&mut tls, &mut rest).await;
            assert_eq!(code, 200, "{body}");
            assert!(body.contains(want), "{want}: {body}");
        }
        assert!(tokio::task::block_in_place(|| parked(1)));
        // HTTP/1.0 is hyper's: served on the same connection.
        tls.write_all(b"GET /four HTTP/1.0\r\nHost: app.example.test\r\n\r\n")
            .await
            .expect("write");
        let (code, body) = read_response(&mut tls, &mut rest).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("GET /four"), "{body}");
    });
    assert_eq!(be.hits.load(Ordering::Relaxed), 4);
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["tls_handshakes"], 1, "{t}");
}

/// An idle HTTPS keep-alive connection is closed once `header_timeout`
/// passes with nothing sent (by the listener's sweep of its parked
/// connections), and counted.
#[test]
fn an_idle_https_keep_alive_connection_is_closed_after_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = rt();
    let pki = Pki::new("test CA");
    let (app, _) = two_certs(&pki);
    let (s, _be) = serve_app(&rt, &app, "header_timeout = \"1s\"");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(vip(&s)).await.expect("tcp");
        let name = ServerName::try_from("app.example.test".to_string()).expect("name");
        let mut tls = client(&pki.ca_pem, &["http/1.1"])
            .connect(name, tcp)
            .await
            .expect("handshake");
        tls.write_all(b"GET /one HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
            .await
            .expect("write");
        let mut rest = Vec::new();
        let (code, _) = read_response(&mut tls, &mut rest).await;
        assert_eq!(code, 200);
        // Nothing more is sent: the connection ends (a clean close or a
        // cut one) well within the read's bound.
        let mut b = [0u8; 64];
        let got = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut b))
            .await
            .expect("closed within 10 s");
        assert!(matches!(got, Ok(0) | Err(_)), "{got:?}");
    });
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["idle_closed"], 1, "{t}");
    assert!(
        wait_for(Duration::from_secs(5), || tier_status(&s)["listeners"][0]
            ["parked"]
            == 0)
        .is_some(),
        "no longer parked"
    );
}

/// A reload with a key that does not belong to its certificate is
/// refused, naming the file and line, and the old certificate serves on;
/// a reload with a new certificate serves it to new connections while a
/// connection made before keeps working.
#[test]
fn a_bad_certificate_fails_the_reload_and_a_changed_one_serves_new_connections() {
    let rt = rt();
    let pki = Pki::new("test CA");
    let (app, other) = two_certs(&pki);
    let (s, _be) = serve_app(&rt, &app, "");
    let l = vip(&s);
    let ca = pki.ca_pem.clone();
    // A connection held across the reloads.
    let (mut held, held_cert) = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(l).await.expect("connect");
        let name = ServerName::try_from("app.example.test").expect("name");
        let tls = client(&ca, &["http/1.1"])
            .connect(name, tcp)
            .await
            .expect("handshake");
        let cert = tls.get_ref().1.peer_certificates().expect("certs")[0].to_vec();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http1");
        tokio::spawn(conn);
        (send, cert)
    });
    assert_eq!(held_cert, app.der());
    // 1. A key of another certificate: refused, old one serves.
    std::fs::write(s.path("app.key"), &other.key).expect("w");
    let err = s
        .shared()
        .reload()
        .expect_err("a mismatched key fails the reload");
    let msg: Vec<String> = err.errors.iter().map(|d| d.to_string()).collect();
    assert!(
        msg.iter()
            .any(|m| m.contains("does not belong to the certificate") && m.contains("geolb.toml:")),
        "{msg:?}"
    );
    let got = rt
        .block_on(fetch(l, &ca, "app.example.test", &["h2"], "/"))
        .expect("old certificate serves");
    assert_eq!(got.cert, app.der());
    // 2. A file that is not a certificate: refused the same way.
    std::fs::write(s.path("app.key"), &app.key).expect("w");
    std::fs::write(s.path("app.pem"), "not a certificate\n").expect("w");
    let err = s
        .shared()
        .reload()
        .expect_err("an empty certificate fails the reload");
    assert!(
        err.errors
            .iter()
            .any(|d| d.to_string().contains("no certificate in the file")),
        "{:?}",
        err.errors
    );
    // 3. A new certificate and key: served to new connections.
    let renewed = pki.leaf(&["app.example.test", "127.0.1.1"]);
    std::fs::write(s.path("app.pem"), &renewed.cert).expect("w");
    std::fs::write(s.path("app.key"), &renewed.key).expect("w");
    let r = s.shared().reload();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(vip(&s), l, "the listener keeps its socket");
    let got = rt
        .block_on(fetch(l, &ca, "app.example.test", &["h2"], "/"))
        .expect("new certificate serves");
    assert_eq!(got.cert, renewed.der());
    // The connection from before every reload still carries requests.
    let status = rt.block_on(async {
        let req = hyper::Request::builder()
            .uri("/held")
            .header("host", "app.example.test")
            .body(Empty::<Bytes>::new())
            .expect("request");
        held.send_request(req)
            .await
            .expect("held connection")
            .status()
    });
    assert_eq!(status, 200);
}

/// A client that does not finish the handshake (plain HTTP on the TLS
/// port; a client that refuses the certificate) is counted, in the API
/// and the metrics, and reaches no backend.
#[test]
fn failed_handshakes_are_counted_and_reach_no_backend() {
    let rt = rt();
    let pki = Pki::new("test CA");
    let stranger = Pki::new("another CA");
    let (app, _) = two_certs(&pki);
    let (s, be) = serve_app(&rt, &app, "header_timeout = \"500ms\"");
    let l = vip(&s);
    // Cleartext HTTP to the HTTPS port: closed (with an alert), unanswered.
    let mut plain = std::net::TcpStream::connect(l).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = plain.write_all(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n");
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(!reply.starts_with(b"HTTP/"), "{reply:?}");
    // A client that trusts another CA aborts the handshake.
    let r = rt.block_on(fetch(l, &stranger.ca_pem, "app.example.test", &["h2"], "/"));
    assert!(r.is_err(), "{r:?}");
    // A client that says nothing: the handshake times out.
    let idle = std::net::TcpStream::connect(l).expect("connect");
    let counted = wait_for(Duration::from_secs(5), || {
        tier_status(&s)["listeners"][0]["tls_handshake_errors"] == 3
    });
    drop(idle);
    assert!(counted.is_some(), "{}", tier_status(&s));
    assert_eq!(be.hits.load(Ordering::Relaxed), 0);
    let (_, metrics) = http(s.admin.expect("admin"), "GET", "/metrics");
    assert!(
        metrics.contains(
            "geolb_tier_listener_tls_handshake_errors_total{listener=\"h\",region=\"eu\"} 3"
        ),
        "{metrics}"
    );
}

/// Verification of backends is on by default: a backend whose certificate
/// comes from a test CA is reached when the group gives that CA (by its
/// address, or by `server_name`) and refused with 502 — a counted connect
/// error — when the group trusts only the system roots.
#[test]
fn backend_tls_is_verified_against_the_group_ca_and_refused_without_it() {
    let rt = rt();
    let pki = Pki::new("backend CA");
    let by_ip = pki.leaf(&["127.0.1.11"]);
    let by_name = pki.leaf(&["backend.internal"]);
    let a = backend(&rt, "127.0.1.11", "a", Some(&by_ip));
    let b = backend(&rt, "127.0.1.12", "b", Some(&by_name));
    let site = pki.leaf(&["app.example.test", "127.0.1.1"]);
    let s = start_tier(
        &format!(
            "{}{}{}{}",
            group("with-ca", "tls = { ca = \"backend-ca.pem\" }", a.addr),
            group(
                "by-name",
                "tls = { ca = \"backend-ca.pem\", server_name = \"backend.internal\" }",
                b.addr
            ),
            group("system", "tls = true\nejection = { failures = 0 }", a.addr),
            https_listener(
                "system",
                &["app"],
                "retries = 0\nroutes = [\n  { path_prefix = \"/ca\", group = \"with-ca\" },\n  { path_prefix = \"/name\", group = \"by-name\" },\n]"
            )
        ),
        &[
            ("app.pem", &site.cert),
            ("app.key", &site.key),
            ("backend-ca.pem", &pki.ca_pem),
        ],
    );
    let l = vip(&s);
    let get = |path: &str| {
        rt.block_on(fetch(l, &pki.ca_pem, "app.example.test", &["h2"], path))
            .expect("request")
    };
    let got = get("/ca");
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.starts_with("a HTTP/1.1 GET /ca"), "{}", got.body);
    let got = get("/name");
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.starts_with("b HTTP/1.1 GET /name"), "{}", got.body);
    let before = a.hits.load(Ordering::Relaxed);
    let got = get("/system");
    assert_eq!(got.status, 502, "{}", got.body);
    assert_eq!(a.hits.load(Ordering::Relaxed), before);
    let t = tier_status(&s);
    let system = t["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == "system")
        .expect("group system");
    assert_eq!(system["tls"], true, "{system}");
    assert_eq!(system["backends"][0]["connect_errors"], 1, "{system}");
    assert_eq!(system["backends"][0]["http_errors"], 1, "{system}");
}

/// `protocol = "h2"`: HTTP/2 to the backends — by ALPN over TLS, with
/// prior knowledge (RFC 9113 §3.3) in cleartext.
#[test]
fn rfc9113_3_3_a_group_with_protocol_h2_speaks_http2_to_its_backends() {
    let rt = rt();
    let pki = Pki::new("test CA");
    let a = backend(&rt, "127.0.1.11", "a", Some(&pki.leaf(&["127.0.1.11"])));
    let b = backend(&rt, "127.0.1.12", "b", None);
    let site = pki.leaf(&["app.example.test", "127.0.1.1"]);
    let s = start_tier(
        &format!(
            "{}{}{}",
            group(
                "tls-h2",
                "tls = { ca = \"ca.pem\" }\nprotocol = \"h2\"",
                a.addr
            ),
            group("h2c", "protocol = \"h2\"", b.addr),
            https_listener(
                "tls-h2",
                &["app"],
                "routes = [{ path_prefix = \"/c\", group = \"h2c\" }]"
            )
        ),
        &[
            ("app.pem", &site.cert),
            ("app.key", &site.key),
            ("ca.pem", &pki.ca_pem),
        ],
    );
    for (alpn, path, want) in [
        (&["http/1.1"][..], "/t", "a HTTP/2.0 GET /t"),
        (&["h2"][..], "/c", "b HTTP/2.0 GET /c"),
    ] {
        let got = rt
            .block_on(fetch(vip(&s), &pki.ca_pem, "app.example.test", alpn, path))
            .expect("request");
        assert_eq!(got.status, 200, "{}", got.body);
        assert!(got.body.starts_with(want), "{}", got.body);
    }
    let t = tier_status(&s);
    assert!(
        t["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .all(|g| g["protocol"] == "h2"),
        "{t}"
    );
}
