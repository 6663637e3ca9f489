//! Reading typed values out of `sql` rows. Each reader names the column it expected, so a row
//! that does not match the schema says where.

use contracts::{Amount, Timestamp};

use crate::sql::Value;

/// A column that is not what the code expects: a schema mismatch, not the client's fault.
#[derive(Debug)]
pub struct BadColumn(pub String);

impl std::fmt::Display for BadColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected value in column {}", self.0)
    }
}

/// Takes the row's values, checking their count.
pub fn columns<const N: usize>(row: Vec<Value>) -> Result<[Value; N], BadColumn> {
    row.try_into()
        .map_err(|row: Vec<Value>| BadColumn(format!("count ({} of {N})", row.len())))
}

pub fn id<T: std::str::FromStr>(value: Value, column: &str) -> Result<T, BadColumn> {
    match value {
        Value::Uuid(text) => text.parse().map_err(|_| BadColumn(column.into())),
        _ => Err(BadColumn(column.into())),
    }
}

pub fn optional_id<T: std::str::FromStr>(
    value: Value,
    column: &str,
) -> Result<Option<T>, BadColumn> {
    match value {
        Value::Null => Ok(None),
        other => id(other, column).map(Some),
    }
}

pub fn amount(value: Value, column: &str) -> Result<Amount, BadColumn> {
    match value {
        Value::Int64(units) => Amount::new(units).map_err(|_| BadColumn(column.into())),
        _ => Err(BadColumn(column.into())),
    }
}

pub fn text(value: Value, column: &str) -> Result<String, BadColumn> {
    match value {
        Value::Text(text) => Ok(text),
        _ => Err(BadColumn(column.into())),
    }
}

/// A text column parsed into a value of its own type (a status enum).
pub fn parsed<T: std::str::FromStr>(value: Value, column: &str) -> Result<T, BadColumn> {
    text(value, column)?
        .parse()
        .map_err(|_| BadColumn(column.into()))
}

pub fn timestamp(value: Value, column: &str) -> Result<Timestamp, BadColumn> {
    match value {
        Value::Timestamp(micros) => {
            Timestamp::from_unix_micros(micros).map_err(|_| BadColumn(column.into()))
        }
        _ => Err(BadColumn(column.into())),
    }
}

/// Why a store could not answer.
#[derive(Debug)]
pub enum StoreError {
    /// The database is down or unreachable: worth retrying.
    Unavailable(String),
    /// Anything else: a bug or a schema that does not match.
    Failed(String),
}

impl From<crate::sql::Error> for StoreError {
    fn from(err: crate::sql::Error) -> Self {
        match err {
            crate::sql::Error::Unavailable(why) => Self::Unavailable(why),
            other => Self::Failed(format!("{other:?}")),
        }
    }
}

impl From<BadColumn> for StoreError {
    fn from(err: BadColumn) -> Self {
        Self::Failed(err.to_string())
    }
}
