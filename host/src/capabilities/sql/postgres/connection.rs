//! Connections to a component's database, made by the host itself so that every byte the server
//! sends is framed by a [`WireGuard`], and pooled with what the host must know of each to end its
//! session from elsewhere.
//!
//! - [`Connector`] is built once per component from its database URL: it opens the socket (TCP
//!   or Unix, as tokio-postgres would), wraps it, negotiates TLS as the URL's `sslmode` says
//!   (guarding the TLS session's plaintext too), and logs in (`Config::connect_raw`). Cancel
//!   requests travel the same way.
//! - [`PgManager`] lets deadpool create and recycle [`PgConn`]s: a client with deadpool's
//!   statement cache, its backend's pid and start time.
//! - [`abandon`] is how the host lets go of a connection in an unknown state (a unit of work past
//!   its deadline, a scrape that took too long): it closes it, asks the server to cancel what it
//!   runs, and a moment later, from a fresh connection, terminates the session if it is still
//!   busy (a statement whose timeout a guest lifted with dynamic SQL, a cancel that got lost).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use deadpool_postgres::ClientWrapper;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::config::{Host, LoadBalanceHosts, SslMode, TargetSessionAttrs};
use tokio_postgres::tls::MakeTlsConnect;

use super::wire::{GuardedTls, Phase, WireGuard};
use crate::config::postgres_tls::PgConnector;

/// How long after letting go of a busy session the host looks whether it is still running.
const TERMINATE_AFTER: Duration = Duration::from_secs(2);

/// Connections a component's pool makes beside itself (to cancel a statement, to end a
/// session) at once, and how long each may take.
const SIDE_CONNECTIONS: usize = 4;
const SIDE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens connections to one database.
pub struct Connector {
    config: tokio_postgres::Config,
    tls: PgConnector,
    /// Longest backend message a connection reads, in bytes.
    limit: usize,
    /// Bounds the connections made to cancel statements or end sessions.
    side: Arc<tokio::sync::Semaphore>,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No socket could be opened (the URL names no host, a name does not resolve, the server
    /// does not answer in time), or the server is read-only when
    /// `target_session_attrs=read-write` asks for a writable one.
    #[error("{0}")]
    Socket(#[from] io::Error),
    /// The driver failed: TLS, the login, or a query the host runs on a new connection.
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
}

impl ConnectError {
    /// The server's own error, when it refused the login.
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            Self::Postgres(err) => err.as_db_error(),
            Self::Socket(_) => None,
        }
    }
}

/// One server a connection may be made to: a host of the URL, with its port and address.
#[derive(Debug, Clone)]
pub struct Target {
    host: Host,
    /// The address to connect to instead of resolving the name (`hostaddr`).
    address: Option<std::net::IpAddr>,
    port: u16,
}

impl Target {
    /// The name a server's certificate is checked against.
    fn name(&self) -> String {
        match &self.host {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(_) => String::new(),
        }
    }
}

impl Connector {
    /// A connector for `config` (whose `ssl_mode` is what tokio-postgres negotiates) over `tls`,
    /// reading backend messages of at most `limit` bytes.
    pub fn new(config: tokio_postgres::Config, tls: PgConnector, limit: usize) -> Self {
        Self {
            config,
            tls,
            limit,
            side: Arc::new(tokio::sync::Semaphore::new(SIDE_CONNECTIONS)),
        }
    }

