//! A component's RabbitMQ connection, kept alive by a supervisor task.
//!
//! Each component that publishes or subscribes has a connection of its own, logged in as its own
//! broker user: the broker checks the `user_id` its relay stamps on every event against that
//! login, and a protocol error that closes one connection (a frame too large, say) stops only
//! that component's relay and consumer until it reconnects, never another's. Within a
//! connection, the relay and the consumer each have a channel of their own.
//!
//! The supervisor connects, declares the durable topic exchange, and publishes the connection
//! to whoever waits for it (the component's relay and consumer). When the connection fails it
//! reconnects with a growing, jittered backoff capped at [`MAX_BACKOFF`]: a connection attempt
//! to a broker that is down costs it one refused TCP handshake, so trying about once a second
//! spares it while events flow again within about a second of its return. Replicas' jitter
//! keeps them from reconnecting in step. An outage is logged once when it starts and once when
//! it ends; meanwhile HTTP keeps serving and events wait in the outboxes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{AmqpUrl, MessagingConfig};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long closing the connection may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection attempt may take: a broker whose packets vanish must not stall the
/// reconnect loop.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One component's broker connection and what waits on it: built at start for a component that
/// publishes or subscribes, shared by `Arc` with its service, relay and consumer, and kept up
/// by [`Broker::supervise`] until shutdown.
pub struct Broker {
    /// The component it is the connection of.
    component: String,
    /// Its login: a user named after the component.
    url: AmqpUrl,
    /// The `[messaging]` settings: the exchange it declares, prefetch, retries, dead letters.
    config: MessagingConfig,
    /// The live connection, or `None` while there is none.
    current: watch::Sender<Option<Arc<Connection>>>,
    /// Why the broker is unreachable, while it is.
    down_because: Mutex<Option<String>>,
}

impl Broker {
    /// The connection of `component`, logging in with `url`; not connected until
    /// [`Broker::supervise`] runs.
    pub fn new(component: &str, url: AmqpUrl, config: MessagingConfig) -> Arc<Self> {
        let (current, _) = watch::channel(None);
        Arc::new(Self {
            component: component.to_owned(),
            url,
            config,
            current,
            down_because: Mutex::new(Some("not connected yet".into())),
        })
    }

    /// The `[messaging]` settings it was built with.
    pub fn config(&self) -> &MessagingConfig {
        &self.config
    }

    /// The broker user the connection logs in as: the `user_id` of every event it publishes.
    pub fn user(&self) -> &str {
        self.url.user()
    }

    /// The live connection, if there is one now.
    pub fn connection(&self) -> Option<Arc<Connection>> {
        self.current
            .borrow()
            .clone()
            .filter(|connection| connection.status().connected())
    }

    /// Changes whenever a connection is made or lost: relays wake on it to catch up at once.
    pub fn changes(&self) -> watch::Receiver<Option<Arc<Connection>>> {
        self.current.subscribe()
    }

    /// Waits for a live connection; `None` once `shutdown` is cancelled.
    pub async fn connected(&self, shutdown: &CancellationToken) -> Option<Arc<Connection>> {
        let mut changes = self.current.subscribe();
        loop {
            if let Some(connection) = self.connection() {
                return Some(connection);
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return None },
                () = shutdown.cancelled() => return None,
                // A connection can die without the value changing; look again now and then.
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// How many messages each of `queues` holds now, read on a channel of its own within a
    /// second; `None` without a connection or an answer (a queue not made yet counts 0).
    pub async fn queue_depths(&self, queues: &[String]) -> Option<Vec<u32>> {
        let connection = self.connection()?;
        let read = async {
            let channel = connection.create_channel().await.ok()?;
            let mut depths = Vec::with_capacity(queues.len());
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            for queue in queues {
                match channel
                    .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                    .await
                {
                    Ok(declared) => depths.push(declared.message_count()),
                    // A refused passive declaration closes the channel: the rest are unknown.
                    Err(_) => return None,
                }
            }
            let _ = channel.close(200, "counted".into()).await;
            Some(depths)
        };
        tokio::time::timeout(Duration::from_secs(1), read)
            .await
            .ok()
            .flatten()
    }

    /// `Ok` while connected, or why not: for the readiness check.
    pub fn state(&self) -> Result<(), String> {
        match self.connection() {
            Some(_) => Ok(()),
            None => Err(self
                .lock_reason()
                .clone()
                .unwrap_or_else(|| "reconnecting".into())),
        }
    }

    fn lock_reason(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.down_because
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps a connection up until `shutdown`, then closes it.
    pub async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        let (url, component) = (&self.url, &self.component);
        let mut backoff = FIRST_BACKOFF;
        let mut outage_logged = false;
        loop {
            let attempt = tokio::select! {
                attempt = self.connect() => attempt,
                () = shutdown.cancelled() => return,
            };
            match attempt {
                Ok(connection) => {
                    if outage_logged {
                        tracing::info!(
                            %component,
                            broker = %url,
                            "broker reachable again; events flow"
                        );
                    } else {
                        tracing::info!(%component, broker = %url, "connected to the broker");
                    }
                    backoff = FIRST_BACKOFF;
                    *self.lock_reason() = None;
                    let connection = Arc::new(connection);
                    self.current.send_replace(Some(connection.clone()));
                    let reason = tokio::select! {
                        reason = Self::until_lost(&connection) => reason,
                        () = shutdown.cancelled() => {
                            self.current.send_replace(None);
                            let closing = connection.close(200, "host stopping".into());
                            if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
                                tracing::warn!(
                                    %component,
                                    broker = %url,
                                    "the broker did not acknowledge the close in time"
                                );
                            }
                            return;
                        }
                    };
                    self.current.send_replace(None);
                    tracing::warn!(
                        %component,
                        broker = %url,
                        reason = %reason,
                        "lost the broker; reconnecting, events wait in the outbox"
                    );
                    outage_logged = true;
                    *self.lock_reason() = Some(reason);
                }
                Err(err) => {
                    let reason = err.to_string();
                    if !outage_logged {
                        tracing::warn!(
                            %component,
                            broker = %url,
                            error = %reason,
                            "broker unreachable; HTTP keeps serving, events wait in the outbox, \
                             reconnecting with backoff"
                        );
                        outage_logged = true;
                    }
                    *self.lock_reason() = Some(reason);
                    tokio::select! {
                        () = tokio::time::sleep(jittered(backoff)) => {}
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("host-{}-{}", std::process::id(), self.component).into());
        let tls = lapin::tcp::OwnedTLSConfig {
            cert_chain: self.url.extra_ca().map(str::to_owned),
            ..lapin::tcp::OwnedTLSConfig::default()
        };
        let connecting = Connection::connect_with_config(
            self.url.expose(),
            properties,
            tls,
            lapin::runtime::default_runtime()?,
        );
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"))??;
        let channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                self.config.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(connection)
    }

    /// Completes with a reason when the connection fails.
    async fn until_lost(connection: &Connection) -> String {
        let mut events = connection.events_listener();
        let mut check = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(lapin::Event::Error(err)) => return err.to_string(),
                    Some(_) => {}
                    None => return "the connection closed".into(),
                },
                _ = check.tick() => {
                    if !connection.status().connected() {
                        return "the connection closed".into();
                    }
                }
            }
        }
    }
}

/// `backoff` give or take a quarter, at random.
fn jittered(backoff: Duration) -> Duration {
    backoff.mul_f64(0.75 + fastrand::f64() * 0.5)
}
