//! What a metrics scrape reads from the host's state (instances, pools, the broker, the
//! messaging tables) before [`super::metrics::Metrics::encode`] writes it out.

use super::labels::Name;

/// What the scrape reads from the host's state: one per service.
pub struct Snapshot {
    pub services: Vec<ServiceSnapshot>,
}

pub struct ServiceSnapshot {
    pub component: Name,
    pub instances: u64,
    /// In use, idle, most: `None` without a pool.
    pub connections: Option<(usize, usize, usize)>,
    /// Whether its broker connection is up; `None` when it has none.
    pub broker_connected: Option<bool>,
    /// Per subscribed topic: messages in its dead-letter queue, and the most it holds; empty
    /// when they could not be read.
    pub dead_letters: Vec<(String, u32, u32)>,
    /// Unsent outbox rows, age of the oldest in seconds, inbox rows; `None` when the component
    /// uses no messaging or its database did not answer in time (the series are then left out).
    pub messaging: Option<MessagingSample>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MessagingSample {
    pub outbox_backlog: i64,
    pub outbox_oldest_age_seconds: f64,
    pub inbox_rows: i64,
    /// Outbox rows set aside as unsendable.
    pub outbox_unsendable: i64,
}
