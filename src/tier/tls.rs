//! TLS for the tier's HTTP listeners (termination) and for the groups that
//! speak TLS to their backends, with rustls and its ring provider.
//!
//! Everything here is built when the config is compiled
//! (`snapshot::tier`), so an unreadable file, a PEM file without a
//! certificate, a key that does not belong to its certificate or a CA
//! file without a CA is an error of that load: a reload that meets one
//! fails as a whole and the running certificates keep serving. The built
//! configs are compared by what they were built from (the files' bytes and
//! the settings), so a reload that changes nothing keeps the running
//! `ServerConfig` — and its session cache — while a changed certificate
//! is used by the connections accepted after the reload.
//!
//! Certificate choice (`Sni`): the client's server name (RFC 6066 §3)
//! against each certificate's subject alternative DNS names — an exact
//! name first, then a wildcard (`*.example.com` covers one label) —, else
//! the first certificate of the listener.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::stats::{add, ListenerStats};

/// What can be wrong with a listener's or a group's TLS settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: no certificate in the file (PEM \"BEGIN CERTIFICATE\" blocks expected)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: not a usable certificate: {why}", path.display())]
    BadCertificate { path: PathBuf, why: String },
    #[error("{}: no private key in the file (PEM \"BEGIN PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" expected)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: not a usable private key: {why}", path.display())]
    BadKey { path: PathBuf, why: String },
    #[error("the key {} does not belong to the certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("alpn {0:?}: the listener speaks \"h2\" and \"http/1.1\"")]
    Alpn(String),
    #[error("min_version {0:?}: expected \"1.2\" or \"1.3\"")]
    Version(String),
    #[error("server_name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    /// Whether the problem is the key file's (for pointing at it).
    pub fn is_about_key(&self) -> bool {
        matches!(self, TlsError::NoKey { .. } | TlsError::BadKey { .. })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file, in order; an empty file is an error.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A certificate chain and its key, loaded and checked.
#[derive(Clone)]
pub struct Certified {
    key: Arc<CertifiedKey>,
    /// The end-entity certificate's DNS names, lower case (wildcards kept).
    pub names: Vec<String>,
    /// The two files' bytes (what a reload compares).
    source: Vec<u8>,
}

impl fmt::Debug for Certified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certified")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Loads a certificate chain (PEM, end-entity first) and its private key
/// (PEM: PKCS#8, PKCS#1 or SEC1) and checks that they belong together.
pub fn load_certified(cert: &Path, key: &Path) -> Result<Certified, TlsError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain = certificates(cert, &cert_pem)?;
    let end = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| TlsError::BadCertificate {
        path: cert.to_path_buf(),
        why: e.to_string(),
    })?;
    let names: Vec<String> = end
        .valid_dns_names()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key.to_path_buf(),
        },
        other => TlsError::BadKey {
            path: key.to_path_buf(),
            why: other.to_string(),
        },
    })?;
    let signer = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::BadKey {
            path: key.to_path_buf(),
            why: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: cert.to_path_buf(),
                why: e.to_string(),
            })
        }
    }
    let mut source = cert_pem;
    source.extend_from_slice(&key_pem);
    Ok(Certified {
        key: Arc::new(certified),
        names,
        source,
    })
}

/// Whether a certificate name (`www.example.com`, `*.example.com`) covers
/// a server name (lower case, no trailing dot). A wildcard covers exactly
/// one label (RFC 6125 §6.4.3).
fn covers(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == name,
    }
}

/// Chooses a listener's certificate by the client's server name.
#[derive(Debug)]
pub struct Sni {
    certs: Vec<Certified>,
}

impl Sni {
    /// The index of the certificate for `name`: one that names it exactly,
    /// else one whose wildcard covers it, else the first (the default).
    pub fn choose(&self, name: Option<&str>) -> usize {
        let Some(name) = name else { return 0 };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let find = |wild: bool| {
            self.certs.iter().position(|c| {
                c.names
                    .iter()
                    .any(|n| n.starts_with("*.") == wild && covers(n, &name))
            })
        };
        find(false).or_else(|| find(true)).unwrap_or(0)
    }
}

impl ResolvesServerCert for Sni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = self.choose(hello.server_name());
        self.certs.get(i).map(|c| c.key.clone())
    }
}

/// Lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

impl std::str::FromStr for MinVersion {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Self, TlsError> {
        match s {
            "1.2" => Ok(MinVersion::Tls12),
            "1.3" => Ok(MinVersion::Tls13),
            other => Err(TlsError::Version(other.to_string())),
        }
    }
}

/// ALPN protocols a listener offers, checked: "h2" and "http/1.1" only.
pub fn alpn(names: &[String]) -> Result<Vec<Vec<u8>>, TlsError> {
    names
        .iter()
        .map(|n| match n.as_str() {
            "h2" | "http/1.1" => Ok(n.as_bytes().to_vec()),
            other => Err(TlsError::Alpn(other.to_string())),
        })
        .collect()
}

/// A listener's TLS: the rustls config its handshakes use.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// Each certificate's DNS names, in order (the first is the default).
    pub names: Vec<Vec<String>>,
    source: Vec<u8>,
}

impl ServerTls {
    /// A server config over `certs` (at least one; the first is the
    /// default), offering `alpn` in that order.
    pub fn new(
        certs: Vec<Certified>,
        alpn: Vec<Vec<u8>>,
        min: MinVersion,
    ) -> Result<ServerTls, TlsError> {
        let versions: &[&rustls::SupportedProtocolVersion] = match min {
            MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            MinVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let mut source = Vec::new();
        for c in &certs {
            source.extend_from_slice(&(c.source.len() as u64).to_le_bytes());
            source.extend_from_slice(&c.source);
        }
        for a in &alpn {
            source.push(a.len() as u8);
            source.extend_from_slice(a);
        }
        source.push(min as u8);
        let names = certs.iter().map(|c| c.names.clone()).collect();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Sni { certs }));
        config.alpn_protocols = alpn;
        Ok(ServerTls {
            config: Arc::new(config),
            names,
            source,
        })
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("names", &self.names)
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

/// A client's handshake on a listener, within `timeout` (the listener's
/// header timeout), counted as completed or failed.
pub async fn handshake<I: AsyncRead + AsyncWrite + Unpin>(
    tls: &ServerTls,
    io: I,
    timeout: Duration,
    stats: &ListenerStats,
) -> io::Result<TlsStream<I>> {
    let accept = tokio_rustls::TlsAcceptor::from(tls.config.clone()).accept(io);
    let r = match tokio::time::timeout(timeout, accept).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no handshake within {timeout:?}"),
        )),
    };
    match &r {
        Ok(_) => add(&stats.tls_handshakes, 1),
        Err(_) => add(&stats.tls_handshake_errors, 1),
    }
    r
}

/// The system's root certificates (as the HTTPS health checks use them),
/// and why there are none when there are none.
pub fn system_roots() -> (Arc<RootCertStore>, Option<String>) {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    let why = (added == 0).then(|| {
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        format!(
            "no system root certificates could be loaded{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join("; "))
            }
        )
    });
    (Arc::new(roots), why)
}

/// Where a group's backend certificates are verified against.
pub enum Trust<'a> {
    /// The system roots.
    System(Arc<RootCertStore>),
    /// The CA certificates of this PEM file.
    Ca(&'a Path),
    /// Nothing: any certificate is taken (the handshake's signature is
    /// still checked, so the backend holds the key of what it shows).
    None,
}

/// A group's TLS to its backends.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    /// The name verified and sent as SNI; None: the backend's address.
    pub server_name: Option<ServerName<'static>>,
    pub verify: bool,
    source: Vec<u8>,
}

impl ClientTls {
    /// A client config trusting `trust` (ALPN is the connector's).
    pub fn new(trust: Trust<'_>, server_name: Option<&str>) -> Result<Self, TlsError> {
        let mut source = Vec::new();
        let server_name = match server_name {
            Some(n) => {
                source.extend_from_slice(n.as_bytes());
                Some(
                    ServerName::try_from(n.to_string())
                        .map_err(|_| TlsError::ServerName(n.to_string()))?,
                )
            }
            None => None,
        };
        source.push(0);
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let verify = !matches!(trust, Trust::None);
        let config = match trust {
            Trust::System(roots) => {
                source.push(1);
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Ca(path) => {
                let pem = read(path)?;
                let mut roots = RootCertStore::empty();
                for c in certificates(path, &pem)? {
                    roots.add(c).map_err(|e| TlsError::BadCertificate {
                        path: path.to_path_buf(),
                        why: e.to_string(),
                    })?;
                }
                source.push(2);
                source.extend_from_slice(&pem);
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::None => {
                source.push(3);
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
                    .with_no_client_auth()
            }
        };
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
            verify,
            source,
        })
    }

