//! Keeps the outbox and inbox from growing forever: sent outbox rows and inbox records older than
//! `messaging.retention_hours` are deleted, a bounded batch at a time, once an hour (and once
//! at start). One task per component that uses messaging; replicas doing the same work at once
//! only delete the same old rows.
//!
//! The retention must stay longer than any redelivery can come late (retry delays, a broker
//! outage), or a very late duplicate could be handled twice; the default is a week.

use std::time::Duration;

use crate::capabilities::sql::postgres::Pool;
use tokio_util::sync::CancellationToken;

/// How often old rows are looked for.
const EVERY: Duration = Duration::from_secs(3600);

/// Rows deleted per statement, so no delete holds locks for long.
const BATCH: i64 = 1000;

/// The pruning of one component's outbox and inbox: made at start for a component that uses
/// messaging, then run as a background task until shutdown.
pub struct Retention {
    component: String,
    pool: Pool,
    keep: Duration,
}

impl Retention {
    /// Prunes the tables of `component` through `pool`, keeping rows younger than `keep`.
    pub fn new(component: String, pool: Pool, keep: Duration) -> Self {
        Self {
            component,
            pool,
            keep,
        }
    }

    /// The component whose tables it prunes.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Prunes at once and then every hour until `shutdown`; a failure is logged and tried again
    /// an hour later.
    pub async fn run(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        loop {
            match self.prune().await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(
                        component = %self.component,
                        deleted,
                        "old outbox and inbox rows deleted"
                    )
                }
                Err(err) => {
                    tracing::warn!(
                        component = %self.component,
                        error = %err,
                        "pruning the outbox and inbox failed"
                    )
                }
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Deletes every row past the retention; how many.
    pub async fn prune(&self) -> anyhow::Result<u64> {
        let client = self.pool.get().await?;
        let seconds = self.keep.as_secs_f64();
        let mut deleted = 0;
        for statement in [
            "DELETE FROM platform_outbox WHERE seq IN (SELECT seq FROM platform_outbox \
             WHERE sent_at < now() - make_interval(secs => $1) LIMIT $2)",
            "DELETE FROM platform_inbox WHERE (source, event_id) IN \
             (SELECT source, event_id FROM platform_inbox \
             WHERE handled_at < now() - make_interval(secs => $1) LIMIT $2)",
        ] {
            loop {
                let count = client.execute(statement, &[&seconds, &BATCH]).await?;
                deleted += count;
                if count < BATCH as u64 {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}
