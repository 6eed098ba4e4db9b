//! The RDATA presentation forms built from character-strings (RFC 1035
//! §5.1) — TXT, HINFO, NAPTR and CAA — parsed here rather than by
//! hickory-proto's text parser, which misreads `\DDD` escapes and re-splits
//! unquoted strings that contain an escaped space. Each token the lexer
//! gives (quoted or not, its escapes kept) is one character-string.

use hickory_proto::rr::rdata::{HINFO, NAPTR, TXT};
use hickory_proto::rr::{Name, RData, RecordType};

use super::Tok;

/// Decodes a character-string's text (RFC 1035 §5.1): `\DDD` is the octet
/// DDD (decimal), `\X` is X, anything else stands for itself.
pub(super) fn char_string(text: &str) -> Result<Vec<u8>, &'static str> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1..i + 4) {
            Some(d) if d.iter().all(u8::is_ascii_digit) => {
                let v = d.iter().fold(0u32, |v, c| v * 10 + u32::from(c - b'0'));
                out.push(u8::try_from(v).map_err(|_| "\\DDD escape above 255")?);
                i += 4;
            }
            _ if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                return Err("\\DDD escape needs three digits");
            }
            _ => {
                // `\X`: X, which may be a multi-byte character.
                let c = text
                    .get(i + 1..)
                    .and_then(|rest| rest.chars().next())
                    .ok_or("a trailing backslash")?;
                out.extend_from_slice(&b[i + 1..i + 1 + c.len_utf8()]);
                i += 1 + c.len_utf8();
            }
        }
    }
    Ok(out)
}

/// One character-string of at most 255 octets.
fn string(t: &Tok) -> Result<Vec<u8>, String> {
    let s = char_string(&t.text).map_err(|e| format!("{:?}: {e}", t.text))?;
    if s.len() > 255 {
        return Err(format!(
            "character-string of {} bytes (at most 255)",
            s.len()
        ));
    }
    Ok(s)
}

fn number<T: std::str::FromStr>(t: Option<&Tok>, what: &str) -> Result<T, String> {
    let t = t.ok_or_else(|| format!("{what} is missing"))?;
    t.text
        .parse()
        .ok()
        .filter(|_| !t.quoted)
        .ok_or_else(|| format!("{what} {:?} is not a number in range", t.text))
}

/// A domain name in RDATA, relative to `origin` unless it ends in a dot,
/// with the case it was written in (as Knot keeps it).
pub(super) fn rdata_name(text: &str, origin: &Name) -> Result<Name, String> {
    if text == "@" {
        return Ok(origin.clone());
    }
    let n = Name::from_ascii(text).map_err(|e| format!("{text:?} is not a domain name: {e}"))?;
    if n.is_fqdn() {
        Ok(n)
    } else {
        n.append_domain(origin)
            .map_err(|e| format!("{text:?} is not a domain name: {e}"))
    }
}

/// Parses TXT, HINFO, NAPTR or CAA RDATA; `None` for other types.
pub(super) fn parse(
    rtype: RecordType,
    toks: &[Tok],
    origin: &Name,
) -> Option<Result<RData, String>> {
    let r = match rtype {
        RecordType::TXT => toks
            .iter()
            .map(string)
            .collect::<Result<Vec<_>, _>>()
            .map(|s| RData::TXT(TXT::from_bytes(s.iter().map(Vec::as_slice).collect()))),
        RecordType::HINFO => hinfo(toks),
        RecordType::NAPTR => naptr(toks, origin),
        RecordType::CAA => caa(toks),
        _ => return None,
    };
    Some(r)
}

fn exactly(toks: &[Tok], n: usize, form: &str) -> Result<(), String> {
    if toks.len() == n {
        Ok(())
    } else {
        Err(format!("expected {form}, found {} fields", toks.len()))
    }
}

fn hinfo(toks: &[Tok]) -> Result<RData, String> {
    exactly(toks, 2, "CPU OS")?;
    Ok(RData::HINFO(HINFO::from_bytes(
        string(&toks[0])?.into(),
        string(&toks[1])?.into(),
    )))
}

fn naptr(toks: &[Tok], origin: &Name) -> Result<RData, String> {
    exactly(
        toks,
        6,
        "ORDER PREFERENCE FLAGS SERVICES REGEXP REPLACEMENT",
    )?;
    let flags = string(&toks[2])?;
    if !flags.iter().all(u8::is_ascii_alphanumeric) {
        return Err("FLAGS may hold only letters and digits (RFC 3403 §4.1)".into());
    }
    Ok(RData::NAPTR(NAPTR::new(
        number(toks.first(), "ORDER")?,
        number(toks.get(1), "PREFERENCE")?,
        flags.into(),
        string(&toks[3])?.into(),
        string(&toks[4])?.into(),
        rdata_name(&toks[5].text, origin)?,
    )))
}

/// CAA (RFC 8659 §4.1.1): flags, tag, value; kept as its wire bytes, since
/// hickory-proto re-encodes some values differently from how they were
/// written.
fn caa(toks: &[Tok]) -> Result<RData, String> {
    exactly(toks, 3, "FLAGS TAG VALUE")?;
    let flags: u8 = number(toks.first(), "FLAGS")?;
    let tag = string(&toks[1])?;
    if tag.is_empty() || tag.len() > 15 || !tag.iter().all(u8::is_ascii_alphanumeric) {
        return Err("TAG must be 1 to 15 letters and digits (RFC 8659 §4.1)".into());
    }
    // The value is not length-prefixed and may exceed 255 bytes.
    let value = char_string(&toks[2].text).map_err(|e| format!("VALUE: {e}"))?;
    let mut rdata = vec![flags, tag.len() as u8];
    rdata.extend_from_slice(&tag);
    rdata.extend_from_slice(&value);
    Ok(super::opaque(RecordType::CAA, rdata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1035_5_1_escapes_decode() {
        assert_eq!(char_string(r#"a\065\\\"b\ c"#), Ok(b"aA\\\"b c".to_vec()));
        assert_eq!(char_string(r"\255\000"), Ok(vec![255, 0]));
        assert!(char_string(r"\256").is_err());
        assert!(char_string(r"\06").is_err());
        assert!(char_string("x\\").is_err());
        assert_eq!(char_string("é\\é"), Ok("éé".as_bytes().to_vec()));
    }
}
