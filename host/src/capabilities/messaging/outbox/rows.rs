//! Reading the outbox without trusting it: `platform_outbox` lies in the component's own
//! database, where its SQL may write anything, so every column's length is read first and a row
//! over a bound is never loaded at all.
//!
//! One statement locks a batch and returns, for each row, its columns' lengths
//! (`octet_length`, which PostgreSQL answers from a value's header without reading it) and its
//! values only when every length is within bounds (a value the component made NULL, having
//! dropped a constraint, is out of bounds too). A row is then [`Row::Pending`] (to publish)
//! or [`Row::Unsendable`] with a short reason: over a bound, or a topic the component may not
//! publish. Unsendable rows are marked so (`unsendable` holds the reason) in the batch's
//! transaction, and are never read again: the relay's index leaves them out.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::super::fresh::Event;

use super::super::{MAX_CONTENT_TYPE_BYTES, MAX_DATA_SCHEMA_BYTES, MAX_ID_BYTES};
use crate::capabilities::sql::Value;
use crate::telemetry::truncated;

/// Longest `traceparent` column the relay reads (a W3C one is 55 bytes).
const MAX_TRACEPARENT_BYTES: i32 = 256;

/// Longest topic column the relay reads (the manifest's topics are at most 200 bytes).
const MAX_TOPIC_BYTES: i32 = 200;

/// Locks up to `$1` unsent rows after `$2` written at least `$9` milliseconds ago, with their
/// lengths; `$3` to `$8` are the bounds of id, topic, content type, data schema, data and
/// traceparent ([`Bounds::params`]).
pub(super) const SELECT: &str = "\
SELECT o.seq, coalesce(o.created_at, now()), f.fits,
       coalesce(octet_length(o.id), -1), coalesce(octet_length(o.topic), -1),
       coalesce(octet_length(o.content_type), -1), coalesce(octet_length(o.data_schema), 0),
       coalesce(octet_length(o.data), -1), coalesce(octet_length(o.traceparent), 0),
       CASE WHEN f.fits THEN o.id END, CASE WHEN f.fits THEN o.topic END,
       CASE WHEN f.fits THEN o.content_type END, CASE WHEN f.fits THEN o.data_schema END,
       CASE WHEN f.fits THEN o.data END, CASE WHEN f.fits THEN o.traceparent END
FROM platform_outbox o,
     LATERAL (SELECT coalesce(octet_length(o.id) BETWEEN 1 AND $3
                 AND octet_length(o.topic) <= $4
                 AND octet_length(o.content_type) <= $5
                 AND coalesce(octet_length(o.data_schema), 0) <= $6
                 AND octet_length(o.data) <= $7
                 AND coalesce(octet_length(o.traceparent), 0) <= $8, false) AS fits) f
WHERE o.sent_at IS NULL AND o.unsendable IS NULL AND o.seq > $2
  AND coalesce(o.created_at, '-infinity') <= now() - $9::int * interval '1 millisecond'
ORDER BY o.seq LIMIT $1 FOR UPDATE OF o SKIP LOCKED";

/// The longest value of each column the relay reads, in bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    columns: [(&'static str, i32, i32); 6],
}

impl Bounds {
    /// The bounds of a component whose events carry at most `max_data` bytes of data.
    pub(super) fn new(max_data: usize) -> Self {
        let max_data = i32::try_from(max_data).unwrap_or(i32::MAX);
        Self {
            columns: [
                ("id", 1, MAX_ID_BYTES as i32),
                ("topic", 0, MAX_TOPIC_BYTES),
                ("content_type", 0, MAX_CONTENT_TYPE_BYTES as i32),
                ("data_schema", 0, MAX_DATA_SCHEMA_BYTES as i32),
                ("data", 0, max_data),
                ("traceparent", 0, MAX_TRACEPARENT_BYTES),
            ],
        }
    }

    /// `$3` to `$8` of [`SELECT`].
    pub(super) fn params(&self) -> [i32; 6] {
        self.columns.map(|(_, _, most)| most)
    }

    /// The most a batch of `rows` rows can hold, in bytes: every value at its bound, and
    /// what the answer carries beside.
    pub(super) fn batch_bytes(&self, rows: i64) -> usize {
        let row: usize = self
            .columns
            .iter()
            .map(|(_, _, most)| usize::try_from(*most).unwrap_or(usize::MAX))
            .fold(0, usize::saturating_add);
        row.saturating_mul(usize::try_from(rows).unwrap_or(1))
            .saturating_add(super::BATCH_OVERHEAD_BYTES)
    }
}

