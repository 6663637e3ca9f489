//! Keeps the outbox and inbox from growing forever: sent outbox rows and inbox records older than
//! `messaging.retention_hours` are deleted, a bounded batch at a time, a minute after start (so
//! a host starting under load, or many starting at once, do not begin with deletes) and then
//! once an hour. One task per component that uses messaging; replicas doing the same work at once
//! only delete the same old rows.
//!
//! The retention must stay longer than any redelivery can come late (retry delays, a broker
//! outage), or a very late duplicate could be handled twice; the default is a week.
//!
//! Its statements go through the component's [`Database`], each batch in a transaction of its
//! own, as a guest's would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::capabilities::sql::{self, Database, Value};

/// How often old rows are looked for.
const EVERY: Duration = Duration::from_secs(3600);

/// How long after start they are first looked for.
const FIRST_AFTER: Duration = Duration::from_secs(60);

/// Rows deleted per statement, so no delete holds locks for long.
const BATCH: i64 = 1000;

/// How long one batch may take.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The pruning of one component's outbox and inbox: made at start for a component that uses
/// messaging, then run as a background task until shutdown.
pub struct Retention {
    component: String,
    database: Arc<dyn Database>,
    keep: Duration,
}

impl Retention {
    /// Prunes the tables of `component` in `database`, keeping rows younger than `keep`.
    pub fn new(component: String, database: Arc<dyn Database>, keep: Duration) -> Self {
        Self {
            component,
            database,
            keep,
        }
    }

    /// The component whose tables it prunes.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Prunes a minute after start and then every hour until `shutdown`; a failure is logged
    /// and tried again an hour later.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::select! {
            () = tokio::time::sleep(FIRST_AFTER) => {}
            () = shutdown.cancelled() => return,
        }
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
    pub async fn prune(&self) -> Result<u64, String> {
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
                let params = vec![Value::Float64(seconds), Value::Int64(BATCH)];
                let count = self.delete(statement, params).await?;
                deleted += count;
                if count < BATCH as u64 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// Runs one batch's `DELETE` in a transaction of its own, within [`BATCH_TIMEOUT`]: the rows
    /// it deleted. Past the timeout the transaction is dropped, which cancels what still runs
    /// and closes its connection.
    async fn delete(&self, statement: &str, params: Vec<Value>) -> Result<u64, String> {
        let deadline = Instant::now() + BATCH_TIMEOUT;
        let described = |err: sql::Error| sql::describe(&err);
        let batch = async {
            let mut transaction = self.database.begin(deadline).await.map_err(described)?;
            let deleted = match transaction.execute(statement, params).await {
                Ok(deleted) => deleted,
                Err(err) => {
                    transaction.rollback().await;
                    return Err(described(err));
                }
            };
            transaction.commit().await.map_err(|err| match err {
                sql::CommitError::Failed(err) => sql::describe(&err),
                sql::CommitError::Unknown(why) => why,
            })?;
            Ok(deleted)
        };
        tokio::time::timeout_at(deadline.into(), batch)
            .await
            .map_err(|_| format!("a batch took longer than {BATCH_TIMEOUT:?}"))?
    }
}
