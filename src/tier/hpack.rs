//! HPACK header compression for HTTP/2 (RFC 7541).
//!
//! The decoder keeps one connection's dynamic table and turns request header blocks into byte
//! ranges inside a caller-owned buffer, so decoding a field does not allocate once the caller's
//! buffers have grown (only inserting a dynamic table entry allocates). The encoder is
//! stateless: it writes literal fields that the peer never adds to its dynamic table, so it
//! needs no per-connection state and never has to send a table size update.

use std::collections::VecDeque;
use std::fmt;

/// Why a header block could not be decoded (a COMPRESSION_ERROR, RFC 9113 §4.3), or was too
/// large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// An index of 0 or past the static and dynamic tables.
    BadIndex,
    /// An integer that overflows (more than fits a u32 or longer than 5 continuation bytes) or a
    /// block that ends inside one.
    BadInteger,
    /// A string whose length runs past the end of the block.
    Truncated,
    /// Huffman code that is invalid: the EOS symbol, padding longer than 7 bits, or padding that
    /// is not all ones (RFC 7541 §5.2).
    BadHuffman,
    /// A dynamic table size update above the limit we advertised, or one that is not at the
    /// start of the block (RFC 7541 §4.2, §6.3).
    BadSizeUpdate,
    /// The decoded fields are more than `max_list` bytes (counted as RFC 9113 §6.5.2 does:
    /// name + value + 32 per field). Decoding stops at the first field that crosses the bound,
    /// so the rest of the block is never read and the dynamic table misses the insertions it
    /// would have made. The caller answers 431 or resets the stream, but must then treat the
    /// connection's decoding state as broken (close the connection with COMPRESSION_ERROR),
    /// because later header blocks may refer to entries this decoder never inserted.
    TooLarge,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::BadIndex => "invalid header table index",
            Error::BadInteger => "invalid or truncated integer",
            Error::Truncated => "truncated string",
            Error::BadHuffman => "invalid huffman code",
            Error::BadSizeUpdate => "invalid dynamic table size update",
            Error::TooLarge => "header list too large",
        })
    }
}

impl std::error::Error for Error {}

/// One decoded field: byte ranges into the `out` buffer the decoder appended to.
///
/// Each range is `(start, len)`, an offset into `out` and a length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Where the field's name lies in `out`, as `(start, len)`.
    pub name: (u32, u32),
    /// Where the field's value lies in `out`, as `(start, len)`.
    pub value: (u32, u32),
}

impl Field {
    /// The field's name, taken from the buffer the decoder appended to (empty if the range is
    /// not inside `out`).
    pub fn name<'a>(&self, out: &'a [u8]) -> &'a [u8] {
        range(out, self.name)
    }

    /// The field's value, taken from the buffer the decoder appended to (empty if the range is
    /// not inside `out`).
    pub fn value<'a>(&self, out: &'a [u8]) -> &'a [u8] {
        range(out, self.value)
    }
}

fn range(out: &[u8], (start, len): (u32, u32)) -> &[u8] {
    let start = start as usize;
    out.get(start..start.saturating_add(len as usize))
        .unwrap_or(&[])
}

/// Size overhead the RFCs count for every header field and table entry.
const ENTRY_OVERHEAD: usize = 32;

/// One dynamic table entry: the name bytes followed by the value bytes, in one allocation.
#[derive(Debug)]
struct Entry {
    bytes: Box<[u8]>,
    name_len: usize,
}

impl Entry {
    fn parts(&self) -> (&[u8], &[u8]) {
        self.bytes.split_at(self.name_len.min(self.bytes.len()))
    }

    fn size(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }
}

/// The decoding side of one connection: its dynamic table.
#[derive(Debug)]
pub struct Decoder {
    /// Newest entry first, so dynamic index 62 is `entries[0]`.
    entries: VecDeque<Entry>,
    /// Sum of the entries' sizes (RFC 7541 §4.1).
    size: usize,
    /// The maximum size set by the latest size update (initially `limit`).
    max_size: usize,
    /// The SETTINGS_HEADER_TABLE_SIZE we advertised: no size update may exceed it.
    limit: usize,
}

