//! Points in time as the services exchange them: microseconds since the Unix epoch (the
//! precision PostgreSQL keeps), written as RFC 3339 in UTC in JSON.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// A point in time, to the microsecond, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp(DateTime<Utc>);

/// Why a value is not a [`Timestamp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("is out of the representable range")]
    OutOfRange,
    #[error("must be an RFC 3339 date-time such as 2026-01-31T12:00:00Z")]
    NotRfc3339,
}

impl Timestamp {
    pub fn from_unix_micros(micros: i64) -> Result<Self, TimestampError> {
        DateTime::from_timestamp_micros(micros)
            .map(Self)
            .ok_or(TimestampError::OutOfRange)
    }

    pub fn unix_micros(self) -> i64 {
        self.0.timestamp_micros()
    }

    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let parsed = DateTime::parse_from_rfc3339(text).map_err(|_| TimestampError::NotRfc3339)?;
        // Keep the microsecond precision the rest of the system has.
        Self::from_unix_micros(parsed.timestamp_micros())
    }
}

impl TryFrom<String> for Timestamp {
    type Error = TimestampError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse_rfc3339(&text)
    }
}

impl From<Timestamp> for String {
    fn from(timestamp: Timestamp) -> String {
        timestamp.to_string()
    }
}

impl fmt::Display for Timestamp {
    /// `2026-01-31T12:00:00.123456Z`: always six fractional digits, always `Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Micros, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_prints_in_utc_with_microseconds() {
        let epoch = Timestamp::from_unix_micros(0).expect("in range");
        assert_eq!(epoch.to_string(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn micros_survive_a_round_trip_through_text() {
        let t = Timestamp::from_unix_micros(1_767_225_600_123_456).expect("in range");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Ok(t));
        assert_eq!(t.unix_micros(), 1_767_225_600_123_456);
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        let t = Timestamp::parse_rfc3339("2026-01-01T02:00:00+02:00").expect("valid");
        assert_eq!(t.to_string(), "2026-01-01T00:00:00.000000Z");
    }

    #[test]
    fn text_that_is_not_rfc3339_is_refused() {
        assert_eq!(
            Timestamp::parse_rfc3339("yesterday"),
            Err(TimestampError::NotRfc3339)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-01-01"),
            Err(TimestampError::NotRfc3339)
        );
    }
}
