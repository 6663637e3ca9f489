//! The state of a component's messaging tables, read for a metrics scrape: the outbox backlog
//! the relay has yet to send, the age of its oldest row, and the inbox's size.

use std::sync::Arc;

use crate::capabilities::sql::postgres::{Connector, Pool, abandon};
use crate::telemetry::metrics::MessagingSample;

/// How long a metrics scrape waits for the messaging tables' state.
const SAMPLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Unsent rows counted at most, so a scrape never counts a huge backlog row by row.
const SAMPLE_MAX_BACKLOG: i64 = 100_000;

/// The outbox backlog of `topics` (what the relay sends; capped at [`SAMPLE_MAX_BACKLOG`]),
/// the age of its oldest row, and the inbox's size (the statistics collector's live row count,
/// so no scan), in one round trip; `None` if the database does not answer within
/// [`SAMPLE_TIMEOUT`]. A query still running then is cancelled on the server and its
/// connection closed, not pooled.
pub async fn sample(
    pool: &Pool,
    connector: &Arc<Connector>,
    topics: &[String],
) -> Option<MessagingSample> {
    let deadline = tokio::time::Instant::now() + SAMPLE_TIMEOUT;
    let client = tokio::time::timeout_at(deadline, pool.get())
        .await
        .ok()?
        .ok()?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&topics, &SAMPLE_MAX_BACKLOG];
    let query = client.query_one(
        "SELECT (SELECT count(*) FROM (SELECT FROM platform_outbox \
                  WHERE sent_at IS NULL AND unsendable IS NULL AND topic = ANY($1) \
                  LIMIT $2) AS backlog), \
                COALESCE((SELECT extract(epoch FROM now() - created_at)::float8 \
                          FROM platform_outbox \
                          WHERE sent_at IS NULL AND unsendable IS NULL AND topic = ANY($1) \
                          ORDER BY seq LIMIT 1), 0), \
                COALESCE((SELECT n_live_tup FROM pg_stat_user_tables \
                          WHERE relid = 'platform_inbox'::regclass), 0), \
                (SELECT count(*) FROM (SELECT FROM platform_outbox \
                                       WHERE unsendable IS NOT NULL LIMIT $2) AS aside)",
        &params,
    );
    let row = match tokio::time::timeout_at(deadline, query).await {
        Ok(Ok(row)) => row,
        Ok(Err(_)) => return None,
        Err(_) => {
            abandon(client, connector);
            return None;
        }
    };
    Some(MessagingSample {
        outbox_backlog: row.get(0),
        outbox_oldest_age_seconds: row.get::<_, f64>(1).max(0.0),
        inbox_rows: row.get(2),
        outbox_unsendable: row.get(3),
    })
}
