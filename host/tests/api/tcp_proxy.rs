//! A TCP proxy in front of a real server (PostgreSQL, RabbitMQ) that a test can cut and
//! restore, so one test can take "its" database or broker away without touching the server other
//! tests share.
//!
//! While down, it closes every open connection and closes new ones as soon as they arrive, as
//! a host sees when the server goes away.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct TcpProxy {
    pub address: SocketAddr,
    up: watch::Sender<bool>,
    accepting: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding to `upstream` (host:port).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
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
                    let Ok(server) = TcpStream::connect(&*upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watching.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self {
            address,
            up,
            accepting,
        }
    }

    /// A PostgreSQL URL through the proxy for `database`, as the role of the same name (the
    /// test databases' owners are named after them).
    pub fn postgres_url(&self, database: &str) -> String {
        format!("postgres://{database}@{}/{database}", self.address)
    }

    /// An AMQP URL for the default vhost through the proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.address)
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
