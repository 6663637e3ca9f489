//! A bound on what a PostgreSQL server may make the host read: every backend message's length is
//! checked from its header before any of it reaches the driver.
//!
//! tokio-postgres reads each message whole into memory before its caller sees it, so without
//! this a guest's `SELECT repeat('x', 300000000)` (or a 300 MB `RAISE`) would be buffered and
//! converted before any cap on results could be applied. [`WireGuard`] sits between the socket
//! (or the TLS session) and the driver and reads the protocol's framing (a tag byte and a
//! 4-byte length per message). A message longer than the connection's limit never reaches the
//! driver: in its place the driver reads an `ErrorResponse` with SQLSTATE `54000`
//! (program_limit_exceeded), which the statement waiting for it answers, then the end of the
//! stream. The connection is closed there, without reading the rest of the message, so the
//! refusal costs the host a few bytes and the server stops producing as soon as it next writes.
//!
//! The limit is for the messages that carry a result: rows (`D`) and their description (`T`).
//! Every other message (an error, a notice, a parameter's status) is at most [`OTHER_LIMIT`]
//! bytes: a guest's `RAISE` cannot make one the size of a result.
//!
//! Bytes pass through unchanged otherwise, a read's worth at a time: the guard holds back only
//! a message header split across two reads.
//!
//! Made by [`super::connection::Connector`] for every connection of a component's pool: on the
//! plain socket, and, when TLS is negotiated, on the TLS session's plaintext.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

/// Bytes read from the connection at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Longest message other than a row or a row description.
pub const OTHER_LIMIT: usize = 64 * 1024;

/// How the message standing in for one over the limit begins: [`is_cut`] knows it by this.
const CUT: &str = "the database sent a message of";

/// Where in the protocol the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The client asked for TLS: the server's first byte answers it, `S` (TLS follows, and is
    /// guarded on its plaintext side) or `N` (messages follow on this stream).
    SslResponse,
    /// Backend messages, each checked.
    Messages,
    /// TLS records: the guard around the TLS session checks the messages inside.
    Passthrough,
    /// A message was over the limit: the driver gets the made-up error, then the end.
    Cut,
    /// The end of the stream was handed out.
    Closed,
}

/// A stream whose backend messages are at most `limit` bytes long (see the module doc).
pub struct WireGuard<S> {
    inner: S,
    limit: usize,
    phase: Phase,
    /// Read from `inner` and not yet handed to the driver; the first `approved` bytes may be.
    pending: BytesMut,
    approved: usize,
    /// Bytes of the current message's body not yet seen.
    body_left: usize,
}

impl<S> WireGuard<S> {
    /// A guard over `inner` letting through backend messages of at most `limit` bytes (rows
    /// and their description; others at most [`OTHER_LIMIT`]), starting at `phase`.
    pub fn new(inner: S, limit: usize, phase: Phase) -> Self {
        Self {
            inner,
            limit,
            phase,
            pending: BytesMut::new(),
            approved: 0,
            body_left: 0,
        }
    }

    /// Approves what the framing allows of `pending`, past what was approved before.
    fn scan(&mut self) {
        if self.phase == Phase::SslResponse {
            let Some(&answer) = self.pending.first() else {
                return;
            };
            if answer == b'S' {
                // What follows is TLS: let it all through.
                self.approved = self.pending.len();
                self.phase = Phase::Passthrough;
                return;
            }
            self.phase = Phase::Messages;
            if answer == b'N' {
                self.approved = 1;
            }
        }
        while self.phase == Phase::Messages && self.approved < self.pending.len() {
            let unseen = self.pending.len() - self.approved;
            if self.body_left > 0 {
                let taken = self.body_left.min(unseen);
                self.approved += taken;
                self.body_left -= taken;
                continue;
            }
            let Some(header) = self.pending.get(self.approved..self.approved + 5) else {
                return;
            };
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let limit = if matches!(header[0], b'D' | b'T') {
                self.limit
            } else {
                OTHER_LIMIT.min(self.limit)
            };
            match length.checked_sub(4) {
                Some(body) if body <= limit => {
                    self.approved += 5;
                    self.body_left = body;
                }
                _ => {
                    let tag = header[0];
                    tracing::debug!(
                        limit,
                        length,
                        tag = %char::from(tag),
                        "a message from the database server is over the connection's limit; \
                         closing the connection"
                    );
                    self.cut(length, limit);
                }
            }
        }
    }

    /// Replaces everything from the current message on with the made-up error.
    fn cut(&mut self, length: usize, limit: usize) {
        self.pending.truncate(self.approved);
        self.pending.extend_from_slice(&limit_error(length, limit));
        self.approved = self.pending.len();
        self.phase = Phase::Cut;
    }
}

/// An `ErrorResponse` saying a message of `length` bytes was over `limit`.
fn limit_error(length: usize, limit: usize) -> Vec<u8> {
    let message = format!(
        "{CUT} {length} bytes, over the host's limit of {limit} bytes (a row: \
         max_result_bytes); select less (LIMIT, paging, substring), raise less"
    );
    let mut fields = Vec::with_capacity(message.len() + 32);
    for (code, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', "54000"),
        (b'M', message.as_str()),
    ] {
        fields.put_u8(code);
        fields.extend_from_slice(value.as_bytes());
        fields.put_u8(0);
    }
    fields.put_u8(0);
    let mut error = Vec::with_capacity(fields.len() + 5);
    error.put_u8(b'E');
    error.put_u32((fields.len() + 4) as u32);
    error.extend_from_slice(&fields);
    error
}

