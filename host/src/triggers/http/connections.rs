//! The HTTP listener's client connections, kept so that idle and slow clients cannot keep new
//! ones out.
//!
//! - At most `max_connections` are open, and at most `max_connections_per_client` from one
//!   address.
//! - When a limit is reached, the connection idle longest (a keep-alive connection between
//!   requests, or one that has not sent a request yet) is closed to make room for the new one:
//!   a client holding idle connections loses them to clients that have something to ask. Only
//!   when every connection under the limit is busy does the new one wait (in the listen backlog,
//!   or, over its address's limit, is closed at once).
//! - A connection that sends no request within `first_request_timeout` is closed.
//! - A request counts as running until its response has been handed to the socket, so a
//!   connection writing a response is never taken for idle; a client that reads nothing of its
//!   response for [`WRITE_STALL`] loses the connection.
//! - A connection told to close finishes the request it is serving; one shed to make room, or
//!   silent past its first-request timeout, is dropped [`CLOSE_GRACE`] later if it has not closed
//!   by then.
//!
//! Built once with the [`super::HttpTrigger`]; each connection holds a [`Connection`] for as
//! long as it is open, and each request an [`Active`] (from [`Requests::begin`]) until its
//! response body has been written or dropped.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

/// How long a client may leave its response unread (the socket's buffers full) before its
/// connection is closed.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// How long a connection told to close (shed, or silent past its first-request timeout) has to
/// finish before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The open connections.
pub struct Connections {
    max: usize,
    per_client: usize,
    /// What `idle_since` is counted from.
    epoch: Instant,
    open: Mutex<Open>,
    /// Woken when a connection closes or goes idle: there may be room now.
    room: Notify,
}

#[derive(Default)]
struct Open {
    next: u64,
    by_id: HashMap<u64, Arc<State>>,
    per_address: HashMap<IpAddr, usize>,
}

/// One connection's state, shared by its task, its requests and the table.
struct State {
    address: IpAddr,
    /// Requests running on it now.
    busy: AtomicU32,
    /// When it last went idle, in nanoseconds from `Connections::epoch`.
    idle_since: AtomicU64,
    /// Whether it has begun a request.
    asked: AtomicBool,
    /// Cancelled when it is to close.
    close: CancellationToken,
}

/// An open connection, counted until dropped.
pub struct Connection {
    id: u64,
    state: Arc<State>,
    connections: Arc<Connections>,
}

/// One request running on a connection, until dropped.
pub struct Active {
    state: Arc<State>,
    connections: Arc<Connections>,
}

