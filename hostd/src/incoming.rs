//! Connections on the local socket, before gRPC sees them: a bound on how
//! many are open at once (over it, a connection is closed at once, so a
//! careless agent opening thousands can never take the descriptors hostd
//! needs for tmux), a deadline for the HTTP/2 preface, and the `:authority`
//! stock gRPC clients send on a Unix socket made acceptable.
//!
//! grpcurl sends the socket path as `:authority`, grpcio its %-encoding;
//! h2 refuses both (a per-stream `PROTOCOL_ERROR`) before hyper or tonic
//! see the request, and has no option to accept them (hyperium/h2#487 is
//! open). So the client→server direction is read frame by frame: each header
//! block is decoded with an HPACK decoder that follows the client's table,
//! an `:authority` that is not a URI authority becomes `localhost`, and the
//! block is re-encoded as literals without indexing — h2's own table stays
//! empty and can never disagree with ours. Everything else passes untouched.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::transport::server::Connected;

/// How long a new connection may take to send the HTTP/2 preface.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(5);

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest frame h2 accepts by default (SETTINGS_MAX_FRAME_SIZE); a longer
/// one is handed to h2 untouched, which refuses it.
const MAX_FRAME: usize = 16_384;
/// Largest header block (HEADERS + CONTINUATION) buffered for rewriting.
const MAX_BLOCK: usize = 256 * 1024;
/// h2's default SETTINGS_HEADER_TABLE_SIZE, which hostd never changes.
const TABLE_SIZE: usize = 4096;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Descriptors kept free of local connections: tmux clients, pidfds,
/// heartbeat files and the links all need some.
pub const FD_RESERVE: usize = 256;

/// Raises the soft descriptor limit to the hard one and returns how many
/// connections may be open at once: `wanted`, or fewer if the limit leaves
/// less than [`FD_RESERVE`] free.
pub fn connection_limit(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::debug!(error = %e, "cannot raise the descriptor limit");
        }
    }
    let nofile = getrlimit(Resource::Nofile)
        .current
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(usize::MAX);
    let room = nofile.saturating_sub(FD_RESERVE).max(1);
    if room < wanted {
        tracing::warn!(
            nofile,
            wanted,
            room,
            "descriptor limit leaves room for fewer local connections"
        );
    }
    wanted.min(room)
}

/// Accepts connections on `listener`, at most `limit` open at once.
pub fn incoming(listener: UnixListener, limit: usize) -> impl Stream<Item = io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let permits = Arc::new(Semaphore::new(limit));
    tokio::spawn(async move {
        let mut refused: u64 = 0;
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: the reserve is for tmux; wait
                    // for descriptors to come back instead of spinning.
                    tracing::warn!(error = %e, "cannot accept on the local socket");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!(
                        limit,
                        refused,
                        "local socket at its connection limit: closing new connections"
                    );
                }
                continue;
            };
            if tx.send(Ok(Conn::new(stream, permit))).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// One accepted connection: holds its place under the limit until dropped.
pub struct Conn {
    inner: UnixStream,
    _permit: OwnedSemaphorePermit,
    /// Until the preface has arrived.
    preface_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    fix: Authority,
}

impl Conn {
    fn new(inner: UnixStream, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            _permit: permit,
            preface_deadline: Some(Box::pin(tokio::time::sleep(PREFACE_TIMEOUT))),
            fix: Authority::new(),
        }
    }
}

/// The rewriting state of one connection's client→server bytes.
struct Authority {
    /// Read from the client, not yet parsed.
    raw: BytesMut,
    /// Parsed (maybe rewritten), waiting for h2 to read.
    out: BytesMut,
    preface: bool,
    /// Not HTTP/2 with prior knowledge: left alone.
    passthrough: bool,
    eof: bool,
    hpack: loona_hpack::Decoder<'static>,
    pending: Option<Block>,
}

/// A header block being gathered from HEADERS + CONTINUATION frames.
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed HTTP/2: {what}"),
    )
}

