//! What a metrics scrape reads from the host's state (instances, pools, the broker, the
//! messaging tables) before [`super::metrics::Metrics::encode`] writes it out.

use super::labels::Name;

/// What the scrape reads from the host's state: one per service.
pub struct Snapshot {
    /// The services the registry holds at the moment of the scrape, each read once.
    pub services: Vec<ServiceSnapshot>,
}

/// One component's state at a scrape, read by [`crate::service::Service::snapshot`] and
/// dropped once the metrics are written.
pub struct ServiceSnapshot {
    /// The component the values belong to: the `component` label of its series.
    pub component: Name,
    /// Instances of it alive now: one per unit of work running.
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

/// The state of one component's messaging tables, read in one round trip to its database.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagingSample {
    /// Outbox rows of its topics the relay has yet to send, counted up to a cap (100 000).
    pub outbox_backlog: i64,
    /// How long the oldest of those rows has waited, in seconds; 0 when there is none.
    pub outbox_oldest_age_seconds: f64,
    /// Rows in the inbox, as PostgreSQL's statistics estimate them (no scan).
    pub inbox_rows: i64,
    /// Outbox rows set aside as unsendable.
    pub outbox_unsendable: i64,
}