impl Decoder {
    /// A decoder whose dynamic table may grow to `limit` bytes (the SETTINGS_HEADER_TABLE_SIZE
    /// the server advertised; 4096 by default).
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION payloads joined, padding and
    /// priority removed), appending each field's name and value bytes to `out` and its ranges
    /// to `fields`, in order. `max_list` bounds the decoded size as described at
    /// [`Error::TooLarge`]. Literal fields "with incremental indexing" are inserted in the
    /// dynamic table (evicting as RFC 7541 §4.4 says; an entry larger than the table empties
    /// it). Huffman-coded strings are decoded.
    ///
    /// Bytes already in `out` and entries already in `fields` are kept; the new ranges point
    /// past them. Each field counts against `max_list` as it is decoded, so `out` grows by at
    /// most about `max_list` plus one field even for a block that repeats a large table entry. On an error, `out` and `fields` may hold the fields decoded before it, and
    /// the dynamic table may be part-way through the block, so the caller must treat every
    /// error as fatal to the connection.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list: usize,
        out: &mut Vec<u8>,
        fields: &mut Vec<Field>,
    ) -> Result<(), Error> {
        let mut rest = block;
        let mut total = 0usize;
        let mut seen_field = false;
        while let Some(&first) = rest.first() {
            if first & 0x80 != 0 {
                // Indexed header field (§6.1).
                let index = read_int(&mut rest, 7)?;
                let (name, value) = self.get(index)?;
                total = add_field(total, name.len() + value.len(), max_list)?;
                let start = out.len();
                out.extend_from_slice(name);
                out.extend_from_slice(value);
                fields.push(field(start, name.len(), value.len())?);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3), allowed only before the first field.
                if seen_field {
                    return Err(Error::BadSizeUpdate);
                }
                let size = read_int(&mut rest, 5)? as usize;
                if size > self.limit {
                    return Err(Error::BadSizeUpdate);
                }
                self.max_size = size;
                self.evict(size);
                continue;
            } else {
                // Literal header field (§6.2): with incremental indexing (01), without indexing
                // (0000) or never indexed (0001).
                let indexing = first & 0x40 != 0;
                let index = read_int(&mut rest, if indexing { 6 } else { 4 })?;
                let start = out.len();
                // Check the name alone first, so a big table entry is not copied needlessly.
                let name_len = if index == 0 {
                    read_string(&mut rest, out)?;
                    add_field(total, out.len() - start, max_list)?;
                    out.len() - start
                } else {
                    let name = self.get(index)?.0;
                    add_field(total, name.len(), max_list)?;
                    out.extend_from_slice(name);
                    name.len()
                };
                read_string(&mut rest, out)?;
                let value_len = out.len() - start - name_len;
                total = add_field(total, name_len + value_len, max_list)?;
                if indexing {
                    let name = out.get(start..start + name_len).unwrap_or(&[]);
                    let value = out.get(start + name_len..).unwrap_or(&[]);
                    self.insert(name, value);
                }
                fields.push(field(start, name_len, value_len)?);
            }
            seen_field = true;
        }
        Ok(())
    }

    /// The dynamic table's current size in bytes (RFC 7541 §4.1 accounting), for tests and
    /// stats.
    pub fn table_size(&self) -> usize {
        self.size
    }

    /// The name and value at `index` in the combined static and dynamic index space (§2.3.3).
    fn get(&self, index: u32) -> Result<(&[u8], &[u8]), Error> {
        let index = (index as usize).checked_sub(1).ok_or(Error::BadIndex)?;
        if let Some(&(name, value)) = STATIC_TABLE.get(index) {
            return Ok((name, value));
        }
        self.entries
            .get(index - STATIC_TABLE.len())
            .map(Entry::parts)
            .ok_or(Error::BadIndex)
    }

    /// Adds an entry at the front, evicting old ones first (§4.4).
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict(self.max_size - size);
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        self.entries.push_front(Entry {
            bytes: bytes.into_boxed_slice(),
            name_len: name.len(),
        });
        self.size += size;
    }

    /// Drops the oldest entries until the table is at most `target` bytes.
    fn evict(&mut self, target: usize) {
        while self.size > target {
            match self.entries.pop_back() {
                Some(entry) => self.size = self.size.saturating_sub(entry.size()),
                None => self.size = 0,
            }
        }
    }
}

/// The list size after adding a field of `bytes` name and value bytes, or `TooLarge` past `max`.
fn add_field(total: usize, bytes: usize, max: usize) -> Result<usize, Error> {
    let total = total.saturating_add(bytes).saturating_add(ENTRY_OVERHEAD);
    if total > max {
        return Err(Error::TooLarge);
    }
    Ok(total)
}

fn field(start: usize, name_len: usize, value_len: usize) -> Result<Field, Error> {
    let u = |n: usize| u32::try_from(n).map_err(|_| Error::TooLarge);
    Ok(Field {
        name: (u(start)?, u(name_len)?),
        value: (u(start + name_len)?, u(value_len)?),
    })
}

