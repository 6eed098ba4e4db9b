//! Frame Streams (github.com/farsightsec/fstrm, `fstrm/control.h` and the
//! protocol description in its README): the framing dnstap is carried in.
//!
//! A stream is a sequence of frames, each a 32-bit big-endian length and
//! that many bytes. A length of zero is an escape: a control frame follows
//! (its own 32-bit length, at most 512 bytes, then a 32-bit control type
//! and fields of type, length, value). A file holds START (with the content
//! type), the data frames and STOP; over a socket the writer first sends
//! READY with the content types it offers, waits for the reader's ACCEPT,
//! then sends START … STOP and waits for FINISH.

use std::io::{self, Read};

/// The content type of dnstap payloads.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";
/// The largest control frame the protocol allows.
pub const MAX_CONTROL: usize = 512;
/// Data frames longer than this are skipped as bad (a dnstap message holds
/// at most two DNS messages of 64 KiB).
pub const MAX_DATA: usize = 256 * 1024;

const FIELD_CONTENT_TYPE: u32 = 1;

/// Control frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Accept = 1,
    Start = 2,
    Stop = 3,
    Ready = 4,
    Finish = 5,
}

impl Control {
    fn from_u32(v: u32) -> Option<Control> {
        Some(match v {
            1 => Control::Accept,
            2 => Control::Start,
            3 => Control::Stop,
            4 => Control::Ready,
            5 => Control::Finish,
            _ => return None,
        })
    }
}

/// Why a stream cannot be read on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The stream ends inside a frame, or without STOP.
    #[error("the stream ends {0}")]
    Truncated(&'static str),
    #[error("bad control frame: {0}")]
    Control(String),
    #[error("content type {0:?}, not dnstap")]
    ContentType(String),
}

/// True when `head` (the first bytes of a stream) begins a Frame Streams
/// START frame: an escape, then a control frame of type START.
pub fn looks_like_fstrm(head: &[u8]) -> bool {
    head.len() >= 12 && head[..4] == [0; 4] && head[8..12] == (Control::Start as u32).to_be_bytes()
}

/// Appends a control frame (with the escape) carrying `content_type`.
pub fn put_control(out: &mut Vec<u8>, kind: Control, content_type: Option<&[u8]>) {
    let fields = content_type.map_or(0, |c| 8 + c.len());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&((4 + fields) as u32).to_be_bytes());
    out.extend_from_slice(&(kind as u32).to_be_bytes());
    if let Some(c) = content_type {
        out.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
}

/// Appends a data frame's length; its payload follows.
pub fn put_data_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

/// Reads exactly `buf.len()` bytes: `Ok(false)` at a clean end of stream
/// (nothing read), an error when it ends part way.
fn read_full(r: &mut impl Read, buf: &mut [u8], inside: &'static str) -> Result<bool, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(FrameError::Truncated(inside)),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

fn read_u32(r: &mut impl Read, inside: &'static str) -> Result<Option<u32>, FrameError> {
    let mut b = [0u8; 4];
    Ok(read_full(r, &mut b, inside)?.then(|| u32::from_be_bytes(b)))
}

/// Reads a control frame's body (after the escape): its type and the
/// content types it names.
pub fn read_control(r: &mut impl Read) -> Result<(Control, Vec<Vec<u8>>), FrameError> {
    let len = read_u32(r, "inside a control frame")?
        .ok_or(FrameError::Truncated("inside a control frame"))? as usize;
    if !(4..=MAX_CONTROL).contains(&len) {
        return Err(FrameError::Control(format!("length {len}")));
    }
    let mut body = [0u8; MAX_CONTROL];
    if !read_full(r, &mut body[..len], "inside a control frame")? {
        return Err(FrameError::Truncated("inside a control frame"));
    }
    parse_control(&body[..len])
}

fn parse_control(body: &[u8]) -> Result<(Control, Vec<Vec<u8>>), FrameError> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?))
    };
    let t = word(0).ok_or_else(|| FrameError::Control("no type".into()))?;
    let kind = Control::from_u32(t).ok_or_else(|| FrameError::Control(format!("type {t}")))?;
    let mut types = Vec::new();
    let mut at = 4;
    while at < body.len() {
        let (Some(ft), Some(fl)) = (word(at), word(at + 4)) else {
            return Err(FrameError::Control("a field cut short".into()));
        };
        let v = body
            .get(at + 8..at + 8 + fl as usize)
            .ok_or_else(|| FrameError::Control("a field longer than the frame".into()))?;
        if ft == FIELD_CONTENT_TYPE {
            types.push(v.to_vec());
        }
        at += 8 + fl as usize;
    }
    Ok((kind, types))
}