impl<S: AsyncRead + Unpin> AsyncRead for WireGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.approved > 0 {
                let handed = this.approved.min(buf.remaining());
                buf.put_slice(&this.pending[..handed]);
                this.pending.advance(handed);
                this.approved -= handed;
                return Poll::Ready(Ok(()));
            }
            match this.phase {
                Phase::Cut => {
                    this.phase = Phase::Closed;
                    return Poll::Ready(Ok(()));
                }
                Phase::Closed => return Poll::Ready(Ok(())),
                Phase::Passthrough if this.pending.is_empty() => {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                _ => {}
            }
            let before = this.pending.len();
            this.pending.resize(before + READ_CHUNK, 0);
            let mut read = ReadBuf::new(&mut this.pending[before..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let filled = read.filled().len();
            this.pending.truncate(before + filled);
            ready!(polled)?;
            if this.pending.len() == before {
                // The server closed the connection: hand out what is left (an incomplete
                // header), then the end.
                this.approved = this.pending.len();
                this.phase = Phase::Closed;
                continue;
            }
            this.scan();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WireGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: TlsStream + Unpin> TlsStream for WireGuard<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

/// Whether `err` is the error that stands in for a message over the limit: the connection was
/// closed there, so what the statement it answered did on the server is not known.
pub fn is_cut(err: &tokio_postgres::Error) -> bool {
    err.as_db_error()
        .is_some_and(|db| db.code().code() == "54000" && db.message().starts_with(CUT))
}

/// A TLS connector whose sessions are guarded on their plaintext side.
pub struct GuardedTls<T> {
    /// The connector that negotiates TLS (rustls, as the URL's `sslmode` asks).
    pub inner: T,
    /// The message limit of the guard put around each TLS session it makes.
    pub limit: usize,
}

impl<S, T> TlsConnect<S> for GuardedTls<T>
where
    T: TlsConnect<S>,
    T::Stream: Unpin,
    T::Future: Send + 'static,
{
    type Stream = WireGuard<T::Stream>;
    type Error = T::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Stream, T::Error>>;

    fn connect(self, stream: S) -> Self::Future {
        let limit = self.limit;
        let connecting = self.inner.connect(stream);
        Box::pin(async move { Ok(WireGuard::new(connecting.await?, limit, Phase::Messages)) })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    /// Everything the driver would read from `server`'s bytes, delivered in `chunk`-sized reads.
    async fn read_all(server: Vec<u8>, chunk: usize, limit: usize, phase: Phase) -> Vec<u8> {
        let (mut writer, reader) = tokio::io::duplex(chunk);
        tokio::spawn(async move {
            for piece in server.chunks(chunk) {
                if tokio::io::AsyncWriteExt::write_all(&mut writer, piece)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut guarded = WireGuard::new(reader, limit, phase);
        let mut read = Vec::new();
        guarded.read_to_end(&mut read).await.expect("read");
        read
    }

    #[tokio::test]
    async fn messages_within_the_limit_pass_unchanged_however_they_are_split() {
        let mut server = message(b'T', b"row description");
        server.extend(message(b'D', &[7u8; 300]));
        server.extend(message(b'Z', b"I"));
        for chunk in [1, 2, 3, 5, 7, 64, 4096] {
            assert_eq!(
                read_all(server.clone(), chunk, 1000, Phase::Messages).await,
                server,
                "chunk {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn a_message_over_the_limit_becomes_an_error_and_the_end_of_the_stream() {
        let before = message(b'T', b"row description");
        let mut server = before.clone();
        server.extend(message(b'D', &vec![b'x'; 5000]));
        server.extend(message(b'Z', b"I"));
        for chunk in [1, 4, 6, 4096] {
            let read = read_all(server.clone(), chunk, 1000, Phase::Messages).await;
            assert_eq!(
                &read[..before.len()],
                &before[..],
                "what came before passes"
            );
            let error = &read[before.len()..];
            assert_eq!(error[0], b'E');
            let text = String::from_utf8_lossy(error);
            assert!(
                text.contains("54000") && text.contains("5004 bytes"),
                "{text}"
            );
            let length = u32::from_be_bytes([error[1], error[2], error[3], error[4]]) as usize;
            assert_eq!(
                length + 1,
                error.len(),
                "one well-formed message, then nothing"
            );
        }
    }

    #[tokio::test]
    async fn an_error_or_notice_is_held_to_a_smaller_limit_than_a_row() {
        let row = message(b'D', &vec![b'r'; 100_000]);
        assert_eq!(
            read_all(row.clone(), 4096, 1 << 20, Phase::Messages).await,
            row
        );
        let notice = message(b'N', &vec![b'n'; 100_000]);
        let read = read_all(notice, 4096, 1 << 20, Phase::Messages).await;
        assert_eq!(read[0], b'E', "cut at the notice");
        assert!(String::from_utf8_lossy(&read).contains(CUT));
    }

    #[tokio::test]
    async fn a_refused_tls_request_is_followed_by_guarded_messages_and_an_accepted_one_by_tls() {
        let mut refused = vec![b'N'];
        refused.extend(message(b'D', &vec![b'x'; 5000]));
        let read = read_all(refused, 3, 1000, Phase::SslResponse).await;
        assert_eq!(read[0], b'N');
        assert_eq!(read[1], b'E');

        let mut accepted = vec![b'S'];
        accepted.extend(vec![0x17u8; 5000]);
        assert_eq!(
            read_all(accepted.clone(), 3, 1000, Phase::SslResponse).await,
            accepted
        );
    }
}