    /// A logged-in client to the first of the URL's hosts that takes it (in a random order when
    /// `load_balance_hosts=random`, and only a writable one when
    /// `target_session_attrs=read-write`), its connection running in a task of its own, and
    /// which host it is.
    pub async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>, Target), ConnectError> {
        let mut targets = self.targets();
        if self.config.get_load_balance_hosts() == LoadBalanceHosts::Random {
            fastrand::shuffle(&mut targets);
        }
        let mut last = ConnectError::Socket(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the database URL names no host",
        ));
        for target in targets {
            match self.connect_to(&target).await {
                Ok((client, task)) => return Ok((client, task, target)),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    async fn connect_to(
        &self,
        target: &Target,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), ConnectError> {
        let socket = self.socket(target).await?;
        let (client, connection) = self
            .config
            .connect_raw(socket, self.guarded_tls(&target.name()))
            .await?;
        let task = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "a database connection ended with an error");
            }
        });
        if self.config.get_target_session_attrs() == TargetSessionAttrs::ReadWrite {
            let read_only = client
                .simple_query("SHOW transaction_read_only")
                .await?
                .into_iter()
                .any(|message| {
                    matches!(
                        message,
                        tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("on")
                    )
                });
            if read_only {
                task.abort();
                return Err(ConnectError::Socket(io::Error::other(format!(
                    "{} is read-only",
                    target.name()
                ))));
            }
        }
        Ok((client, task))
    }

    /// Asks the server `target` to cancel what the session of `token` runs now: within
    /// [`SIDE_TIMEOUT`], and with at most [`SIDE_CONNECTIONS`] such connections at once.
    pub async fn cancel(
        &self,
        token: &tokio_postgres::CancelToken,
        target: &Target,
    ) -> Result<(), ConnectError> {
        let _side = self.side.acquire().await;
        let cancelling = async {
            let socket = self.socket(target).await?;
            token
                .cancel_query_raw(socket, self.guarded_tls(&target.name()))
                .await?;
            Ok(())
        };
        tokio::time::timeout(SIDE_TIMEOUT, cancelling)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    fn guarded_tls(
        &self,
        hostname: &str,
    ) -> GuardedTls<<PgConnector as MakeTlsConnect<WireGuard<Socket>>>::TlsConnect> {
        let mut tls = self.tls.clone();
        let Ok(inner) = MakeTlsConnect::<WireGuard<Socket>>::make_tls_connect(&mut tls, hostname);
        GuardedTls {
            inner,
            limit: self.limit,
        }
    }

    /// The URL's servers in its order: each host (or, with no host, each `hostaddr`) with its port.
    fn targets(&self) -> Vec<Target> {
        let (hosts, addresses, ports) = (
            self.config.get_hosts(),
            self.config.get_hostaddrs(),
            self.config.get_ports(),
        );
        let count = hosts.len().max(addresses.len());
        (0..count)
            .map(|index| Target {
                host: hosts
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| Host::Tcp(addresses[index].to_string())),
                address: addresses.get(index).copied(),
                port: ports.get(index).or(ports.first()).copied().unwrap_or(5432),
            })
            .collect()
    }

    /// A guarded socket to `target`.
    async fn socket(&self, target: &Target) -> Result<WireGuard<Socket>, io::Error> {
        let phase = if self.config.get_ssl_mode() == SslMode::Disable {
            Phase::Messages
        } else {
            Phase::SslResponse
        };
        let timeout = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(30));
        let socket = match &target.host {
            Host::Tcp(name) => {
                let address = target
                    .address
                    .map_or_else(|| name.clone(), |ip| ip.to_string());
                let keepalive = self.config.get_keepalives().then(|| self.keepalive());
                Socket::Tcp(tcp(&address, target.port, timeout, keepalive).await?)
            }
            #[cfg(unix)]
            Host::Unix(folder) => {
                let path = folder.join(format!(".s.PGSQL.{}", target.port));
                match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
                    Ok(opened) => Socket::Unix(opened?),
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "connection timed out",
                        ));
                    }
                }
            }
        };
        Ok(WireGuard::new(socket, self.limit, phase))
    }

    fn keepalive(&self) -> socket2::TcpKeepalive {
        let mut keepalive =
            socket2::TcpKeepalive::new().with_time(self.config.get_keepalives_idle());
        if let Some(interval) = self.config.get_keepalives_interval() {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(retries) = self.config.get_keepalives_retries() {
            keepalive = keepalive.with_retries(retries);
        }
        keepalive
    }
}

/// A TCP connection to `host:port` (each address it resolves to in turn), as tokio-postgres
/// opens one: no delay, keepalives when configured.
async fn tcp(
    host: &str,
    port: u16,
    timeout: Duration,
    keepalive: Option<socket2::TcpKeepalive>,
) -> io::Result<TcpStream> {
    let mut last = io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{host} resolves to no address"),
    );
    for address in tokio::net::lookup_host((host, port)).await? {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                last = err;
                continue;
            }
            Err(_) => {
                last = io::Error::new(io::ErrorKind::TimedOut, "connection timed out");
                continue;
            }
        };
        stream.set_nodelay(true)?;
        if let Some(keepalive) = &keepalive {
            socket2::SockRef::from(&stream).set_tcp_keepalive(keepalive)?;
        }
        return Ok(stream);
    }
    Err(last)
}

