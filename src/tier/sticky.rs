//! Persistence: which backend a client stays on.
//!
//! - Cookie: the value names a backend by a tag, the first 12 bytes of
//!   HMAC-SHA256(key, backend identity), hex. Opaque (an address cannot be
//!   read from it) and unforgeable without the key; checking one is a table
//!   lookup, since each group keeps tag → backend for its members. The key
//!   is kept across reloads (and comes from `cookie_secret_file` when given,
//!   so it survives restarts and is shared by the nodes behind a VIP).
//! - Source: client address → last backend, forgotten after `timeout`
//!   unseen; at most `max_entries`, the oldest entries go first.
//!
//! A sticky backend that cannot serve (down, ejected, full, drained unless
//! `drain_sticky`) is passed over: the request is balanced as a new one and
//! the client sticks to where it went.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use rustc_hash::FxHashMap;

use super::Backend;

/// Length of a cookie tag in bytes (hex doubles it).
const TAG_BYTES: usize = 12;

/// The key persistence cookies are signed with.
pub struct CookieKey(ring::hmac::Key);

impl CookieKey {
    pub fn new(secret: &[u8]) -> Self {
        CookieKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))
    }

    /// A key from the system's random source (32 bytes).
    pub fn random() -> Self {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 32];
        if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
            // No system randomness: a seeded generator rather than refusing
            // to start (cookies are then merely hard to guess).
            b.iter_mut().for_each(|x| *x = fastrand::u8(..));
        }
        CookieKey::new(&b)
    }

    /// The tag naming `backend` (its identity) in a cookie.
    pub fn tag(&self, backend: &str) -> String {
        let mac = ring::hmac::sign(&self.0, backend.as_bytes());
        let mut out = String::with_capacity(TAG_BYTES * 2);
        for b in mac.as_ref().iter().take(TAG_BYTES) {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// A group's cookie table: tag → backend identity, and the `Set-Cookie`
/// value for each backend (built once per apply, not per request).
#[derive(Default)]
pub struct Cookies {
    by_tag: FxHashMap<String, String>,
    set: FxHashMap<String, (String, HeaderValue)>,
}

impl Cookies {
    /// The table for `backends` (identities) with cookie `name` and its
    /// `attributes`.
    pub fn build<'a>(
        key: &CookieKey,
        name: &str,
        attributes: &str,
        backends: impl Iterator<Item = &'a str>,
    ) -> Self {
        let mut c = Cookies::default();
        for id in backends {
            let tag = key.tag(id);
            if let Ok(v) = HeaderValue::from_str(&format!("{name}={tag}{attributes}")) {
                c.set.insert(id.to_string(), (tag.clone(), v));
            }
            c.by_tag.insert(tag, id.to_string());
        }
        c
    }

    /// The backend a cookie value names, if it names one of the group's.
    pub fn backend(&self, value: &str) -> Option<&str> {
        self.by_tag.get(value).map(String::as_str)
    }

    /// `Set-Cookie` for a client now on `backend`, unless its cookie already
    /// says so.
    pub fn set_cookie(&self, backend: &str, had: Option<&str>) -> Option<HeaderValue> {
        let (tag, v) = self.set.get(backend)?;
        (had != Some(tag.as_str())).then(|| v.clone())
    }
}

/// The value of cookie `name` among a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

/// Removes cookie `name` from a request's `Cookie` headers (the backend
/// does not need the balancer's own cookie); drops a header left empty.
pub fn strip_cookie(headers: &mut http::HeaderMap, name: &str) {
    let found = headers
        .get_all(http::header::COOKIE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains(name)));
    if !found {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty() && pair.split_once('=').is_none_or(|(k, _)| k.trim() != name)
        })
        .map(str::to_string)
        .collect();
    headers.remove(http::header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(http::header::COOKIE, v);
        }
    }
}

/// Client address → backend, with a timeout and a size bound.
pub struct SourceTable {
    map: FxHashMap<IpAddr, (Arc<Backend>, u64)>,
    timeout_ms: u64,
    max: usize,
}

impl SourceTable {
    pub fn new(timeout_ms: u64, max: usize) -> Self {
        SourceTable {
            map: FxHashMap::default(),
            timeout_ms,
            max: max.max(1),
        }
    }