/// Reads an integer with an N-bit prefix (§5.1), 1 <= N <= 8, advancing `rest` past it.
fn read_int(rest: &mut &[u8], prefix: u32) -> Result<u32, Error> {
    let (&first, tail) = rest.split_first().ok_or(Error::BadInteger)?;
    *rest = tail;
    let max = (1u32 << prefix) - 1;
    let mut value = u32::from(first) & max;
    if value < max {
        return Ok(value);
    }
    // At most 5 continuation bytes, with shifts 0, 7, 14, 21 and 28.
    let mut shift = 0;
    while shift <= 28 {
        let (&byte, tail) = rest.split_first().ok_or(Error::BadInteger)?;
        *rest = tail;
        let sum = u64::from(value) + (u64::from(byte & 0x7f) << shift);
        value = u32::try_from(sum).map_err(|_| Error::BadInteger)?;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
    Err(Error::BadInteger)
}

/// Reads a string literal (§5.2), appending its (Huffman-decoded) bytes to `out`.
fn read_string(rest: &mut &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let huffman = rest.first().ok_or(Error::Truncated)? & 0x80 != 0;
    let len = read_int(rest, 7)? as usize;
    if len > rest.len() {
        return Err(Error::Truncated);
    }
    let (bytes, tail) = rest.split_at(len);
    *rest = tail;
    if huffman {
        huffman_decode(bytes, out)
    } else {
        out.extend_from_slice(bytes);
        Ok(())
    }
}

/// Writes `value` with an N-bit prefix (§5.1); `flags` holds the bits above the prefix.
fn write_int(out: &mut Vec<u8>, flags: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Writes a string literal (§5.2), Huffman-coded when that is strictly shorter.
fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    let huffman_len = huffman_encoded_len(s);
    if huffman_len < s.len() {
        write_int(out, 0x80, 7, huffman_len);
        huffman_encode(s, out);
    } else {
        write_int(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }
}

/// Encodes a response's `:status` field: an indexed static entry for 200, 204, 206, 304, 400,
/// 404 and 500, and otherwise a literal field without indexing whose name is static index 8 and
/// whose value is the code in decimal (at least 3 digits).
pub fn encode_status(status: u16, out: &mut Vec<u8>) {
    let index = match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => 0,
    };
    if index != 0 {
        out.push(0x80 | index);
        return;
    }
    let digits = [10000, 1000, 100, 10, 1].map(|unit| b'0' + (status / unit % 10) as u8);
    let skip = match status {
        10000.. => 0,
        1000.. => 1,
        _ => 2,
    };
    out.push(0x08);
    write_string(out, digits.get(skip..).unwrap_or(&[]));
}

/// Encodes a literal header field without indexing (RFC 7541 §6.2.2). The name is sent as a
/// static table index when the static table has it (names are expected in lowercase), else as
/// a literal; name and value strings are Huffman-coded when that is strictly shorter.
pub fn encode_field(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    encode_literal(0x00, name, value, out);
}

/// Encodes a literal header field that is never indexed (RFC 7541 §6.2.3), which tells
/// intermediaries not to compress it either; for set-cookie or authorization style values.
/// Otherwise the same as [`encode_field`].
pub fn encode_never_indexed(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    encode_literal(0x10, name, value, out);
}

fn encode_literal(flags: u8, name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    match static_name_index(name) {
        Some(index) => write_int(out, flags, 4, index),
        None => {
            out.push(flags);
            write_string(out, name);
        }
    }
    write_string(out, value);
}

/// The static table (RFC 7541 Appendix A); index 1 is element 0.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The lowest static table index whose name is `name`.
fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

/// The Huffman code of each symbol (RFC 7541 Appendix B), right-aligned; symbol 256 is EOS.
const HUFFMAN_CODES: [u32; 257] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee, 0x3fffffff,
];

/// The length in bits of each symbol's Huffman code.
const HUFFMAN_LENS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// Marks a child in [`huffman_tree`] as a leaf; the low bits are the symbol.
const LEAF: u16 = 0x8000;
const EOS: u16 = 256;

/// The Huffman code as a binary tree of its 256 internal nodes, node 0 the root; each child
/// is another node's number or `LEAF | symbol`. If one code were a prefix of another, an index
/// would go out of bounds and the build would fail; a test checks that the code is complete.
const fn huffman_tree() -> [[u16; 2]; 256] {
    let mut tree = [[0u16; 2]; 256];
    let mut used = 1;
    let mut sym = 0;
    while sym < HUFFMAN_CODES.len() {
        let code = HUFFMAN_CODES[sym];
        let mut bit = HUFFMAN_LENS[sym] as u32 - 1;
        let mut node = 0;
        while bit > 0 {
            let side = ((code >> bit) & 1) as usize;
            if tree[node][side] == 0 {
                tree[node][side] = used as u16;
                used += 1;
            }
            node = tree[node][side] as usize;
            bit -= 1;
        }
        tree[node][(code & 1) as usize] = LEAF | sym as u16;
        sym += 1;
    }
    tree
}

/// One step of the Huffman decoder: the state (tree node) after 4 more bits, and the symbol
/// those bits completed, if any. No 4 bits can complete two symbols: the shortest code is 5.
#[derive(Clone, Copy)]
struct Step {
    next: u8,
    sym: u8,
    flags: u8,
}

/// The 4 bits completed a symbol, in `sym`.
const STEP_EMIT: u8 = 1;
/// The 4 bits completed EOS, which must not appear in a string.
const STEP_FAIL: u8 = 2;