    /// A connector doing TLS over `http` for `https` URIs (plain HTTP for
    /// `http` ones), offering ALPN h2 alone when `h2`, else no ALPN.
    pub fn connector(&self, mut http: HttpConnector, h2: bool) -> HttpsConnector<HttpConnector> {
        http.enforce_http(false);
        let b = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.config).clone())
            .https_or_http();
        let b = match &self.server_name {
            Some(n) => b.with_server_name_resolver(FixedServerNameResolver::new(n.clone())),
            None => b,
        };
        if h2 {
            b.enable_http2().wrap_connector(http)
        } else {
            b.enable_http1().wrap_connector(http)
        }
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

/// `verify = false`: takes any certificate chain and name, but still
/// checks the handshake signature against the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dir: &Path, file: &str, names: &[&str]) -> Certified {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
        let (cp, kp) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&cp, c.cert.pem()).expect("write");
        std::fs::write(&kp, c.signing_key.serialize_pem()).expect("write");
        load_certified(&cp, &kp).expect("loads")
    }

    /// RFC 6066 §3: the certificate is chosen by the client's server name;
    /// exact names beat wildcards, a wildcard covers one label, and a name
    /// no certificate has (or none) gets the first.
    #[test]
    fn rfc6066_3_sni_picks_exact_then_wildcard_then_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sni = Sni {
            certs: vec![
                cert(dir.path(), "a", &["app.example.test"]),
                cert(dir.path(), "b", &["*.example.test"]),
                cert(dir.path(), "c", &["api.example.test", "API2.example.test"]),
            ],
        };
        assert_eq!(sni.choose(None), 0);
        assert_eq!(sni.choose(Some("app.example.test")), 0);
        assert_eq!(sni.choose(Some("api.example.test")), 2);
        assert_eq!(sni.choose(Some("Api2.Example.Test.")), 2);
        assert_eq!(sni.choose(Some("www.example.test")), 1);
        assert_eq!(sni.choose(Some("a.b.example.test")), 0);
        assert_eq!(sni.choose(Some("example.test")), 0);
        assert_eq!(sni.choose(Some("other.org")), 0);
    }

    #[test]
    fn a_key_of_another_certificate_an_empty_file_and_a_missing_file_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        cert(d, "a", &["a.test"]);
        cert(d, "b", &["b.test"]);
        let err = |c: &str, k: &str| {
            load_certified(&d.join(c), &d.join(k))
                .map(|_| ())
                .expect_err("refused")
        };
        assert!(matches!(
            err("a.pem", "b.key"),
            TlsError::KeyMismatch { .. }
        ));
        std::fs::write(d.join("empty.pem"), "").expect("write");
        assert!(matches!(
            err("empty.pem", "a.key"),
            TlsError::NoCertificate { .. }
        ));
        assert!(matches!(err("a.pem", "a.pem"), TlsError::NoKey { .. }));
        assert!(matches!(err("nope.pem", "a.key"), TlsError::Read { .. }));
        let e = err("a.pem", "b.key").to_string();
        assert!(e.contains("does not belong to the certificate"), "{e}");
    }

    #[test]
    fn configs_built_from_the_same_files_are_equal_and_a_changed_file_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let a = cert(d, "a", &["a.test"]);
        let h = alpn(&["h2".into(), "http/1.1".into()]).expect("alpn");
        let one = ServerTls::new(vec![a.clone()], h.clone(), MinVersion::Tls12).expect("tls");
        let two = ServerTls::new(vec![a], h.clone(), MinVersion::Tls12).expect("tls");
        assert_eq!(one, two);
        let b = cert(d, "a", &["a.test"]);
        let three = ServerTls::new(vec![b], h, MinVersion::Tls12).expect("tls");
        assert_ne!(one, three);
        assert!(alpn(&["spdy/3".into()]).is_err());
        assert!("1.1".parse::<MinVersion>().is_err());
    }
}
