//! SVCB and HTTPS records (RFC 9460): presentation format to wire form,
//! and the checks a zone file's record must pass in either form.
//!
//! hickory-proto's text parser does not accept quoted values
//! (`alpn="h2,h3"`, the form most published records use), escaped commas
//! or several other forms of RFC 9460 §2.1, and its decode/encode round
//! trip is not byte-exact for every value; so this module turns the
//! presentation form into RDATA itself (char-strings and value-lists per
//! Appendix A) and the record is kept as those bytes, served as they are.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::rr::Name;

use super::text::{char_string, rdata_name};
use super::Tok;

const MANDATORY: u16 = 0;
const ALPN: u16 = 1;
const NO_DEFAULT_ALPN: u16 = 2;
const PORT: u16 = 3;
const IPV4HINT: u16 = 4;
const ECH: u16 = 5;
const IPV6HINT: u16 = 6;
/// Reserved as "Invalid key" (RFC 9460 §14.3.2).
const INVALID_KEY: u16 = 65535;

/// The SvcParamKeys with a name of their own.
const NAMED_KEYS: [(&str, u16); 7] = [
    ("mandatory", MANDATORY),
    ("alpn", ALPN),
    ("no-default-alpn", NO_DEFAULT_ALPN),
    ("port", PORT),
    ("ipv4hint", IPV4HINT),
    ("ech", ECH),
    ("ipv6hint", IPV6HINT),
];

/// Why an SVCB or HTTPS record is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvcbError {
    #[error("SvcPriority is missing")]
    NoPriority,
    #[error("SvcPriority {0:?} is not a number from 0 to 65535")]
    BadPriority(String),
    #[error("TargetName is missing")]
    NoTarget,
    #[error("TargetName {0:?}: {1}")]
    BadTarget(String, String),
    #[error("unknown SvcParamKey {0:?} (known: mandatory, alpn, no-default-alpn, port, ipv4hint, ech, ipv6hint, keyNNNNN)")]
    UnknownKey(String),
    #[error("SvcParamKey {0} appears twice")]
    DuplicateKey(String),
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{key}: {why}")]
    BadValue { key: String, why: String },
    #[error("quoted string \"{0}\" does not follow a key= (write key=\"value\")")]
    StrayQuote(String),
    #[error("mandatory lists {0}, which the record does not have")]
    MandatoryMissing(String),
    #[error("mandatory must not list mandatory itself")]
    MandatoryItself,
    #[error("no-default-alpn needs alpn in the same record (RFC 9460 §7.1.1)")]
    NoDefaultWithoutAlpn,
    #[error("RDATA longer than 65535 bytes")]
    TooLong,
    #[error("RDATA malformed: {0}")]
    Wire(&'static str),
}

/// The presentation name of a key.
fn key_name(key: u16) -> String {
    NAMED_KEYS
        .iter()
        .find(|(_, k)| *k == key)
        .map_or_else(|| format!("key{key}"), |(n, _)| (*n).to_string())
}

/// A key from its presentation name: a named key or `keyNNNNN` (decimal,
/// no leading zeros).
fn parse_key(s: &str) -> Result<u16, SvcbError> {
    if let Some(&(_, k)) = NAMED_KEYS.iter().find(|(n, _)| *n == s) {
        return Ok(k);
    }
    let unknown = || SvcbError::UnknownKey(s.to_string());
    let digits = s.strip_prefix("key").ok_or_else(unknown)?;
    let leading_zero = digits.len() > 1 && digits.starts_with('0');
    if digits.is_empty() || leading_zero || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unknown());
    }
    match digits.parse::<u16>() {
        Ok(INVALID_KEY) | Err(_) => Err(unknown()),
        Ok(k) => Ok(k),
    }
}

fn bad(key: u16, why: impl Into<String>) -> SvcbError {
    SvcbError::BadValue {
        key: key_name(key),
        why: why.into(),
    }
}

