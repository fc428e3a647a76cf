//! Output plumbing: a `Write` that hands bytes to the HTTP response body through a channel
//! (from a blocking thread), and side-band-64k framing on top of it; [`AsyncSideband`] frames
//! the same way from async code (a stream that waits for a slow client holds no thread).

use super::pktline;
use bytes::Bytes;
use std::io::{self, Write};
use tokio::sync::mpsc;

/// The sending side of a streamed HTTP response body.
pub type BodyTx = mpsc::Sender<Result<Bytes, io::Error>>;

/// Bytes per response chunk: large enough that a streamed pack costs few wake-ups.
const CHUNK: usize = 256 * 1024;

/// Buffers writes and sends them as body chunks; fails once the client is gone.
pub struct ChannelWriter {
    /// Always set but in [`ChannelWriter::into_sender`].
    tx: Option<BodyTx>,
    buf: Vec<u8>,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "client went away")
}

impl ChannelWriter {
    /// A writer sending to `tx`.
    pub fn new(tx: BodyTx) -> Self {
        ChannelWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        match &self.tx {
            Some(tx) => tx.blocking_send(Ok(chunk)).map_err(|_| gone()),
            None => Err(gone()),
        }
    }

    /// Send what is buffered and hand back the channel (for the rest of the response to be
    /// written from async code).
    pub fn into_sender(mut self) -> io::Result<BodyTx> {
        self.send()?;
        self.tx.take().ok_or_else(gone)
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

/// Side-band framing of data written from async code, in the same packets as [`Sideband`]'s
/// (each full but the last), sent as body chunks of about [`CHUNK`] bytes.
pub struct AsyncSideband {
    tx: BodyTx,
    buf: Vec<u8>,
    /// Data bytes per packet; `None`: raw (no side-band).
    max: Option<usize>,
    /// Where in `buf` the open packet's header is.
    open: Option<usize>,
}

impl AsyncSideband {
    /// `max_pkt`: the total pkt-line size (65520 for side-band-64k, 1000 for side-band), or
    /// `None` for raw output.
    pub fn new(tx: BodyTx, max_pkt: Option<usize>) -> Self {
        AsyncSideband {
            tx,
            buf: Vec::with_capacity(CHUNK + 65520),
            max: max_pkt.map(|m| m - 5),
            open: None,
        }
    }

    /// Write the open packet's length into its header.
    fn close(&mut self) {
        if let Some(at) = self.open.take() {
            let len = self.buf.len() - at;
            self.buf[at..at + 4].copy_from_slice(format!("{len:04x}").as_bytes());
        }
    }

    async fn send(&mut self) -> io::Result<()> {
        self.close();
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK + 65520),
        ));
        self.tx.send(Ok(chunk)).await.map_err(|_| gone())
    }

    /// Band-1 data (or raw bytes).
    pub async fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        let Some(max) = self.max else {
            self.buf.extend_from_slice(data);
            if self.buf.len() >= CHUNK {
                self.send().await?;
            }
            return Ok(());
        };
        while !data.is_empty() {
            let at = match self.open {
                Some(at) => at,
                None => {
                    let at = self.buf.len();
                    self.buf.extend_from_slice(b"0000\x01");
                    self.open = Some(at);
                    at
                }
            };
            let room = max - (self.buf.len() - at - 5);
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if take == room {
                self.close();
                if self.buf.len() >= CHUNK {
                    self.send().await?;
                }
            }
        }
        Ok(())
    }

    /// A fatal error on band 3 (dropped when raw).
    pub async fn error(&mut self, msg: &str) -> io::Result<()> {
        self.close();
        if let Some(max) = self.max {
            error_packet(msg, max, &mut self.buf);
        }
        self.send().await
    }

    /// Send what is buffered and end the response with a flush packet (side-band only).
    pub async fn finish(mut self) -> io::Result<()> {
        self.close();
        if self.max.is_some() {
            self.buf.extend_from_slice(b"0000");
        }
        self.send().await
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

    /// No side-band: data passes through unframed (progress and errors are dropped).
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
        error_packet(msg, self.max, &mut v);
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

/// `msg` as a band-3 packet of at most `max` data bytes.
fn error_packet(msg: &str, max: usize, out: &mut Vec<u8>) {
    let mut payload = vec![3u8];
    payload.extend_from_slice(msg.as_bytes());
    payload.push(b'\n');
    pktline::write_data(out, &payload[..payload.len().min(max)]);
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
        // The async framing sends the same bytes, however the data is cut.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        for (max, cuts) in [
            (Some(65520), vec![]),
            (Some(65520), vec![10, 70_000, 70_001, 150_000]),
            (Some(1000), vec![3, 999, 5000]),
            (None, vec![7, 100_000]),
        ] {
            let want = {
                let mut out = Vec::new();
                let mut s = match max {
                    Some(m) => Sideband::new(&mut out, m),
                    None => Sideband::raw(&mut out),
                };
                s.write_all(&data).unwrap();
                s.finish().unwrap();
                out
            };
            let (tx, mut rx) = mpsc::channel(1 << 10);
            rt.block_on(async {
                let mut s = AsyncSideband::new(tx, max);
                let mut at = 0;
                for &c in &cuts {
                    s.write(&data[at..c]).await.unwrap();
                    at = c;
                }
                s.write(&data[at..]).await.unwrap();
                s.finish().await.unwrap();
            });
            let mut got = Vec::new();
            while let Ok(chunk) = rx.try_recv() {
                got.extend_from_slice(&chunk.unwrap());
            }
            assert_eq!(got, want, "max {max:?} cuts {cuts:?}");
        }
    }
}