const fn huffman_steps() -> [[Step; 16]; 256] {
    let tree = huffman_tree();
    let mut steps = [[Step {
        next: 0,
        sym: 0,
        flags: 0,
    }; 16]; 256];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut bit = 4;
            while bit > 0 {
                bit -= 1;
                let child = tree[node][(nibble >> bit) & 1];
                if child & LEAF == 0 {
                    node = child as usize;
                } else {
                    node = 0;
                    if child == LEAF | EOS {
                        steps[state][nibble].flags |= STEP_FAIL;
                    } else {
                        steps[state][nibble].flags |= STEP_EMIT;
                        steps[state][nibble].sym = child as u8;
                    }
                }
            }
            steps[state][nibble].next = node as u8;
            nibble += 1;
        }
        state += 1;
    }
    steps
}

/// The states a string may end in: the root, or at most 7 bits of 1s (a prefix of EOS) past the
/// last symbol (§5.2).
const fn huffman_accept() -> [bool; 256] {
    let tree = huffman_tree();
    let mut accept = [false; 256];
    accept[0] = true;
    let mut node = 0;
    let mut depth = 0;
    while depth < 7 {
        node = tree[node][1] as usize;
        accept[node] = true;
        depth += 1;
    }
    accept
}

/// The Huffman decoder's state machine, indexed by state and then by the next 4 input bits.
static HUFFMAN_STEPS: [[Step; 16]; 256] = huffman_steps();
/// Whether a string may end in each state (see [`huffman_accept`]).
static HUFFMAN_ACCEPT: [bool; 256] = huffman_accept();

/// Decodes a Huffman-coded string (§5.2), appending the symbols to `out`.
fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    out.reserve(src.len().saturating_mul(8) / 5);
    let mut state = 0u8;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            // Cannot go out of bounds: a u8 state indexes 256 rows, a nibble 16 columns.
            let step = HUFFMAN_STEPS[usize::from(state)][usize::from(nibble)];
            if step.flags & STEP_FAIL != 0 {
                return Err(Error::BadHuffman);
            }
            if step.flags & STEP_EMIT != 0 {
                out.push(step.sym);
            }
            state = step.next;
        }
    }
    if HUFFMAN_ACCEPT[usize::from(state)] {
        Ok(())
    } else {
        Err(Error::BadHuffman)
    }
}

/// The length in bytes of `src` Huffman-coded, padding included.
fn huffman_encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(HUFFMAN_LENS[usize::from(b)]))
        .sum();
    bits.div_ceil(8)
}