/// Splits decoded octets as a value-list (RFC 9460 Appendix A.1.1): items
/// separated by `,`; inside an item `\,` is a comma and `\\` a backslash.
fn value_list(octets: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut items = Vec::new();
    let mut cur = Vec::new();
    let mut i = 0;
    while i < octets.len() {
        match octets[i] {
            b',' => {
                items.push(std::mem::take(&mut cur));
            }
            b'\\' => match octets.get(i + 1) {
                Some(&c @ (b',' | b'\\')) => {
                    cur.push(c);
                    i += 1;
                }
                _ => return Err("in a list, a backslash may only escape ',' or '\\'"),
            },
            c => cur.push(c),
        }
        i += 1;
    }
    items.push(cur);
    if items.iter().any(Vec::is_empty) {
        return Err("empty item in the list");
    }
    Ok(items)
}

/// The wire value of `key` from its presentation value (already decoded
/// as a char-string; `escaped` says the text had a backslash).
fn wire_value(key: u16, v: &[u8], escaped: bool) -> Result<Vec<u8>, SvcbError> {
    // RFC 9460 §7: the values of these keys MUST NOT contain escapes.
    if escaped && matches!(key, MANDATORY | PORT | IPV4HINT | ECH | IPV6HINT) {
        return Err(bad(key, "escape sequences are not allowed in this value"));
    }
    let text = || std::str::from_utf8(v).map_err(|_| bad(key, "not ASCII"));
    let mut out = Vec::new();
    match key {
        MANDATORY => {
            let mut keys = Vec::new();
            for item in value_list(v).map_err(|e| bad(key, e))? {
                let name = std::str::from_utf8(&item).map_err(|_| bad(key, "not ASCII"))?;
                keys.push(parse_key(name)?);
            }
            keys.sort_unstable();
            if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
                return Err(bad(key, format!("{} is listed twice", key_name(w[0]))));
            }
            for k in keys {
                out.extend_from_slice(&k.to_be_bytes());
            }
        }
        ALPN => {
            for id in value_list(v).map_err(|e| bad(key, e))? {
                let len = u8::try_from(id.len()).map_err(|_| bad(key, "an ID over 255 bytes"))?;
                out.push(len);
                out.extend_from_slice(&id);
            }
        }
        NO_DEFAULT_ALPN => {
            if !v.is_empty() {
                return Err(bad(key, "takes no value"));
            }
        }
        PORT => {
            let t = text()?;
            let leading_zero = t.len() > 1 && t.starts_with('0');
            let port = t
                .parse::<u16>()
                .ok()
                .filter(|_| !leading_zero && t.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| bad(key, format!("{t:?} is not a port number")))?;
            out.extend_from_slice(&port.to_be_bytes());
        }
        IPV4HINT | IPV6HINT => {
            for a in text()?.split(',') {
                match (key, a.parse::<IpAddr>()) {
                    (IPV4HINT, Ok(IpAddr::V4(ip))) => out.extend_from_slice(&ip.octets()),
                    (IPV6HINT, Ok(IpAddr::V6(ip))) => out.extend_from_slice(&ip.octets()),
                    _ => return Err(bad(key, format!("{a:?} is not an address of its family"))),
                }
            }
        }
        ECH => {
            out = data_encoding::BASE64
                .decode(v)
                .map_err(|_| bad(key, "not base64 (RFC 4648 §4)"))?;
        }
        // keyNNNNN: the decoded char-string is the wire value.
        _ => out = v.to_vec(),
    }
    Ok(out)
}

