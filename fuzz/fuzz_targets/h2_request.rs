//! Bytes → an HTTP/2 request header block as the native HTTP/2 server reads
//! it: HPACK-decoded (`tier::hpack`), then written as the HTTP/1.1 head the
//! request loop reads (`tier::http2::request_head`). The first byte's bit 0
//! is END_STREAM on the HEADERS frame.
//!
//! Property: a head that comes out is exactly one HTTP/1.1 request head —
//! it parses to its full length (nothing after it could be read as a second
//! request), is never left to hyper, and is refused only as a whole (400
//! for a method or target HTTP/1.1 does not take, 431 when too large) —
//! with its body framed as the stream sends it: none with END_STREAM,
//! else Content-Length or chunked. The same fields as trailers end a
//! chunked body exactly.
#![no_main]

use geolb::tier::h1::{self, Framing, Verdict};
use geolb::tier::{hpack, http2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, block)) = data.split_first() else {
        return;
    };
    let end_stream = ctl & 1 != 0;
    let mut dec = hpack::Decoder::new(4096);
    let (mut out, mut fields) = (Vec::new(), Vec::new());
    if dec.decode(block, 32 * 1024, &mut out, &mut fields).is_err() {
        return;
    }
    // The same fields as a request's trailers: the end of a chunked body,
    // whole, with nothing after it.
    let mut end = b"0\r\n".to_vec();
    http2::trailer_lines(&out, &fields, &mut end);
    end.extend_from_slice(b"\r\n");
    let mut chunked = h1::Chunked::default();
    let took = chunked.feed(&end);
    assert!(
        took == Ok(end.len()) && chunked.is_done(),
        "{took:?} for {}",
        String::from_utf8_lossy(&end)
    );
    let Some(head) = http2::request_head(&out, &fields, end_stream) else {
        return;
    };
    let mut room = h1::fields();
    match h1::parse_request(&head, &mut room) {
        Ok(h) => {
            assert_eq!(h.len, head.len(), "{}", String::from_utf8_lossy(&head));
            if end_stream {
                assert!(
                    matches!(h.framing, Framing::None | Framing::Length(0)),
                    "{:?}",
                    h.framing
                );
            } else {
                assert!(h.framing != Framing::Close, "{:?}", h.framing);
            }
        }
        Err(Verdict::Refuse(code, _)) => assert!(code == 400 || code == 431, "{code}"),
        Err(other) => panic!("{other:?} for {}", String::from_utf8_lossy(&head)),
    }
});
