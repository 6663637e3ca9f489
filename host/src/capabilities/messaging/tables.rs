//! The host's messaging tables read for operators: the state a metrics scrape samples (the
//! outbox backlog, the age of its oldest row, the inbox's size, the rows set aside) and the rows
//! the relay set aside as unsendable, which the admin API lists.
//!
//! They go through the component's [`Database`], as its guests' statements do, each in a
//! transaction of its own that is rolled back, bounded by [`READ_TIMEOUT`]: a read still running
//! then is dropped, which cancels it on the server and closes its connection.

use std::time::{Duration, Instant, SystemTime};

use crate::capabilities::sql::{self, Database, ResultBudget, RowSet, Value};
use crate::telemetry::metrics::MessagingSample;

/// How long a read of the messaging tables may take, from taking a connection to its answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Unsent rows counted at most, so a scrape never counts a huge backlog row by row.
const SAMPLE_MAX_BACKLOG: i64 = 100_000;

/// Bytes of an answer these reads take, at most: the longest listing the admin API asks for
/// (a thousand rows of about 1 KiB of values, up to 900 characters of text).
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// An outbox row the relay will never send, as the admin API lists it: its values cut short.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unsendable {
    /// Its place in the outbox.
    pub seq: i64,
    /// Its first 200 bytes.
    pub id: String,
    /// Its first 200 bytes.
    pub topic: String,
    /// Why the relay set it aside.
    pub reason: String,
    /// When the unit of work that published it committed.
    #[serde(with = "crate::rfc3339")]
    pub created_at: SystemTime,
    /// Bytes of its data.
    pub data_bytes: i64,
}

/// The outbox backlog of `topics` (what the relay sends; capped at [`SAMPLE_MAX_BACKLOG`]),
/// the age of its oldest row, the inbox's size (the statistics collector's live row count, so
/// no scan) and the rows set aside, in one statement; `None` if the database does not answer.
pub async fn sample(database: &dyn Database, topics: &[String]) -> Option<MessagingSample> {
    let topics = serde_json::to_string(topics).ok()?;
    let answer = read(
        database,
        "SELECT (SELECT count(*) FROM (SELECT FROM platform_outbox \
                  WHERE sent_at IS NULL AND unsendable IS NULL \
                  AND topic IN (SELECT jsonb_array_elements_text($1::jsonb)) \
                  LIMIT $2) AS backlog), \
                COALESCE((SELECT extract(epoch FROM now() - created_at)::float8 \
                          FROM platform_outbox \
                          WHERE sent_at IS NULL AND unsendable IS NULL \
                          AND topic IN (SELECT jsonb_array_elements_text($1::jsonb)) \
                          ORDER BY seq LIMIT 1), 0), \
                COALESCE((SELECT n_live_tup FROM pg_stat_user_tables \
                          WHERE relid = 'platform_inbox'::regclass), 0), \
                (SELECT count(*) FROM (SELECT FROM platform_outbox \
                                       WHERE unsendable IS NOT NULL LIMIT $2) AS aside)",
        vec![Value::Json(topics), Value::Int64(SAMPLE_MAX_BACKLOG)],
    )
    .await
    .ok()?;
    match answer.rows.first().map(Vec::as_slice) {
        Some(
            [
                Value::Int64(backlog),
                Value::Float64(age),
                Value::Int64(inbox),
                Value::Int64(aside),
            ],
        ) => Some(MessagingSample {
            outbox_backlog: *backlog,
            outbox_oldest_age_seconds: age.max(0.0),
            inbox_rows: *inbox,
            outbox_unsendable: *aside,
        }),
        _ => None,
    }
}

/// Up to `limit` outbox rows the relay set aside as unsendable, oldest first.
pub async fn unsendable(database: &dyn Database, limit: i64) -> Result<Vec<Unsendable>, String> {
    let answer = read(
        database,
        "SELECT seq, left(id, 200), left(topic, 200), left(unsendable, 500), created_at, \
         octet_length(data)::int8 FROM platform_outbox WHERE unsendable IS NOT NULL \
         ORDER BY seq LIMIT $1",
        vec![Value::Int64(limit)],
    )
    .await?;
    answer
        .rows
        .into_iter()
        .map(|row| match <[Value; 6]>::try_from(row) {
            Ok(
                [
                    Value::Int64(seq),
                    Value::Text(id),
                    Value::Text(topic),
                    Value::Text(reason),
                    Value::Timestamp(micros),
                    Value::Int64(data_bytes),
                ],
            ) => Ok(Unsendable {
                seq,
                id,
                topic,
                reason,
                created_at: SystemTime::UNIX_EPOCH
                    + Duration::from_micros(u64::try_from(micros).unwrap_or_default()),
                data_bytes,
            }),
            other => Err(format!(
                "an unsendable row of an unexpected shape: {other:?}"
            )),
        })
        .collect()
}

/// Runs `statement` in a transaction of its own, rolled back after it, within [`READ_TIMEOUT`].
async fn read(
    database: &dyn Database,
    statement: &str,
    params: Vec<Value>,
) -> Result<RowSet, String> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let work = async {
        let mut transaction = database
            .begin(deadline)
            .await
            .map_err(|err| sql::describe(&err))?;
        let mut budget = ResultBudget::for_host(MAX_ANSWER_BYTES);
        let rows = transaction.query(statement, params, &mut budget).await;
        transaction.rollback().await;
        rows.map_err(|err| sql::describe(&err))
    };
    tokio::time::timeout_at(deadline.into(), work)
        .await
        .map_err(|_| format!("the database did not answer within {READ_TIMEOUT:?}"))?
}
