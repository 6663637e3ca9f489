//! `SystemTime` as RFC 3339 text in the admin API's JSON (`#[serde(with = "crate::rfc3339")]`),
//! to the millisecond, in UTC.

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// Writes `time` as `2026-01-31T12:00:00.123Z`.
pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer
        .serialize_str(&DateTime::<Utc>::from(*time).to_rfc3339_opts(SecondsFormat::Millis, true))
}