/// Marks rows sent: `$1` is a JSON array of their seqs.
pub(super) const MARK_SENT: &str = "UPDATE platform_outbox SET sent_at = now() \
     WHERE seq IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb))";

/// Marks the unsent rows of events sent from memory: `$1` is a JSON array of their ids (see
/// the `platform_outbox_pending_id` index).
pub(super) const MARK_SENT_IDS: &str = "UPDATE platform_outbox SET sent_at = now() \
     WHERE sent_at IS NULL AND unsendable IS NULL \
     AND id IN (SELECT value FROM jsonb_array_elements_text($1::jsonb))";

/// Sets rows aside for good: `$1` is a JSON array of `{"seq", "reason"}`.
pub(super) const MARK_UNSENDABLE: &str = "UPDATE platform_outbox o SET unsendable = u.reason \
     FROM jsonb_to_recordset($1::jsonb) AS u(seq bigint, reason text) WHERE o.seq = u.seq";

/// One row of the outbox, as the relay found it.
#[derive(Debug)]
pub(super) enum Row {
    Pending(Pending),
    Unsendable { seq: i64, reason: String },
}

/// A row to publish, every value within bounds.
#[derive(Debug)]
pub(super) struct Pending {
    pub seq: i64,
    pub event: Event,
}

impl Row {
    pub(super) fn seq(&self) -> i64 {
        match self {
            Self::Pending(pending) => pending.seq,
            Self::Unsendable { seq, .. } => *seq,
        }
    }
}

/// Reads one row of [`SELECT`]: what to publish, or why it never can be. An error means the
/// table is not what the host made (a column changed type or was dropped).
pub(super) fn classify(
    row: &[Value],
    topics: &HashSet<String>,
    bounds: &Bounds,
    component: &str,
) -> Result<Row, String> {
    let seq = int64(row, 0)?;
    let fits = matches!(row.get(2), Some(Value::Boolean(true)));
    if !fits {
        let mut reason = "a value is out of bounds".to_owned();
        for (index, (column, least, most)) in bounds.columns.iter().enumerate() {
            let length = match row.get(3 + index) {
                Some(Value::Int32(length)) => *length,
                other => return Err(unexpected(3 + index, other)),
            };
            if length < *least || length > *most {
                reason = format!("{column} is {length} bytes, not {least} to {most}");
                break;
            }
        }
        return Ok(Row::Unsendable { seq, reason });
    }
    let topic = text(row, 10)?;
    if !topics.contains(&topic) {
        let reason = format!(
            "topic {:?} is not one `{component}` publishes",
            truncated(&topic, 64)
        );
        return Ok(Row::Unsendable { seq, reason });
    }
    let created_at = match row.get(1) {
        Some(Value::Timestamp(micros)) => {
            DateTime::<Utc>::from_timestamp_micros(*micros).ok_or("created_at is out of range")?
        }
        other => return Err(unexpected(1, other)),
    };
    Ok(Row::Pending(Pending {
        seq,
        event: Event {
            id: text(row, 9)?,
            topic,
            content_type: text(row, 11)?,
            data_schema: optional_text(row, 12)?,
            data: match row.get(13) {
                Some(Value::Bytes(data)) => data.clone(),
                other => return Err(unexpected(13, other)),
            },
            traceparent: optional_text(row, 14)?,
            time: created_at,
        },
    }))
}

fn int64(row: &[Value], column: usize) -> Result<i64, String> {
    match row.get(column) {
        Some(Value::Int64(n)) => Ok(*n),
        other => Err(unexpected(column, other)),
    }
}

fn text(row: &[Value], column: usize) -> Result<String, String> {
    match row.get(column) {
        Some(Value::Text(text)) => Ok(text.clone()),
        other => Err(unexpected(column, other)),
    }
}

fn optional_text(row: &[Value], column: usize) -> Result<Option<String>, String> {
    match row.get(column) {
        Some(Value::Null) => Ok(None),
        _ => text(row, column).map(Some),
    }
}

/// Why a column of the outbox is not what the host made.
fn unexpected(column: usize, found: Option<&Value>) -> String {
    let found = match found {
        None => "nothing",
        Some(Value::Null) => "NULL",
        Some(_) => "a value of another type",
    };
    format!("column {column} of the relay's SELECT held {found}: platform_outbox was changed")
}