impl Authority {
    fn new() -> Self {
        let mut hpack = loona_hpack::Decoder::new();
        hpack.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            raw: BytesMut::new(),
            out: BytesMut::new(),
            preface: false,
            passthrough: false,
            eof: false,
            hpack,
            pending: None,
        }
    }

    /// Moves every whole frame from `raw` to `out`, rewriting header blocks.
    fn process(&mut self) -> io::Result<()> {
        if !self.preface {
            if self.raw.len() < PREFACE.len() {
                if !PREFACE.starts_with(&self.raw[..]) {
                    self.passthrough = true;
                    self.preface = true;
                }
                if !self.passthrough {
                    return Ok(());
                }
            } else {
                self.passthrough = &self.raw[..PREFACE.len()] != PREFACE;
                self.preface = true;
                if !self.passthrough {
                    let p = self.raw.split_to(PREFACE.len());
                    self.out.extend_from_slice(&p);
                }
            }
        }
        if self.passthrough {
            let rest = self.raw.split();
            self.out.extend_from_slice(&rest);
            return Ok(());
        }
        while self.raw.len() >= 9 {
            let len = usize::from(self.raw[0]) << 16
                | usize::from(self.raw[1]) << 8
                | usize::from(self.raw[2]);
            if len > MAX_FRAME {
                // h2 refuses it with the right error; nothing more to fix.
                self.passthrough = true;
                let rest = self.raw.split();
                self.out.extend_from_slice(&rest);
                return Ok(());
            }
            if self.raw.len() < 9 + len {
                break;
            }
            let mut frame = self.raw.split_to(9 + len);
            let (kind, flags) = (frame[3], frame[4]);
            let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
            match (kind, self.pending.as_mut()) {
                (HEADERS, None) if stream != 0 => {
                    frame.advance(9);
                    if flags & PADDED != 0 {
                        let pad = usize::from(*frame.first().ok_or_else(|| malformed("padding"))?);
                        frame.advance(1);
                        if pad > frame.len() {
                            return Err(malformed("padding longer than the frame"));
                        }
                        frame.truncate(frame.len() - pad);
                    }
                    let priority = if flags & PRIORITY != 0 {
                        let mut p = [0u8; 5];
                        if frame.len() < p.len() {
                            return Err(malformed("short priority"));
                        }
                        p.copy_from_slice(&frame[..5]);
                        frame.advance(5);
                        Some(p)
                    } else {
                        None
                    };
                    self.pending = Some(Block {
                        stream,
                        flags,
                        priority,
                        fragment: frame.to_vec(),
                    });
                    if flags & END_HEADERS != 0 {
                        self.finish()?;
                    }
                }
                (CONTINUATION, Some(b)) if b.stream == stream => {
                    if b.fragment.len() + len > MAX_BLOCK {
                        return Err(malformed("header block too large"));
                    }
                    b.fragment.extend_from_slice(&frame[9..]);
                    if flags & END_HEADERS != 0 {
                        self.finish()?;
                    }
                }
                // Everything else, protocol violations included, reaches h2
                // untouched (it reports them).
                _ => self.out.extend_from_slice(&frame),
            }
        }
        Ok(())
    }

    /// Re-encodes the gathered header block with an acceptable authority.
    fn finish(&mut self) -> io::Result<()> {
        let Some(b) = self.pending.take() else {
            return Ok(());
        };
        let headers = self
            .hpack
            .decode(&b.fragment)
            .map_err(|e| malformed(&format!("hpack {e:?}")))?;
        let mut enc = Vec::with_capacity(b.fragment.len() * 2 + 16);
        if let Some(p) = b.priority {
            enc.extend_from_slice(&p);
        }
        for (name, mut value) in headers {
            if name == b":authority"
                && tonic::codegen::http::uri::Authority::try_from(&value[..]).is_err()
            {
                value = b"localhost".to_vec();
            }
            // Literal header field without indexing, new name, no Huffman
            // (RFC 7541 6.2.2).
            enc.push(0x00);
            for s in [&name[..], &value[..]] {
                loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, &mut enc)?;
                enc.extend_from_slice(s);
            }
        }
        let mut kind = HEADERS;
        let mut flags = (b.flags & END_STREAM) | if b.priority.is_some() { PRIORITY } else { 0 };
        let mut chunks = enc.chunks(MAX_FRAME).peekable();
        while let Some(chunk) = chunks.next() {
            if chunks.peek().is_none() {
                flags |= END_HEADERS;
            }
            self.out.put_uint(chunk.len() as u64, 3);
            self.out.put_u8(kind);
            self.out.put_u8(flags);
            self.out.put_u32(b.stream);
            self.out.extend_from_slice(chunk);
            (kind, flags) = (CONTINUATION, 0);
        }
        Ok(())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            let fix = &mut me.fix;
            if !fix.out.is_empty() {
                let n = fix.out.len().min(buf.remaining());
                buf.put_slice(&fix.out.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if fix.eof {
                // A trailing partial frame goes to h2 as it is.
                let rest = fix.raw.split();
                if rest.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                fix.out.extend_from_slice(&rest);
                continue;
            }
            if fix.preface {
                me.preface_deadline = None;
            } else if let Some(d) = me.preface_deadline.as_mut()
                && d.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface within the deadline",
                )));
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut me.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => fix.eof = true,
                Poll::Ready(Ok(())) => {
                    fix.raw.extend_from_slice(rb.filled());
                    fix.process()?;
                }
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, b)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = <UnixStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.put_uint(payload.len() as u64, 3);
        f.put_u8(kind);
        f.put_u8(flags);
        f.put_u32(stream);
        f.extend_from_slice(payload);
        f
    }

    fn headers(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut e = loona_hpack::Encoder::new();
        e.encode(pairs.iter().copied())
    }

    fn run(input: &[u8]) -> io::Result<Vec<u8>> {
        let mut a = Authority::new();
        // Byte by byte: partial frames must be held, not mangled.
        for b in input {
            a.raw.put_u8(*b);
            a.process()?;
        }
        Ok(a.out.to_vec())
    }

    fn decoded(out: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let body = &out[PREFACE.len()..];
        let len = usize::from(body[0]) << 16 | usize::from(body[1]) << 8 | usize::from(body[2]);
        loona_hpack::Decoder::new()
            .decode(&body[9..9 + len])
            .unwrap()
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
        let block = headers(&[
            (b":method", b"POST"),
            (b":authority", b"/run/user/0/fleet/hostd.sock"),
            (b":path", b"/fleet.v1.Fleet/ListAgents"),
            (b"te", b"trailers"),
        ]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        let out = run(&input).unwrap();
        let h = decoded(&out);
        assert_eq!(h[1], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(h[2].1, b"/fleet.v1.Fleet/ListAgents".to_vec());
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn a_good_authority_and_other_frames_pass_untouched() {
        let block = headers(&[(b":authority", b"localhost:50051")]);
        let settings = frame(0x4, 0, 0, &[]);
        let mut input = PREFACE.to_vec();
        input.extend(&settings);
        input.extend(frame(HEADERS, END_HEADERS, 3, &block));
        let out = run(&input).unwrap();
        assert_eq!(
            &out[PREFACE.len()..PREFACE.len() + settings.len()],
            &settings[..]
        );
        let rest = &out[PREFACE.len() + settings.len()..];
        let len = usize::from(rest[2]);
        let h = loona_hpack::Decoder::new()
            .decode(&rest[9..9 + len])
            .unwrap();
        assert_eq!(h[0].1, b"localhost:50051".to_vec());
    }

    #[test]
    fn something_that_is_not_http2_is_left_alone() {
        let out = run(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn broken_frames_are_errors_not_panics() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | PADDED, 1, &[200, 1, 2]));
        assert!(run(&input).is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | PRIORITY, 1, &[1, 2]));
        assert!(run(&input).is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff]));
        assert!(run(&input).is_err());
    }
}