/// Parses the RDATA tokens of an SVCB or HTTPS record (RFC 9460 §2.1):
/// SvcPriority, TargetName (relative to `origin`), then SvcParams as
/// `key`, `key=value` or `key="value"`. Returns the RDATA in wire form,
/// checked as [`check_wire`] does.
pub(super) fn parse(toks: &[Tok], origin: &Name) -> Result<Vec<u8>, SvcbError> {
    let prio = toks.first().ok_or(SvcbError::NoPriority)?;
    let priority: u16 = prio
        .text
        .parse()
        .ok()
        .filter(|_| !prio.quoted)
        .ok_or_else(|| SvcbError::BadPriority(prio.text.clone()))?;
    let target = toks.get(1).ok_or(SvcbError::NoTarget)?;
    let name = rdata_name(&target.text, origin)
        .map_err(|e| SvcbError::BadTarget(target.text.clone(), e))?;
    let mut params: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    let mut i = 2;
    while let Some(t) = toks.get(i) {
        i += 1;
        if t.quoted {
            return Err(SvcbError::StrayQuote(t.text.clone()));
        }
        let (key_text, value) = match t.text.split_once('=') {
            None => (t.text.as_str(), None),
            // `key="value"`: the lexer hands the quoted part over as the next token.
            Some((k, "")) => match toks.get(i) {
                Some(q) if q.quoted && q.glued => {
                    i += 1;
                    (k, Some(q.text.as_str()))
                }
                _ => (k, Some("")),
            },
            Some((k, v)) => (k, Some(v)),
        };
        let key = parse_key(key_text)?;
        let wire = match value {
            None if matches!(key, MANDATORY | ALPN | PORT | IPV4HINT | IPV6HINT | ECH) => {
                return Err(SvcbError::MissingValue(key_name(key)))
            }
            None => Vec::new(),
            Some(v) => {
                let octets = char_string(v).map_err(|e| bad(key, e))?;
                if octets.is_empty() && key != NO_DEFAULT_ALPN && key < 7 {
                    return Err(SvcbError::MissingValue(key_name(key)));
                }
                wire_value(key, &octets, v.contains('\\'))?
            }
        };
        if params.insert(key, wire).is_some() {
            return Err(SvcbError::DuplicateKey(key_name(key)));
        }
    }
    let mut out = priority.to_be_bytes().to_vec();
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    for (key, value) in &params {
        let len = u16::try_from(value.len()).map_err(|_| SvcbError::TooLong)?;
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value);
    }
    if out.len() > usize::from(u16::MAX) {
        return Err(SvcbError::TooLong);
    }
    check_wire(&out)?;
    Ok(out)
}

/// Checks SVCB/HTTPS RDATA (RFC 9460 §2.2, §7, §8): an uncompressed
/// TargetName, SvcParams in strictly increasing key order, each known
/// key's value well formed, every key that `mandatory` lists present
/// (and not `mandatory` itself), `alpn` alongside `no-default-alpn`.
pub fn check_wire(rdata: &[u8]) -> Result<(), SvcbError> {
    let mut at = 2;
    if rdata.len() < 3 {
        return Err(SvcbError::Wire("shorter than SvcPriority and TargetName"));
    }
    loop {
        let len = *rdata
            .get(at)
            .ok_or(SvcbError::Wire("TargetName runs past the end"))? as usize;
        if len & 0xc0 != 0 {
            return Err(SvcbError::Wire("TargetName is compressed"));
        }
        at += 1 + len;
        if at - 2 > 255 {
            return Err(SvcbError::Wire("TargetName longer than 255 bytes"));
        }
        if len == 0 {
            break;
        }
    }
    let mut params: Vec<(u16, &[u8])> = Vec::new();
    while at < rdata.len() {
        let head = rdata
            .get(at..at + 4)
            .ok_or(SvcbError::Wire("a SvcParam runs past the end"))?;
        let key = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = rdata
            .get(at + 4..at + 4 + len)
            .ok_or(SvcbError::Wire("a SvcParam runs past the end"))?;
        if let Some(&(last, _)) = params.last() {
            if key == last {
                return Err(SvcbError::DuplicateKey(key_name(key)));
            }
            if key < last {
                return Err(SvcbError::Wire("SvcParamKeys are not in increasing order"));
            }
        }
        if key == INVALID_KEY {
            return Err(SvcbError::UnknownKey(key_name(key)));
        }
        check_value(key, value)?;
        params.push((key, value));
        at += 4 + len;
    }
    let has = |k: u16| params.iter().any(|&(p, _)| p == k);
    if let Some(&(_, list)) = params.iter().find(|&&(k, _)| k == MANDATORY) {
        for k in list
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
        {
            if k == MANDATORY {
                return Err(SvcbError::MandatoryItself);
            }
            if !has(k) {
                return Err(SvcbError::MandatoryMissing(key_name(k)));
            }
        }
    }
    if has(NO_DEFAULT_ALPN) && !has(ALPN) {
        return Err(SvcbError::NoDefaultWithoutAlpn);
    }
    Ok(())
}

