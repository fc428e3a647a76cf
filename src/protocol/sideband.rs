//! Output plumbing: a `Write` that hands bytes to the HTTP response body through a channel
//! (from a blocking thread), and side-band-64k framing on top of it.

use super::pktline;
use bytes::Bytes;
use std::io::{self, Write};
use tokio::sync::mpsc;

pub type BodyTx = mpsc::Sender<Result<Bytes, io::Error>>;

/// Bytes per response chunk: large enough that a streamed pack costs few wake-ups.
const CHUNK: usize = 256 * 1024;

/// Buffers writes and sends them as body chunks; fails once the client is gone.
pub struct ChannelWriter {
    tx: BodyTx,
    buf: Vec<u8>,
}

impl ChannelWriter {
    pub fn new(tx: BodyTx) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// Frames data written to it as side-band channel 1 pkt-lines (or passes it through raw when
/// the client did not ask for side-band).
pub struct Sideband<'w, W: Write + ?Sized> {
    out: &'w mut W,
    buf: Vec<u8>,
    max: usize,
    raw: bool,
}

impl<'w, W: Write + ?Sized> Sideband<'w, W> {
    /// `max_pkt` is the total pkt-line size: 65520 for side-band-64k, 1000 for side-band.
    pub fn new(out: &'w mut W, max_pkt: usize) -> Self {
        let max = max_pkt - 5;
        Sideband {
            out,
            buf: Vec::with_capacity(max),
            max,
            raw: false,
        }
    }

    pub fn raw(out: &'w mut W) -> Self {
        Sideband {
            out,
            buf: Vec::new(),
            max: CHUNK,
            raw: true,
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.packet(&buf);
        self.buf = buf;
        self.buf.clear();
        r
    }

    /// One band-1 packet of `data` (at most `max` bytes), or `data` as it is when raw.
    fn packet(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.raw {
            let len = data.len() + 5;
            self.out.write_all(format!("{len:04x}\x01").as_bytes())?;
        }
        self.out.write_all(data)
    }

    /// A progress message on channel 2 (dropped when raw).
    pub fn progress(&mut self, msg: &str) -> io::Result<()> {
        if self.raw {
            return Ok(());
        }
        self.emit()?;
        let mut v = Vec::new();
        let mut payload = vec![2u8];
        payload.extend_from_slice(msg.as_bytes());
        pktline::write_data(&mut v, &payload[..payload.len().min(self.max)]);
        self.out.write_all(&v)
    }

    /// Emit what is buffered and end the response with a flush packet (side-band only).
    pub fn finish(mut self) -> io::Result<()> {
        self.emit()?;
        if !self.raw {
            self.out.write_all(b"0000")?;
        }
        self.out.flush()
    }

    /// A fatal error on channel 3.
    pub fn error(&mut self, msg: &str) -> io::Result<()> {
        self.emit()?;
        if self.raw {
            return Ok(());
        }
        let mut v = Vec::new();
        let mut payload = vec![3u8];
        payload.extend_from_slice(msg.as_bytes());
        payload.push(b'\n');
        pktline::write_data(&mut v, &payload[..payload.len().min(self.max)]);
        self.out.write_all(&v)
    }
}

impl<W: Write + ?Sized> Write for Sideband<'_, W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            // Whole packets straight from the caller's buffer (large writes: streamed packs).
            if self.buf.is_empty() && data.len() >= self.max {
                let (pkt, rest) = data.split_at(self.max);
                self.packet(pkt)?;
                data = rest;
                continue;
            }
            let room = self.max - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.max {
                self.emit()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.emit()?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_band_one() {
        let mut out = Vec::new();
        {
            let mut s = Sideband::new(&mut out, 65520);
            s.write_all(&vec![7u8; 70000]).unwrap();
            s.flush().unwrap();
        }
        assert_eq!(&out[..5], b"fff0\x01");
        assert_eq!(out.len(), 70000 + 2 * 5);
        assert_eq!(
            &out[65520..65525],
            format!("{:04x}\x01", 70000 - 65515 + 5).as_bytes()
        );
        // Small and large writes mixed frame the same bytes the same way.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let framed = |cuts: &[usize]| {
            let mut out = Vec::new();
            let mut s = Sideband::new(&mut out, 65520);
            let mut at = 0;
            for &c in cuts {
                s.write_all(&data[at..c]).unwrap();
                at = c;
            }
            s.write_all(&data[at..]).unwrap();
            s.finish().unwrap();
            out
        };
        let one = framed(&[]);
        assert_eq!(framed(&[10, 70_000, 70_001, 150_000]), one);
        assert_eq!(framed(&[65515, 131_030]), one);
    }
}
