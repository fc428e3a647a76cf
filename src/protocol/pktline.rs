//! pkt-line framing (gitprotocol-common): four hex digits of length (including themselves)
//! followed by the payload; `0000` flush, `0001` delimiter, `0002` response-end.

use std::fmt;

/// Largest pkt-line payload: 65520 bytes total minus the 4-byte length.
pub const MAX_DATA_LEN: usize = 65516;

/// One pkt-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkt<'a> {
    /// A data line: its payload (without the length).
    Data(&'a [u8]),
    /// `0000`: end of a message or list.
    Flush,
    /// `0001`: delimiter between sections of a v2 command.
    Delim,
    /// `0002`: end of a v2 response (stateless connections).
    ResponseEnd,
}

impl<'a> Pkt<'a> {
    /// The payload as text with one trailing LF removed, if it is a data line.
    pub fn text(&self) -> Option<&'a [u8]> {
        match self {
            Pkt::Data(d) => Some(d.strip_suffix(b"\n").unwrap_or(d)),
            _ => None,
        }
    }
}

/// Input that is not a sequence of pkt-lines (positions are byte offsets in the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PktError {
    /// The input ends inside the pkt-line starting at this offset.
    #[error("truncated pkt-line at byte {0}")]
    Truncated(usize),
    /// The length field (as text) is not hex, or is `0003`, at this offset.
    #[error("invalid pkt-line length {0:?} at byte {1}")]
    BadLength(String, usize),
}

/// Reads pkt-lines from a byte slice.
#[derive(Debug, Clone)]
pub struct PktReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> PktReader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        PktReader { buf, pos: 0 }
    }

    /// All input consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next pkt-line, `Ok(None)` at the end of input.
    pub fn next_pkt(&mut self) -> Result<Option<Pkt<'a>>, PktError> {
        let rest = &self.buf[self.pos..];
        if rest.is_empty() {
            return Ok(None);
        }
        let Some(hdr) = rest.get(..4) else {
            return Err(PktError::Truncated(self.pos));
        };
        let len = parse_hex4(hdr).ok_or_else(|| {
            PktError::BadLength(String::from_utf8_lossy(hdr).into_owned(), self.pos)
        })?;
        let pkt = match len {
            0 => Pkt::Flush,
            1 => Pkt::Delim,
            2 => Pkt::ResponseEnd,
            3 => return Err(PktError::BadLength("0003".into(), self.pos)),
            n => {
                let data = rest.get(4..n).ok_or(PktError::Truncated(self.pos))?;
                self.pos += n;
                return Ok(Some(Pkt::Data(data)));
            }
        };
        self.pos += 4;
        Ok(Some(pkt))
    }
}

fn parse_hex4(h: &[u8]) -> Option<usize> {
    let mut v = 0usize;
    for &c in h {
        let d = (c as char).to_digit(16)?;
        v = v * 16 + d as usize;
    }
    Some(v)
}

/// Append one data pkt-line. Payloads longer than [`MAX_DATA_LEN`] are split.
pub fn write_data(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        out.extend_from_slice(b"0004");
        return;
    }
    for chunk in data.chunks(MAX_DATA_LEN) {
        out.extend_from_slice(format!("{:04x}", chunk.len() + 4).as_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Append a text line, adding the trailing LF.
pub fn write_line(out: &mut Vec<u8>, line: impl fmt::Display) {
    let s = format!("{line}\n");
    write_data(out, s.as_bytes());
}

/// Append a text pkt-line *without* a trailing LF. C git's upload-pack sends `shallow`,
/// `unshallow` and `ERR` lines this way, and some clients (libgit2) parse them strictly.
pub fn write_unterminated(out: &mut Vec<u8>, line: impl fmt::Display) {
    write_data(out, line.to_string().as_bytes());
}

/// Append a flush-pkt (`0000`).
pub fn write_flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

/// Append a delim-pkt (`0001`).
pub fn write_delim(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0001");
}

/// A pkt-line carrying a git `ERR` message (understood by every client in v0 and v2), with no
/// trailing LF, as C git's `packet_writer_error` writes it.
pub fn err_line(msg: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_unterminated(&mut out, format_args!("ERR {msg}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut out = Vec::new();
        write_line(&mut out, "want abc");
        write_delim(&mut out);
        write_flush(&mut out);
        assert_eq!(out, b"000dwant abc\n00010000");
        let mut r = PktReader::new(&out);
        assert_eq!(
            r.next_pkt().unwrap().unwrap().text(),
            Some(&b"want abc"[..])
        );
        assert_eq!(r.next_pkt().unwrap(), Some(Pkt::Delim));
        assert_eq!(r.next_pkt().unwrap(), Some(Pkt::Flush));
        assert_eq!(r.next_pkt().unwrap(), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(PktReader::new(b"zzzz").next_pkt().is_err());
        assert!(PktReader::new(b"0003").next_pkt().is_err());
        assert!(PktReader::new(b"0010abc").next_pkt().is_err());
        assert!(PktReader::new(b"00").next_pkt().is_err());
    }
}