impl Connections {
    /// A table for at most `max` connections, `per_client` of them from one address.
    pub fn new(max: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_client,
            epoch: Instant::now(),
            open: Mutex::default(),
            room: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Waits until a new connection could be admitted: the table has room, or an idle
    /// connection to close for it.
    pub async fn room(&self) {
        loop {
            let notified = self.room.notified();
            {
                let open = self.lock();
                if open.by_id.len() < self.max || open.by_id.values().any(|state| state.is_idle()) {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Admits a connection from `address`, closing the idle one that makes room for it if a
    /// limit is reached; `None` when none can: the caller closes the new connection.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<Connection> {
        let mut open = self.lock();
        let from_address = open.per_address.get(&address).copied().unwrap_or(0);
        if from_address >= self.per_client {
            let oldest = oldest_idle(&open, Some(address))?;
            shed(&mut open, oldest);
        }
        if open.by_id.len() >= self.max {
            let oldest = oldest_idle(&open, None)?;
            shed(&mut open, oldest);
        }
        let id = open.next;
        open.next += 1;
        let state = Arc::new(State {
            address,
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(self.now()),
            asked: AtomicBool::new(false),
            close: CancellationToken::new(),
        });
        open.by_id.insert(id, state.clone());
        *open.per_address.entry(address).or_default() += 1;
        Some(Connection {
            id,
            state,
            connections: self.clone(),
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }
}

/// The idle connection that went idle first, of `address` or of anyone.
fn oldest_idle(open: &Open, address: Option<IpAddr>) -> Option<u64> {
    open.by_id
        .iter()
        .filter(|(_, state)| {
            state.is_idle() && address.is_none_or(|address| state.address == address)
        })
        .min_by_key(|(_, state)| state.idle_since.load(Ordering::Relaxed))
        .map(|(id, _)| *id)
}

/// Takes `id` out of the table and tells it to close (an idle connection closes at once).
fn shed(open: &mut Open, id: u64) {
    if let Some(state) = open.by_id.remove(&id) {
        forget_address(open, state.address);
        state.close.cancel();
    }
}

fn forget_address(open: &mut Open, address: IpAddr) {
    if let Some(count) = open.per_address.get_mut(&address) {
        *count -= 1;
        if *count == 0 {
            open.per_address.remove(&address);
        }
    }
}

impl State {
    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }
}

impl Connection {
    /// Cancelled when the connection is to close: it was shed to make room.
    pub fn closing(&self) -> &CancellationToken {
        &self.state.close
    }

    /// Whether it has begun a request yet.
    pub fn has_asked(&self) -> bool {
        self.state.asked.load(Ordering::Acquire)
    }

    /// What counts its requests, for the request handler to hold.
    pub fn requests(&self) -> Requests {
        Requests {
            state: self.state.clone(),
            connections: self.connections.clone(),
        }
    }
}

/// Makes an [`Active`] per request; held by a connection's request handler.
#[derive(Clone)]
pub struct Requests {
    state: Arc<State>,
    connections: Arc<Connections>,
}

impl Requests {
    /// Counts a request as running on the connection until the returned guard is dropped.
    pub fn begin(&self) -> Active {
        self.state.asked.store(true, Ordering::Release);
        self.state.busy.fetch_add(1, Ordering::AcqRel);
        Active {
            state: self.state.clone(),
            connections: self.connections.clone(),
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.state
            .idle_since
            .store(self.connections.now(), Ordering::Relaxed);
        if self.state.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections.room.notify_one();
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        if open.by_id.remove(&self.id).is_some() {
            forget_address(&mut open, self.state.address);
        }
        drop(open);
        self.connections.room.notify_one();
    }
}

/// A response body that keeps its request counted as running until the body has been written
/// out (or dropped with its connection).
pub struct Tracked<B> {
    body: B,
    active: Option<Active>,
}

impl<B> Tracked<B> {
    /// `body`, its request kept running by `active` until it ends.
    pub fn new(body: B, active: Active) -> Self {
        Self {
            body,
            active: Some(active),
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.active = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client socket whose writes fail once the client has read nothing for `limit`: the response
/// it will not read does not hold the connection (and its buffers) forever.
pub struct WriteStall<S> {
    io: S,
    limit: Duration,
    /// Armed when a write could not proceed; cleared when one does.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteStall<S> {
    /// `io`, its writes allowed to wait at most `limit` for the client.
    pub fn new(io: S, limit: Duration) -> Self {
        Self {
            io,
            limit,
            stalled: None,
        }
    }

    /// What a write that could not proceed answers: wait on, or fail once stalled too long.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing of its response for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.progressed(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.progressed(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.progressed(polled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.progressed(polled, cx)
    }
}

/// Drives one client connection until it ends: closed gracefully (after the request it is
/// serving, at once when idle) when it is shed to make room, when it has not begun a request
/// within `first_request`, or when the host stops. Shed or silent, it is dropped
/// [`CLOSE_GRACE`] after being told to close; when the host stops, its shutdown grace decides.
pub async fn serve<C>(
    serving: C,
    connection: Connection,
    first_request: Duration,
    stopping: CancellationToken,
) where
    C: Future<Output = hyper::Result<()>> + GracefulConnection,
{
    tokio::pin!(serving);
    let asked_in_time = tokio::time::sleep(first_request);
    tokio::pin!(asked_in_time);
    let mut closing = false;
    let mut dropped_at: Option<Pin<Box<Sleep>>> = None;
    loop {
        tokio::select! {
            ended = serving.as_mut() => {
                if let Err(err) = ended {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            () = async { dropped_at.as_mut().expect("armed").await }, if dropped_at.is_some() => {
                tracing::debug!(
                    grace = ?CLOSE_GRACE,
                    "a connection told to close had not closed; dropping it"
                );
                return;
            }
            () = connection.closing().cancelled(), if !closing => {
                dropped_at = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
            }
            () = stopping.cancelled(), if !closing => {}
            // Armed when this wait began; the connection may have asked since.
            () = &mut asked_in_time, if !closing && !connection.has_asked() => {
                if connection.has_asked() {
                    continue;
                }
                dropped_at = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
            }
        }
        serving.as_mut().graceful_shutdown();
        closing = true;
    }
}

/// A connection that can be asked to finish what it serves and close.
pub trait GracefulConnection {
    /// Finish the request in progress (at once when there is none) and close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> GracefulConnection for hyper::server::conn::http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: Body + 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn at_the_limit_the_connection_idle_longest_makes_room() {
        let connections = Connections::new(3, 3);
        let first = connections.admit(address(1)).expect("room");
        let second = connections.admit(address(1)).expect("room");
        let third = connections.admit(address(2)).expect("room");
        let _asking = second.requests().begin();
        let fourth = connections.admit(address(3)).expect("an idle one is shed");
        assert!(
            first.closing().is_cancelled(),
            "the oldest idle connection closes"
        );
        assert!(!second.closing().is_cancelled() && !third.closing().is_cancelled());
        assert_eq!(connections.len(), 3);
        drop((first, fourth));
        assert_eq!(connections.len(), 2);
    }

    #[test]
    fn when_every_connection_is_busy_there_is_no_room() {
        let connections = Connections::new(2, 2);
        let (a, b) = (
            connections.admit(address(1)).expect("room"),
            connections.admit(address(2)).expect("room"),
        );
        let (_a_busy, _b_busy) = (a.requests().begin(), b.requests().begin());
        assert!(connections.admit(address(3)).is_none());
    }

    #[test]
    fn one_address_over_its_share_loses_its_own_idle_connections_not_others() {
        let connections = Connections::new(10, 2);
        let other = connections.admit(address(9)).expect("room");
        let (a, b) = (
            connections.admit(address(1)).expect("room"),
            connections.admit(address(1)).expect("room"),
        );
        let _c = connections
            .admit(address(1))
            .expect("its own oldest idle one is shed");
        assert!(
            a.closing().is_cancelled()
                && !b.closing().is_cancelled()
                && !other.closing().is_cancelled()
        );
        let _b_busy = b.requests().begin();
        let _d = connections.admit(address(1));
        assert!(
            !other.closing().is_cancelled(),
            "never another address's connection"
        );
    }

    #[tokio::test]
    async fn a_request_that_ends_makes_room_for_a_waiting_connection() {
        let connections = Connections::new(1, 1);
        let only = connections.admit(address(1)).expect("room");
        let busy = only.requests().begin();
        let waiting = tokio::spawn({
            let connections = connections.clone();
            async move { connections.room().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(busy);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("room")
            .expect("task");
    }

    #[tokio::test]
    async fn a_request_is_running_until_its_response_body_has_been_written() {
        use http_body_util::BodyExt;
        let connections = Connections::new(1, 1);
        let only = connections.admit(address(1)).expect("room");
        let body = Tracked::new(
            http_body_util::Full::new(bytes::Bytes::from_static(b"answer")),
            only.requests().begin(),
        );
        assert!(
            connections.admit(address(2)).is_none(),
            "a response not yet written keeps its connection busy"
        );
        let written = body.collect().await.expect("body").to_bytes();
        assert_eq!(&written[..], b"answer");
        assert!(
            connections.admit(address(2)).is_some(),
            "once written, the connection is idle and gives way"
        );
    }

    #[tokio::test]
    async fn a_client_that_reads_nothing_fails_the_write_after_the_limit() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, client) = tokio::io::duplex(1024);
        let mut server = WriteStall::new(server, Duration::from_millis(100));
        let big = vec![b'x'; 64 * 1024];
        let err = tokio::time::timeout(Duration::from_secs(5), server.write_all(&big))
            .await
            .expect("the write ends rather than wait forever")
            .expect_err("nobody reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);

        // A client that keeps reading, however slowly, is never cut off.
        let (server, mut client_reading) = tokio::io::duplex(1024);
        let mut server = WriteStall::new(server, Duration::from_millis(100));
        let reader = tokio::spawn(async move {
            let mut chunk = [0u8; 512];
            let mut total = 0;
            while total < big.len() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                total += client_reading.read(&mut chunk).await.expect("read");
            }
            total
        });
        server
            .write_all(&vec![b'y'; 64 * 1024])
            .await
            .expect("a reading client is written to");
        assert_eq!(reader.await.expect("reader"), 64 * 1024);
    }
}