    /// Changes the limits; entries are kept.
    pub fn set_limits(&mut self, timeout_ms: u64, max: usize) {
        self.timeout_ms = timeout_ms;
        self.max = max.max(1);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The backend `client` was last sent to, unless it expired.
    pub fn get(&self, client: IpAddr, now: u64) -> Option<&Arc<Backend>> {
        let (b, seen) = self.map.get(&client.to_canonical())?;
        (now.saturating_sub(*seen) < self.timeout_ms).then_some(b)
    }

    /// Remembers that `client` went to `backend` at `now`. When full, the
    /// expired entries are dropped, then the older half of the rest.
    pub fn put(&mut self, client: IpAddr, backend: &Arc<Backend>, now: u64) {
        let client = client.to_canonical();
        if let Some(e) = self.map.get_mut(&client) {
            if !Arc::ptr_eq(&e.0, backend) {
                e.0 = backend.clone();
            }
            e.1 = now;
            return;
        }
        if self.map.len() >= self.max {
            self.sweep(now);
        }
        if self.map.len() >= self.max {
            let mut seen: Vec<u64> = self.map.values().map(|e| e.1).collect();
            let mid = seen.len() / 2;
            let (_, cut, _) = seen.select_nth_unstable(mid);
            let cut = *cut;
            self.map.retain(|_, e| e.1 > cut);
        }
        self.map.insert(client, (backend.clone(), now));
    }

    /// Drops the entries unseen for the timeout.
    pub fn sweep(&mut self, now: u64) {
        let t = self.timeout_ms;
        self.map.retain(|_, e| now.saturating_sub(e.1) < t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: &str) -> Arc<Backend> {
        Arc::new(Backend::new(id, "127.0.0.1:1".parse().expect("addr")))
    }

    #[test]
    fn cookie_tags_are_opaque_stable_and_keyed() {
        let k = CookieKey::new(b"0123456789abcdef0123");
        let t = k.tag("g/10.0.0.1:80");
        assert_eq!(t.len(), 24);
        assert!(!t.contains("10.0.0.1"));
        assert_eq!(t, k.tag("g/10.0.0.1:80"));
        assert_ne!(t, k.tag("g/10.0.0.2:80"));
        assert_ne!(
            t,
            CookieKey::new(b"another key of 16+ b").tag("g/10.0.0.1:80")
        );
        let c = Cookies::build(
            &k,
            "SRV",
            "; Path=/",
            ["g/10.0.0.1:80", "g/10.0.0.2:80"].into_iter(),
        );
        assert_eq!(c.backend(&t), Some("g/10.0.0.1:80"));
        assert_eq!(c.backend("00112233445566778899aabb"), None);
        assert_eq!(c.set_cookie("g/10.0.0.1:80", Some(&t)), None);
        let set = c.set_cookie("g/10.0.0.1:80", None).expect("set");
        assert_eq!(set.to_str().ok(), Some(format!("SRV={t}; Path=/").as_str()));
    }

    #[test]
    fn rfc6265_4_2_cookie_pairs_are_found_and_the_balancer_cookie_is_removed() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; SRV=abc"),
        );
        h.append(http::header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "SRV"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        strip_cookie(&mut h, "SRV");
        let all: Vec<_> = h.get_all(http::header::COOKIE).iter().collect();
        assert_eq!(all, [HeaderValue::from_static("a=1; b=2")]);
        let mut only = http::HeaderMap::new();
        only.insert(http::header::COOKIE, HeaderValue::from_static("SRV=abc"));
        strip_cookie(&mut only, "SRV");
        assert!(only.get(http::header::COOKIE).is_none());
    }

    #[test]
    fn the_source_table_expires_and_stays_within_its_bound() {
        let (a, b) = (backend("g/a"), backend("g/b"));
        let mut t = SourceTable::new(1000, 4);
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        t.put(ip(1), &a, 0);
        assert!(t.get(ip(1), 999).is_some_and(|x| Arc::ptr_eq(x, &a)));
        assert!(t.get(ip(1), 1000).is_none(), "expired");
        // An IPv4-mapped client is the same client.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        t.put(mapped, &b, 10);
        assert!(t.get(ip(1), 20).is_some_and(|x| Arc::ptr_eq(x, &b)));
        for n in 2..=50 {
            t.put(ip(n), &a, 100 + u64::from(n));
            assert!(t.len() <= 4);
        }
        // The newest is always kept.
        assert!(t.get(ip(50), 200).is_some());
        t.sweep(5000);
        assert!(t.is_empty());
    }
}
