//! What a metrics scrape reads from the host's state (instances, pools, the broker, the
//! messaging tables) before [`super::metrics::Metrics::encode`] writes it out.

use super::labels::Name;

/// What the scrape reads from the host's state: one per service, plus the broker.
pub struct Snapshot {
    pub services: Vec<ServiceSnapshot>,
    /// `None` when the host has no broker.
    pub broker_connected: Option<bool>,
}

pub struct ServiceSnapshot {
    pub component: Name,
    pub instances: u64,
    /// In use, idle, most: `None` without a pool.
    pub connections: Option<(usize, usize, usize)>,
    /// Unsent outbox rows, age of the oldest in seconds, inbox rows; `None` when the component
    /// uses no messaging or its database did not answer in time (the series are then left out).
    pub messaging: Option<MessagingSample>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MessagingSample {
    pub outbox_backlog: i64,
    pub outbox_oldest_age_seconds: f64,
    pub inbox_rows: i64,
}