fn check_types(types: &[Vec<u8>]) -> Result<(), FrameError> {
    match types.iter().find(|t| t.as_slice() != CONTENT_TYPE) {
        Some(t) => Err(FrameError::ContentType(
            String::from_utf8_lossy(t).into_owned(),
        )),
        None => Ok(()),
    }
}

/// What [`FrameReader::next`] read.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A data frame, now in the buffer.
    Data,
    /// A data frame longer than [`MAX_DATA`], skipped: its length.
    TooLong(usize),
    /// STOP at the end of the file: the writer finished the stream.
    Stop,
    /// STOP followed by the START of another stream (read on).
    Restart,
}

/// Reads a unidirectional stream (a file, or standard input).
pub struct FrameReader<R> {
    r: R,
}

impl<R: Read> FrameReader<R> {
    /// Reads the START frame and checks its content type (a START naming
    /// none is accepted: the type is then the reader's to assume).
    pub fn start(mut r: R) -> Result<FrameReader<R>, FrameError> {
        match read_u32(&mut r, "inside the START frame")? {
            Some(0) => {}
            _ => {
                return Err(FrameError::Control(
                    "the stream does not begin with START".into(),
                ))
            }
        }
        let (kind, types) = read_control(&mut r)?;
        if kind != Control::Start {
            return Err(FrameError::Control(format!(
                "{kind:?} where START was expected"
            )));
        }
        if let Some(t) = types.iter().find(|t| t.as_slice() != CONTENT_TYPE) {
            return Err(FrameError::ContentType(
                String::from_utf8_lossy(t).into_owned(),
            ));
        }
        Ok(FrameReader { r })
    }

    /// After STOP: the end, or the START of another stream appended to the
    /// file (a writer that reopened it).
    fn after_stop(&mut self) -> Result<Next, FrameError> {
        match read_u32(&mut self.r, "after STOP")? {
            None => Ok(Next::Stop),
            Some(0) => {
                let (kind, types) = read_control(&mut self.r)?;
                if kind != Control::Start {
                    return Err(FrameError::Control(format!("{kind:?} after STOP")));
                }
                check_types(&types)?;
                Ok(Next::Restart)
            }
            Some(_) => Err(FrameError::Control("a data frame after STOP".into())),
        }
    }