/// Huffman-codes `src` (§5.2), padding the last byte with the high bits of EOS (all ones).
/// Indexing the 257-entry code tables with a byte cannot go out of bounds.
fn huffman_encode(src: &[u8], out: &mut Vec<u8>) {
    let mut acc = 0u64;
    let mut bits = 0u32;
    for &b in src {
        let len = HUFFMAN_LENS[usize::from(b)];
        // Bits above the pending ones were already written; shifting them out is harmless.
        acc = (acc << len) | u64::from(HUFFMAN_CODES[usize::from(b)]);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        out.push((acc << (8 - bits)) as u8 | (0xff >> bits));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs = Vec<(String, String)>;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        let pair = |p: &[u8]| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap();
        digits.chunks(2).map(pair).collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        let owned = |&(n, v): &(&str, &str)| (n.to_string(), v.to_string());
        list.iter().map(owned).collect()
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// Decodes into an `out` that already holds bytes, so the ranges must be offset.
    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Pairs, Error> {
        let (mut out, mut fields) = (b"junk".to_vec(), Vec::new());
        d.decode(block, 1 << 20, &mut out, &mut fields)?;
        let pair = |f: &Field| (text(f.name(&out)), text(f.value(&out)));
        Ok(fields.iter().map(pair).collect())
    }

    fn table(d: &Decoder) -> Pairs {
        let list = d.entries.iter().map(Entry::parts);
        list.map(|(n, v)| (text(n), text(v))).collect()
    }

    /// Asserts that `block` fails with `want` on a fresh decoder with a 4096-byte table.
    fn bad(block: &[u8], want: Error) {
        assert_eq!(
            decode(&mut Decoder::new(4096), block),
            Err(want),
            "{block:02x?}"
        );
    }

    fn int(bytes: &[u8], prefix: u32) -> Result<u32, Error> {
        let mut rest = bytes;
        let v = read_int(&mut rest, prefix)?;
        assert!(rest.is_empty());
        Ok(v)
    }

    fn encoded_int(flags: u8, prefix: u32, value: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_int(&mut out, flags, prefix, value);
        out
    }

    #[test]
    fn rfc7541_c_1_1_integer_10_with_5_bit_prefix() {
        assert_eq!(encoded_int(0xe0, 5, 10), [0xea]);
        assert_eq!(int(&[0xea], 5), Ok(10));
    }

    #[test]
    fn rfc7541_c_1_2_integer_1337_with_5_bit_prefix() {
        assert_eq!(encoded_int(0, 5, 1337), [0x1f, 0x9a, 0x0a]);
        assert_eq!(int(&[0xff, 0x9a, 0x0a], 5), Ok(1337));
    }

    #[test]
    fn rfc7541_c_1_3_integer_42_at_octet_boundary() {
        assert_eq!(encoded_int(0, 8, 42), [0x2a]);
        assert_eq!(int(&[0x2a], 8), Ok(42));
        let values = [0, 1, 14, 15, 16, 62, 63, 127, 128, 255, 1 << 20, u32::MAX];
        for prefix in 4..=8 {
            for v in values {
                assert_eq!(int(&encoded_int(0, prefix, v as usize), prefix), Ok(v));
            }
        }
    }

    fn single(block: &str, field: (&str, &str), size: usize) {
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &hex(block)), Ok(pairs(&[field])));
        let entries = if size == 0 { vec![] } else { pairs(&[field]) };
        assert_eq!((d.table_size(), table(&d)), (size, entries));
    }

    #[test]
    fn rfc7541_c_2_1_literal_with_indexing() {
        let block = "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572";
        single(block, ("custom-key", "custom-header"), 55);
    }

    #[test]
    fn rfc7541_c_2_2_literal_without_indexing() {
        single(
            "040c 2f73 616d 706c 652f 7061 7468",
            (":path", "/sample/path"),
            0,
        );
    }

    #[test]
    fn rfc7541_c_2_3_literal_never_indexed() {
        let block = "1008 7061 7373 776f 7264 0673 6563 7265 74";
        single(block, ("password", "secret"), 0);
    }

    #[test]
    fn rfc7541_c_2_4_indexed_field() {
        single("82", (":method", "GET"), 0);
    }

    const C3: [&str; 3] = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];

    const C4: [&str; 3] = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];

    const C5: [&str; 3] = [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032
         303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63
         6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0
         5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851
         5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
    ];

    const C6: [&str; 3] = [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b
         ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad
         94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160
         65c0 03ed 4ee5 b106 3d50 07",
    ];

    type Step<'a> = (&'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)], usize);

    /// Decodes `blocks` in turn on one decoder, checking the fields, then the dynamic table
    /// (newest first) and its size after each.
    fn sequence(limit: usize, blocks: [&str; 3], want: [Step; 3]) {
        let mut d = Decoder::new(limit);
        for (block, (fields, entries, size)) in blocks.iter().zip(want) {
            assert_eq!(decode(&mut d, &hex(block)), Ok(pairs(fields)));
            assert_eq!((d.table_size(), table(&d)), (size, pairs(entries)));
        }
    }

    fn requests(blocks: [&str; 3]) {
        let auth = (":authority", "www.example.com");
        let cache = ("cache-control", "no-cache");
        let custom = ("custom-key", "custom-value");
        let (get, http, root) = ((":method", "GET"), (":scheme", "http"), (":path", "/"));
        let (https, index) = ((":scheme", "https"), (":path", "/index.html"));
        sequence(
            4096,
            blocks,
            [
                (&[get, http, root, auth], &[auth], 57),
                (&[get, http, root, auth, cache], &[cache, auth], 110),
                (
                    &[get, https, index, auth, custom],
                    &[custom, cache, auth],
                    164,
                ),
            ],
        );
    }

    #[test]
    fn rfc7541_c_3_requests_without_huffman() {
        requests(C3);
    }

    #[test]
    fn rfc7541_c_4_requests_with_huffman() {
        requests(C4);
    }

    fn responses(blocks: [&str; 3]) {
        let cache = ("cache-control", "private");
        let date1 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT");
        let date2 = ("date", "Mon, 21 Oct 2013 20:13:22 GMT");
        let loc = ("location", "https://www.example.com");
        let gzip = ("content-encoding", "gzip");
        let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
        let cookie = ("set-cookie", cookie);
        let (s200, s302, s307) = ((":status", "200"), (":status", "302"), (":status", "307"));
        sequence(
            256,
            blocks,
            [
                (&[s302, cache, date1, loc], &[loc, date1, cache, s302], 222),
                (&[s307, cache, date1, loc], &[s307, loc, date1, cache], 222),
                (
                    &[s200, cache, date2, loc, gzip, cookie],
                    &[cookie, gzip, date2],
                    215,
                ),
            ],
        );
    }

    #[test]
    fn rfc7541_c_5_responses_without_huffman() {
        responses(C5);
    }

    #[test]
    fn rfc7541_c_6_responses_with_huffman() {
        responses(C6);
    }

    #[test]
    fn rfc7541_6_1_index_zero_is_an_error() {
        bad(&[0x80], Error::BadIndex);
    }

    #[test]
    fn rfc7541_2_3_3_index_past_the_tables_is_an_error() {
        bad(&[0xbe], Error::BadIndex);
        bad(&[0x7f, 0x07, 0x00], Error::BadIndex);
        bad(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x07], Error::BadIndex);
        let mut d = Decoder::new(4096);
        assert!(decode(&mut d, &hex("400a 6375 7374 6f6d 2d6b 6579 0161")).is_ok());
        assert_eq!(decode(&mut d, &[0xbe]), Ok(pairs(&[("custom-key", "a")])));
        assert_eq!(decode(&mut d, &[0xbf]), Err(Error::BadIndex));
    }

    #[test]
    fn rfc7541_5_2_eos_in_huffman_string_is_an_error() {
        bad(
            &[0x00, 0x01, b'a', 0x84, 0xff, 0xff, 0xff, 0xff],
            Error::BadHuffman,
        );
        // 'a' (00011), then EOS (30 ones), then 5 padding ones.
        bad(
            &[0x00, 0x01, b'a', 0x85, 0x1f, 0xff, 0xff, 0xff, 0xff],
            Error::BadHuffman,
        );
    }

    #[test]
    fn rfc7541_5_2_padding_longer_than_7_bits_is_an_error() {
        // 'a' (00011) and 3 padding ones is fine; 8 or more padding ones is not.
        let ok = decode(&mut Decoder::new(0), &[0x00, 0x01, b'a', 0x81, 0x1f]);
        assert_eq!(ok, Ok(pairs(&[("a", "a")])));
        bad(&[0x00, 0x01, b'a', 0x82, 0x1f, 0xff], Error::BadHuffman);
        bad(&[0x00, 0x01, b'a', 0x81, 0xff], Error::BadHuffman);
    }

    #[test]
    fn rfc7541_5_2_padding_not_all_ones_is_an_error() {
        bad(&[0x00, 0x01, b'a', 0x81, 0x18], Error::BadHuffman);
        bad(&[0x00, 0x01, b'a', 0x81, 0x1e], Error::BadHuffman);
    }

    #[test]
    fn rfc7541_5_2_truncated_string_is_an_error() {
        bad(&[0x00, 0x05, b'a', b'b'], Error::Truncated);
        bad(&[0x00, 0x01, b'a', 0x02, b'b'], Error::Truncated);
        bad(&[0x00, 0x01, b'a'], Error::Truncated);
        bad(&[0x40], Error::Truncated);
    }

    #[test]
    fn rfc7541_5_1_truncated_integer_is_an_error() {
        bad(&[0xff], Error::BadInteger);
        bad(&[0xff, 0x80], Error::BadInteger);
        bad(&[0x00, 0x7f, 0x81], Error::BadInteger);
        bad(&[0x3f], Error::BadInteger);
    }

    #[test]
    fn rfc7541_5_1_integer_overflow_is_an_error() {
        bad(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x1f], Error::BadInteger);
        // More than 5 continuation bytes, even though the value would be small.
        bad(
            &[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            Error::BadInteger,
        );
        assert_eq!(int(&[0x7f, 0x80, 0xff, 0xff, 0xff, 0x0f], 7), Ok(u32::MAX));
        let over = int(&[0x7f, 0x81, 0xff, 0xff, 0xff, 0x0f], 7);
        assert_eq!(over, Err(Error::BadInteger));
    }

    #[test]
    fn rfc7541_6_3_size_update_above_limit_is_an_error() {
        let at_limit = decode(&mut Decoder::new(4096), &[0x3f, 0xe1, 0x1f]);
        assert_eq!(at_limit, Ok(vec![]));
        bad(&[0x3f, 0xe2, 0x1f], Error::BadSizeUpdate);
        assert_eq!(
            decode(&mut Decoder::new(0), &[0x21]),
            Err(Error::BadSizeUpdate)
        );
    }

    #[test]
    fn rfc7541_4_2_size_update_after_a_field_is_an_error() {
        bad(&[0x82, 0x20], Error::BadSizeUpdate);
        bad(&[0x20, 0x82, 0x3f, 0xe1, 0x1f], Error::BadSizeUpdate);
    }

    #[test]
    fn rfc7541_4_2_size_updates_at_the_start_shrink_the_table() {
        let mut d = Decoder::new(4096);
        for block in C3 {
            assert!(decode(&mut d, &hex(block)).is_ok());
        }
        assert_eq!(d.table_size(), 164);
        // Two updates: down to 110 (evicting the oldest entry, 57 bytes), then up to 4096.
        let block = [0x3f, 0x4f, 0x3f, 0xe1, 0x1f, 0xbe];
        let custom = pairs(&[("custom-key", "custom-value")]);
        assert_eq!(decode(&mut d, &block), Ok(custom));
        assert_eq!(d.table_size(), 107);
        let get = pairs(&[(":method", "GET")]);
        assert_eq!(decode(&mut d, &[0x20, 0x82]), Ok(get));
        assert_eq!((d.table_size(), table(&d)), (0, vec![]));
        // The table holds nothing until another update raises its size.
        assert!(decode(&mut d, &hex("4003 6b65 7903 7661 6c")).is_ok());
        assert_eq!(d.table_size(), 0);
    }

    #[test]
    fn rfc7541_4_4_entry_larger_than_the_table_empties_it() {
        let mut d = Decoder::new(64);
        assert!(decode(&mut d, &[0x40, 0x01, b'a', 0x01, b'b']).is_ok());
        assert_eq!(d.table_size(), 34);
        let mut block = vec![0x40, 0x01, b'x', 40];
        block.extend_from_slice(&[b'v'; 40]);
        assert_eq!(decode(&mut d, &block).map(|f| f.len()), Ok(1));
        assert_eq!((d.table_size(), table(&d)), (0, vec![]));
    }

    #[test]
    fn rfc7541_4_4_new_entry_may_name_an_entry_it_evicts() {
        let mut d = Decoder::new(64);
        assert!(decode(&mut d, &[0x40, 0x01, b'a', 0x01, b'b']).is_ok());
        let fields = decode(&mut d, &[0x7e, 0x02, b'c', b'c']);
        assert_eq!(fields, Ok(pairs(&[("a", "cc")])));
        assert_eq!((d.table_size(), table(&d)), (35, pairs(&[("a", "cc")])));
    }

    #[test]
    fn rfc9113_6_5_2_hpack_bomb_is_too_large() {
        // One 4033-byte entry, then 1000 references to it.
        let mut block = vec![0x40, 0x01, b'x'];
        write_int(&mut block, 0, 7, 4000);
        block.extend_from_slice(&[b'v'; 4000]);
        block.extend_from_slice(&[0xbe; 1000]);
        let max = 16 * 1024;
        let (mut out, mut fields) = (Vec::new(), Vec::new());
        let result = Decoder::new(4096).decode(&block, max, &mut out, &mut fields);
        assert_eq!(result, Err(Error::TooLarge));
        assert_eq!(fields.len(), 4);
        assert!(out.len() <= max);
        // A literal that is too large stops as well; a list exactly at the bound passes.
        let mut d = Decoder::new(4096);
        let (mut out, mut fields) = (Vec::new(), Vec::new());
        let literal = d.decode(&block[..4006], 4032, &mut out, &mut fields);
        assert_eq!(literal, Err(Error::TooLarge));
        assert_eq!(d.decode(&[0x82], 42, &mut out, &mut fields), Ok(()));
        assert_eq!(
            d.decode(&[0x82], 41, &mut out, &mut fields),
            Err(Error::TooLarge)
        );
        assert_eq!(Error::TooLarge.to_string(), "header list too large");
    }

    #[test]
    fn rfc7541_appendix_a_static_names_match_the_table() {
        for &(name, _) in &STATIC_TABLE {
            let first = STATIC_TABLE.iter().position(|&(n, _)| n == name);
            assert_eq!(
                static_name_index(name),
                first.map(|i| i + 1),
                "{}",
                text(name)
            );
        }
        assert_eq!(static_name_index(b"x-forwarded-for"), None);
        assert_eq!(static_name_index(b"Content-Type"), None);
    }

    #[test]
    fn rfc7541_appendix_b_huffman_code_round_trips_every_byte() {
        // The code is complete: the Kraft sum of 2^-len over all 257 symbols is exactly 1.
        let kraft: u64 = HUFFMAN_LENS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
        assert_eq!((HUFFMAN_CODES[256], HUFFMAN_LENS[256]), (0x3fff_ffff, 30));
        let all: Vec<u8> = (0..=255).collect();
        for chunk in [&all[..], b"", b"a", b"\xff\xfe\x00", b"www.example.com"] {
            let mut coded = Vec::new();
            huffman_encode(chunk, &mut coded);
            assert_eq!(coded.len(), huffman_encoded_len(chunk));
            let mut back = Vec::new();
            assert_eq!(huffman_decode(&coded, &mut back), Ok(()));
            assert_eq!(back, chunk);
        }
        let mut coded = Vec::new();
        huffman_encode(b"www.example.com", &mut coded);
        assert_eq!(coded, hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
    }

    /// Decodes an encoder's block on a fresh decoder, which must not index anything.
    fn round_trip(block: &[u8]) -> Pairs {
        let mut d = Decoder::new(4096);
        let fields = decode(&mut d, block).unwrap();
        assert_eq!(d.table_size(), 0);
        fields
    }

    #[test]
    fn rfc7541_6_1_encode_status_round_trips() {
        let mut out = Vec::new();
        encode_status(200, &mut out);
        encode_status(404, &mut out);
        assert_eq!(out, [0x88, 0x8d]);
        for code in [
            200, 204, 206, 304, 400, 404, 500, 503, 999, 101, 7, 1000, 65535,
        ] {
            let mut out = Vec::new();
            encode_status(code, &mut out);
            let want = format!("{code:03}");
            assert_eq!(round_trip(&out), pairs(&[(":status", &want)]));
        }
        let mut out = Vec::new();
        encode_status(503, &mut out);
        assert_eq!(out, [0x08, 0x03, b'5', b'0', b'3']);
    }

    #[test]
    fn rfc7541_6_2_2_encode_field_round_trips() {
        let mut out = Vec::new();
        encode_field(b"cache-control", b"no-cache", &mut out);
        // Static name 24 (0000 1111, then 9), Huffman value as in C.4.2.
        assert_eq!(out, hex("0f09 86a8 eb10 649c bf"));
        let cases = [
            ("content-type", "text/html; charset=utf-8"),
            ("x-request-id", "0123456789abcdef"),
            ("www-authenticate", ""),
            ("", "\u{0}\u{ff}"),
        ];
        let mut out = Vec::new();
        for (n, v) in cases {
            encode_field(n.as_bytes(), v.as_bytes(), &mut out);
        }
        assert_eq!(out.first(), Some(&0x0f));
        assert_eq!(round_trip(&out), pairs(&cases));
    }

    #[test]
    fn rfc7541_6_2_3_encode_never_indexed_round_trips() {
        let mut out = Vec::new();
        encode_never_indexed(b"set-cookie", b"id=a3fWa; Secure", &mut out);
        encode_never_indexed(b"x-secret", b"s3cr3t", &mut out);
        assert_eq!(out.first().map(|b| b & 0xf0), Some(0x10));
        let want = [("set-cookie", "id=a3fWa; Secure"), ("x-secret", "s3cr3t")];
        assert_eq!(round_trip(&out), pairs(&want));
    }

    /// A seeded generator, so the randomized tests are repeatable.
    struct Rng(fastrand::Rng);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(fastrand::Rng::with_seed(seed))
        }

        fn next(&mut self) -> u64 {
            self.0.u64(..)
        }

        fn below(&mut self, n: usize) -> usize {
            self.0.usize(..n)
        }

        /// Up to `max_len - 1` random bytes, printable ASCII if `printable`.
        fn bytes(&mut self, max_len: usize, printable: bool) -> Vec<u8> {
            let len = self.below(max_len);
            let byte = |b: u8| if printable { b' ' + b % 95 } else { b };
            (0..len).map(|_| byte(self.next() as u8)).collect()
        }
    }

    #[test]
    fn rfc7541_6_2_randomized_round_trip() {
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let (mut out, mut fields, mut block) = (Vec::new(), Vec::new(), Vec::new());
        let mut d = Decoder::new(4096);
        for _ in 0..3000 {
            block.clear();
            let status = rng.below(1000) as u16;
            encode_status(status, &mut block);
            let mut want = vec![(b":status".to_vec(), format!("{status:03}").into_bytes())];
            for _ in 0..rng.below(8) {
                let name = match rng.below(3) {
                    0 => STATIC_TABLE[rng.below(61)].0.to_vec(),
                    n => rng.bytes(40, n == 1),
                };
                let printable = rng.below(2) == 0;
                let value = rng.bytes(300, printable);
                if rng.below(2) == 0 {
                    encode_field(&name, &value, &mut block);
                } else {
                    encode_never_indexed(&name, &value, &mut block);
                }
                want.push((name, value));
            }
            out.clear();
            fields.clear();
            assert_eq!(d.decode(&block, 1 << 20, &mut out, &mut fields), Ok(()));
            let pair = |f: &Field| (f.name(&out).to_vec(), f.value(&out).to_vec());
            assert_eq!(fields.iter().map(pair).collect::<Vec<_>>(), want);
        }
        assert_eq!(d.table_size(), 0);
    }

    /// Decodes anything; only the result may differ, and `out` stays bounded.
    fn no_panic(d: &mut Decoder, block: &[u8], max: usize) {
        let (mut out, mut fields) = (Vec::new(), Vec::new());
        let result = d.decode(block, max, &mut out, &mut fields);
        assert!(out.len() <= max + 2 * block.len());
        if result.is_ok() {
            assert!(d.table_size() <= 256);
            let end = |f: &Field| f.value.0 as usize + f.value.1 as usize;
            assert!(fields.iter().all(|f| end(f) <= out.len()));
        }
    }

    #[test]
    fn robustness_random_blocks_never_panic() {
        let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
        let mut d = Decoder::new(256);
        for _ in 0..100_000 {
            let block = rng.bytes(65, false);
            no_panic(&mut d, &block, 1 + rng.below(400));
            no_panic(&mut Decoder::new(256), &block, 4096);
        }
    }

    #[test]
    fn robustness_mutated_blocks_never_panic() {
        let mut rng = Rng::new(0xdead_beef_cafe_f00d);
        let sets = [C3, C4, C5, C6].map(|set| set.map(hex));
        for _ in 0..10_000 {
            for set in &sets {
                let mut d = Decoder::new(256);
                for original in set {
                    let mut block = original.clone();
                    for _ in 0..1 + rng.below(3) {
                        let at = rng.below(block.len() + 1);
                        match rng.below(4) {
                            0 => block.truncate(at),
                            1 => block.insert(at, rng.next() as u8),
                            _ => block.get_mut(at).map_or((), |b| *b ^= 1 << rng.below(8)),
                        }
                    }
                    no_panic(&mut d, &block, 64 + rng.below(400));
                }
            }
        }
    }
}
