//! A TCP proxy in front of the real PostgreSQL that a test can cut and restore, so one test can
//! take "its" database away without touching the server other tests share.
//!
//! While down, it closes every open connection and closes new ones as soon as they arrive, as
//! a host sees when the database server goes away.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct PgProxy {
    pub address: SocketAddr,
    up: watch::Sender<bool>,
    accepting: JoinHandle<()>,
}

impl PgProxy {
    /// Starts forwarding to `upstream` (host:port).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let (up, watching) = watch::channel(true);
        let upstream: Arc<str> = upstream.into();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut watching = watching.clone();
                if !*watching.borrow() {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&*upstream).await else { return };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watching.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { address, up, accepting }
    }

    /// A URL for `database` through the proxy.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@{}/{database}", self.address)
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