    /// Reads the next frame into `buf`: `Err(Truncated)` when the stream
    /// ends without STOP or inside a frame.
    pub fn next(&mut self, buf: &mut Vec<u8>) -> Result<Next, FrameError> {
        loop {
            let len = read_u32(&mut self.r, "inside a frame's length")?
                .ok_or(FrameError::Truncated("without STOP"))? as usize;
            if len == 0 {
                match read_control(&mut self.r)?.0 {
                    Control::Stop => return self.after_stop(),
                    // Other control frames carry nothing for a reader of
                    // a file: skip them.
                    _ => continue,
                }
            }
            if len > MAX_DATA {
                let skipped = io::copy(&mut (&mut self.r).take(len as u64), &mut io::sink())?;
                if skipped < len as u64 {
                    return Err(FrameError::Truncated("inside a data frame"));
                }
                return Ok(Next::TooLong(len));
            }
            buf.clear();
            buf.resize(len, 0);
            if !read_full(&mut self.r, buf, "inside a data frame")? {
                return Err(FrameError::Truncated("inside a data frame"));
            }
            return Ok(Next::Data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(frames: &[&[u8]], stop: bool) -> Vec<u8> {
        let mut out = Vec::new();
        put_control(&mut out, Control::Start, Some(CONTENT_TYPE));
        for f in frames {
            put_data_len(&mut out, f.len());
            out.extend_from_slice(f);
        }
        if stop {
            put_control(&mut out, Control::Stop, None);
        }
        out
    }

    #[test]
    fn a_file_is_start_data_frames_and_stop() {
        let s = stream(&[b"one", b"", b"three"], true);
        assert!(looks_like_fstrm(&s));
        // Escape, length 34 (type, field header, 22 bytes), START,
        // content-type field.
        assert_eq!(&s[..16], &[0, 0, 0, 0, 0, 0, 0, 34, 0, 0, 0, 2, 0, 0, 0, 1]);
        let mut r = FrameReader::start(&s[..]).expect("start");
        let mut buf = Vec::new();
        assert_eq!(r.next(&mut buf).expect("1"), Next::Data);
        assert_eq!(buf, b"one");
        // A zero-length data frame cannot exist: length 0 is the escape,
        // so the writer never writes one; here it reads as a control frame
        // and fails.
        assert!(r.next(&mut buf).is_err());
        let s = stream(&[b"one", b"three"], true);
        let mut r = FrameReader::start(&s[..]).expect("start");
        r.next(&mut buf).expect("1");
        assert_eq!(r.next(&mut buf).expect("2"), Next::Data);
        assert_eq!(buf, b"three");
        assert_eq!(r.next(&mut buf).expect("stop"), Next::Stop);
        // A second stream appended after STOP is read on.
        let mut two = stream(&[b"one"], true);
        two.extend_from_slice(&stream(&[b"two"], true));
        let mut r = FrameReader::start(&two[..]).expect("start");
        assert_eq!(r.next(&mut buf).expect("1"), Next::Data);
        assert_eq!(r.next(&mut buf).expect("restart"), Next::Restart);
        assert_eq!(r.next(&mut buf).expect("2"), Next::Data);
        assert_eq!(buf, b"two");
        assert_eq!(r.next(&mut buf).expect("stop"), Next::Stop);
    }

    #[test]
    fn a_stream_cut_short_is_truncated_and_other_content_types_refused() {
        let s = stream(&[b"one", b"three"], false);
        let mut r = FrameReader::start(&s[..]).expect("start");
        let mut buf = Vec::new();
        r.next(&mut buf).expect("1");
        r.next(&mut buf).expect("2");
        assert!(matches!(r.next(&mut buf), Err(FrameError::Truncated(_))));
        let cut = &s[..s.len() - 2];
        let mut r = FrameReader::start(cut).expect("start");
        r.next(&mut buf).expect("1");
        assert!(matches!(r.next(&mut buf), Err(FrameError::Truncated(_))));
        let mut other = Vec::new();
        put_control(&mut other, Control::Start, Some(b"protobuf:other"));
        assert!(matches!(
            FrameReader::start(&other[..]),
            Err(FrameError::ContentType(_))
        ));
        assert!(FrameReader::start(&b"192.0.2.1 www\n"[..]).is_err());
        let mut ready = Vec::new();
        put_control(&mut ready, Control::Ready, Some(CONTENT_TYPE));
        assert!(!looks_like_fstrm(&ready));
        let (kind, types) = read_control(&mut &ready[4..]).expect("ready");
        assert_eq!((kind, types), (Control::Ready, vec![CONTENT_TYPE.to_vec()]));
    }

    #[test]
    fn an_oversized_frame_is_skipped() {
        let big = vec![7u8; MAX_DATA + 1];
        let s = stream(&[&big, b"after"], true);
        let mut r = FrameReader::start(&s[..]).expect("start");
        let mut buf = Vec::new();
        assert_eq!(r.next(&mut buf).expect("big"), Next::TooLong(MAX_DATA + 1));
        assert_eq!(r.next(&mut buf).expect("after"), Next::Data);
        assert_eq!(buf, b"after");
    }
}