/// The wire value of a known key is shaped as §7 says.
fn check_value(key: u16, v: &[u8]) -> Result<(), SvcbError> {
    let ok = match key {
        MANDATORY => {
            let keys: Vec<u16> = v
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            let increasing = keys.windows(2).all(|w| w[0] < w[1]);
            if !v.is_empty() && v.len() % 2 == 0 && !increasing {
                return Err(bad(key, "keys listed twice or out of order"));
            }
            !v.is_empty() && v.len() % 2 == 0
        }
        ALPN => {
            let mut at = 0;
            while at < v.len() && v[at] > 0 {
                at += 1 + usize::from(v[at]);
            }
            !v.is_empty() && at == v.len()
        }
        NO_DEFAULT_ALPN => v.is_empty(),
        PORT => v.len() == 2,
        IPV4HINT => !v.is_empty() && v.len() % 4 == 0,
        IPV6HINT => !v.is_empty() && v.len() % 16 == 0,
        ECH => !v.is_empty(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(bad(key, "value malformed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RDATA of `rdata` (the text after the type), lexed like a zone line.
    fn rd(rdata: &str) -> Result<Vec<u8>, SvcbError> {
        let mut d = Vec::new();
        let line = format!("x 60 SVCB {rdata}\n");
        let entries = super::super::lex(&line, std::path::Path::new("t"), &mut d);
        assert!(d.is_empty(), "{d:?}");
        let origin = Name::from_ascii("example.com.").expect("origin");
        parse(&entries[0].toks[3..], &origin)
    }

    fn hex(s: &str) -> Vec<u8> {
        super::super::hex_decode(&s.split_whitespace().collect::<String>()).expect("hex")
    }

    const FOO_COM: &str = "03 666f6f 07 6578616d706c65 03 636f6d 00";
    const FOO_ORG: &str = "03 666f6f 07 6578616d706c65 03 6f7267 00";

    #[test]
    fn rfc9460_appendix_d1_alias_mode() {
        assert_eq!(
            rd("0 foo.example.com.").expect("ok"),
            hex(&format!("0000 {FOO_COM}"))
        );
    }

    #[test]
    fn rfc9460_appendix_d2_service_mode() {
        let cases = [
            ("1 .", "0001 00".to_string()),
            (
                "16 foo.example.com. port=53",
                format!("0010 {FOO_COM} 0003 0002 0035"),
            ),
            (
                "1 foo.example.com. key667=hello",
                format!("0001 {FOO_COM} 029b 0005 68656c6c6f"),
            ),
            (
                r#"1 foo.example.com. key667="hello\210qoo""#,
                format!("0001 {FOO_COM} 029b 0009 68656c6c6f d2 716f6f"),
            ),
            (
                r#"1 foo.example.com. ( ipv6hint="2001:db8::1,2001:db8::53:1" )"#,
                format!(
                    "0001 {FOO_COM} 0006 0020 20010db8000000000000000000000001 \
                     20010db8000000000000000000530001"
                ),
            ),
            (
                r#"1 example.com. ( ipv6hint="2001:db8:122:344::192.0.2.33" )"#,
                "0001 07 6578616d706c65 03 636f6d 00 0006 0010 \
                 20010db80122034400000000c0000221"
                    .to_string(),
            ),
            (
                "16 foo.example.org. ( alpn=h2,h3-19 mandatory=ipv4hint,alpn ipv4hint=192.0.2.1 )",
                format!(
                    "0010 {FOO_ORG} 0000 0004 0001 0004 0001 0009 02 6832 05 68332d3139 \
                     0004 0004 c0000201"
                ),
            ),
            (
                r#"16 foo.example.org. alpn="f\\\\oo\\,bar,h2""#,
                format!("0010 {FOO_ORG} 0001 000c 08 665c6f6f2c626172 02 6832"),
            ),
            (
                r"16 foo.example.org. alpn=f\\\092oo\092,bar,h2",
                format!("0010 {FOO_ORG} 0001 000c 08 665c6f6f2c626172 02 6832"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(rd(text).expect(text), hex(&want), "{text}");
        }
    }

    #[test]
    fn rfc9460_appendix_d3_failure_cases() {
        let cases = [
            // Multiple instances of the same SvcParamKey.
            "1 foo.example.com. key123=abc key123=def",
            // Missing SvcParamValues that must be non-empty.
            "1 foo.example.com. mandatory",
            "1 foo.example.com. alpn",
            "1 foo.example.com. port",
            "1 foo.example.com. ipv4hint",
            "1 foo.example.com. ipv6hint",
            // The "no-default-alpn" SvcParamKey value must be empty.
            "1 foo.example.com. no-default-alpn=abc",
            // A mandatory SvcParam is missing.
            "1 foo.example.com. mandatory=key123",
            // The "mandatory" SvcParamKey must not be included in the mandatory list.
            "1 foo.example.com. mandatory=mandatory",
            // Multiple instances of the same SvcParamKey in the mandatory list.
            "1 foo.example.com. mandatory=key123,key123 key123=abc",
        ];
        for text in cases {
            assert!(rd(text).is_err(), "{text} must fail");
        }
    }

    #[test]
    fn rfc9460_2_1_quoted_and_unquoted_values_are_the_same() {
        for (a, b) in [
            (r#"1 . alpn="h2,h3""#, "1 . alpn=h2,h3"),
            (r#"1 . alpn="h2""#, "1 . alpn=h2"),
            (r#"1 . port="443""#, "1 . port=443"),
            (
                r#"1 . ipv4hint="192.0.2.1,192.0.2.2""#,
                "1 . ipv4hint=192.0.2.1,192.0.2.2",
            ),
            (r#"1 . ech="AEX+DQBB""#, "1 . ech=AEX+DQBB"),
            (r#"1 . key65000="""#, "1 . key65000"),
            (
                r#"1 . alpn="h2" no-default-alpn"#,
                "1 . no-default-alpn alpn=h2",
            ),
        ] {
            assert_eq!(rd(a).expect(a), rd(b).expect(b), "{a}");
        }
    }

    #[test]
    fn rfc9460_7_values_are_checked() {
        for text in [
            "1 . port=65536",
            "1 . port=0x10",
            "1 . ipv4hint=192.0.2",
            "1 . ipv6hint=192.0.2.1",
            "1 . ech=not*base64",
            r"1 . port=\053\051",
            "1 . alpn=h2,,h3",
            "1 . no-default-alpn",
            "1 . key65535=x",
            "1 . key007=x",
            "1 . bogus=1",
            r#"1 . "alpn=h2""#,
            "x . alpn=h2",
            "1",
        ] {
            assert!(rd(text).is_err(), "{text} must fail");
        }
    }

    #[test]
    fn rfc9460_2_2_wire_form_is_checked() {
        let ok = hex(&format!("0001 {FOO_COM} 0001 0003 02 6832 0003 0002 01bb"));
        assert_eq!(check_wire(&ok), Ok(()));
        for bad in [
            // Keys out of order.
            hex(&format!("0001 {FOO_COM} 0003 0002 01bb 0001 0003 02 6832")),
            // A value running past the end.
            hex(&format!("0001 {FOO_COM} 0003 0004 01bb")),
            // A port of three bytes; a compressed target.
            hex(&format!("0001 {FOO_COM} 0003 0003 01bb00")),
            hex("0001 c00c"),
            // mandatory naming a key that is absent.
            hex(&format!("0001 {FOO_COM} 0000 0002 0003")),
        ] {
            assert!(check_wire(&bad).is_err(), "{bad:02x?}");
        }
    }
}