/// A TCP or Unix socket.
pub enum Socket {
    /// A TCP connection, for a host given by name or address.
    Tcp(TcpStream),
    /// A Unix socket, for a host given as a folder (`host=/var/run/postgresql`).
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            #[cfg(unix)]
            Self::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            #[cfg(unix)]
            Self::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            #[cfg(unix)]
            Self::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            #[cfg(unix)]
            Self::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// A pooled connection: the client (with deadpool's statement cache), its backend session, and
/// the server it is on.
pub struct PgConn {
    client: ClientWrapper,
    /// The backend's process id and start time: together, this session and no other.
    pid: i32,
    started: DateTime<Utc>,
    target: Target,
}

impl std::ops::Deref for PgConn {
    type Target = ClientWrapper;

    fn deref(&self) -> &ClientWrapper {
        &self.client
    }
}

/// Makes and recycles a component's connections for deadpool.
pub struct PgManager {
    connector: Arc<Connector>,
}

impl PgManager {
    /// A manager that makes the pool's connections with `connector`, shared with the cancel
    /// and terminate requests of the same component.
    pub fn new(connector: Arc<Connector>) -> Self {
        Self { connector }
    }
}

impl deadpool::managed::Manager for PgManager {
    type Type = PgConn;
    type Error = ConnectError;

    async fn create(&self) -> Result<PgConn, ConnectError> {
        let (client, task, target) = self.connector.connect().await?;
        // Qualified: the component may have set a search_path of its own for its database.
        let session = client
            .query_one(
                "SELECT pg_catalog.pg_backend_pid(), a.backend_start \
                 FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_catalog.pg_backend_pid()",
                &[],
            )
            .await?;
        Ok(PgConn {
            pid: session.try_get(0)?,
            started: session.try_get(1)?,
            client: ClientWrapper::new(client, task),
            target,
        })
    }

    /// A connection is cleaned as its transaction ends (see `RESET_SESSION`); taking one from
    /// the pool only checks that it is still open.
    async fn recycle(&self, conn: &mut PgConn, _: &Metrics) -> RecycleResult<ConnectError> {
        if conn.is_closed() {
            return Err(RecycleError::message("the connection is closed"));
        }
        Ok(())
    }
}

/// A pool of a component's connections.
pub type Pool = deadpool::managed::Pool<PgManager>;

/// A connection taken from a [`Pool`].
pub type Object = deadpool::managed::Object<PgManager>;

/// Lets go of `conn`, whose session may be running a statement: it is detached from the pool and
/// closed, the server is asked to cancel what it runs, and after [`TERMINATE_AFTER`] a fresh
/// connection terminates the session if it is still busy. Closing the connection is
/// PostgreSQL's rollback.
pub fn abandon(conn: Object, connector: &Arc<Connector>) {
    let conn = Object::take(conn);
    let (token, pid, started, target) = (
        conn.cancel_token(),
        conn.pid,
        conn.started,
        conn.target.clone(),
    );
    drop(conn);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let connector = connector.clone();
    runtime.spawn(async move {
        if let Err(err) = connector.cancel(&token, &target).await {
            tracing::debug!(error = %err, "could not cancel a statement on the server");
        }
        tokio::time::sleep(TERMINATE_AFTER).await;
        if let Err(err) = terminate_if_busy(&connector, pid, started, &target).await {
            tracing::debug!(error = %err, pid, "could not look for an abandoned session");
        }
    });
}

/// Terminates the session `pid` that started at `started` on `target`, if it still runs a
/// statement (within [`SIDE_TIMEOUT`], one of the [`SIDE_CONNECTIONS`]).
async fn terminate_if_busy(
    connector: &Connector,
    pid: i32,
    started: DateTime<Utc>,
    target: &Target,
) -> Result<(), ConnectError> {
    let _side = connector.side.acquire().await;
    let ending = async {
        let (client, task) = connector.connect_to(target).await?;
        let ended = client
            .query(
                "SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_activity a \
                 WHERE a.pid = $1 AND a.backend_start = $2 AND a.state <> 'idle'",
                &[&pid, &started],
            )
            .await;
        drop(client);
        task.abort();
        Ok::<_, ConnectError>(
            ended?
                .first()
                .and_then(|row| row.try_get::<_, bool>(0).ok())
                .unwrap_or(false),
        )
    };
    let terminated = tokio::time::timeout(SIDE_TIMEOUT, ending)
        .await
        .unwrap_or_else(|_| Err(timed_out()))?;
    if terminated {
        tracing::warn!(
            pid,
            "a session the host had let go of was still running a statement; terminated it"
        );
    }
    Ok(())
}

fn timed_out() -> ConnectError {
    ConnectError::Socket(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no answer within {SIDE_TIMEOUT:?}"),
    ))
}
