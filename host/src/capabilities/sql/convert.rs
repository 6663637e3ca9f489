//! Conversions between the WIT `value` and PostgreSQL types.
//!
//! A parameter is converted to the type the prepared statement expects when that loses nothing
//! (an `int32` for a `bigint`, a `text` for a `uuid`); anything else is a `bad-parameter` error
//! naming the parameter, before the statement is sent. A result column of a type the interface
//! does not carry is an `unsupported-type` error naming the column.

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Column, Row};

use super::{Error, ParameterError, Value};

type Param = Box<dyn ToSql + Sync + Send>;

/// Converts parameter `index` to what a statement expects for it (`ty`).
pub fn to_sql(index: usize, value: &Value, ty: &Type) -> Result<Param, Error> {
    let refuse = |message: String| {
        Error::BadParameter(ParameterError {
            index: index as u32,
            message,
        })
    };
    let mismatch = || refuse(format!("a {} cannot be sent as {ty}", kind(value)));
    let invalid =
        |what: &str, err: &dyn std::fmt::Display| refuse(format!("not a valid {what}: {err}"));
    let param: Param = match (value, ty) {
        (Value::Null, _) => Box::new(Null),
        (Value::Boolean(b), &Type::BOOL) => Box::new(*b),
        (Value::Int32(n), &Type::INT2) => {
            Box::new(i16::try_from(*n).map_err(|e| invalid("smallint", &e))?)
        }
        (Value::Int32(n), &Type::INT4) => Box::new(*n),
        (Value::Int32(n), &Type::INT8) => Box::new(i64::from(*n)),
        (Value::Int32(n), &Type::FLOAT8) => Box::new(f64::from(*n)),
        (Value::Int32(n), &Type::NUMERIC) => Box::new(Decimal::from(*n)),
        (Value::Int64(n), &Type::INT8) => Box::new(*n),
        (Value::Int64(n), &Type::INT4) => {
            Box::new(i32::try_from(*n).map_err(|e| invalid("integer", &e))?)
        }
        (Value::Int64(n), &Type::INT2) => {
            Box::new(i16::try_from(*n).map_err(|e| invalid("smallint", &e))?)
        }
        (Value::Int64(n), &Type::NUMERIC) => Box::new(Decimal::from(*n)),
        (Value::Float64(x), &Type::FLOAT8) => Box::new(*x),
        (Value::Float64(x), &Type::FLOAT4) => Box::new(*x as f32),
        (Value::Float64(x), &Type::NUMERIC) => {
            Box::new(Decimal::try_from(*x).map_err(|e| invalid("numeric", &e))?)
        }
        (
            Value::Text(s),
            &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME | &Type::UNKNOWN,
        ) => Box::new(s.clone()),
        (Value::Text(s) | Value::Uuid(s), &Type::UUID) => {
            Box::new(uuid::Uuid::parse_str(s).map_err(|e| invalid("uuid", &e))?)
        }
        (Value::Uuid(s), &Type::TEXT | &Type::VARCHAR) => Box::new(s.clone()),
        (Value::Text(s) | Value::Numeric(s), &Type::NUMERIC) => {
            Box::new(Decimal::from_str(s).map_err(|e| invalid("numeric", &e))?)
        }
        (Value::Text(s) | Value::Json(s), &Type::JSON | &Type::JSONB) => {
            // Checked, not built into a tree: a tree of a long array takes many times the text.
            serde_json::from_str::<serde::de::IgnoredAny>(s).map_err(|e| invalid("json", &e))?;
            Box::new(JsonText(s.clone()))
        }
        (Value::Json(s), &Type::TEXT) => Box::new(s.clone()),
        (Value::Bytes(b), &Type::BYTEA) => Box::new(b.clone()),
        (Value::Timestamp(micros), &Type::TIMESTAMPTZ) => {
            Box::new(timestamp(*micros).map_err(refuse)?)
        }
        (Value::Timestamp(micros), &Type::TIMESTAMP) => {
            Box::new(timestamp(*micros).map_err(refuse)?.naive_utc())
        }
        _ => return Err(mismatch()),
    };
    Ok(param)
}

/// Converts one result row, column by column.
pub fn row(columns: &[Column], row: &Row) -> Result<Vec<Value>, Error> {
    columns
        .iter()
        .enumerate()
        .map(|(index, column)| from_sql(row, index, column))
        .collect()
}

/// The names of a result's columns.
pub fn column_names(columns: &[Column]) -> Vec<String> {
    columns
        .iter()
        .map(|column| column.name().to_owned())
        .collect()
}

/// What a value takes in the host beside its bytes: its place in a row or parameter list.
pub const VALUE_OVERHEAD: usize = std::mem::size_of::<Value>();

/// About how many bytes `value` takes in the host.
pub fn size(value: &Value) -> usize {
    VALUE_OVERHEAD
        + match value {
            Value::Text(text) | Value::Uuid(text) | Value::Numeric(text) | Value::Json(text) => {
                text.len()
            }
            Value::Bytes(bytes) => bytes.len(),
            _ => 0,
        }
}

fn from_sql(row: &Row, index: usize, column: &Column) -> Result<Value, Error> {
    let unsupported = |detail: String| {
        Error::UnsupportedType(format!(
            "column {:?} ({}): {detail}",
            column.name(),
            column.type_()
        ))
    };
    // Reads the column as `Option<T>`, NULL becoming `Value::Null`.
    macro_rules! read {
        ($t:ty, $wrap:expr) => {
            match row.try_get::<_, Option<$t>>(index) {
                Ok(Some(v)) => Ok($wrap(v)),
                Ok(None) => Ok(Value::Null),
                Err(err) => Err(unsupported(err.to_string())),
            }
        };
    }
    match *column.type_() {
        Type::BOOL => read!(bool, Value::Boolean),
        Type::INT2 => read!(i16, |v| Value::Int32(i32::from(v))),
        Type::INT4 => read!(i32, Value::Int32),
        Type::INT8 => read!(i64, Value::Int64),
        Type::FLOAT4 => read!(f32, |v| Value::Float64(f64::from(v))),
        Type::FLOAT8 => read!(f64, Value::Float64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => read!(String, Value::Text),
        Type::BYTEA => read!(Vec<u8>, Value::Bytes),
        Type::UUID => read!(uuid::Uuid, |v: uuid::Uuid| Value::Uuid(
            v.hyphenated().to_string()
        )),
        Type::TIMESTAMPTZ => read!(DateTime<Utc>, |v: DateTime<Utc>| Value::Timestamp(
            v.timestamp_micros()
        )),
        Type::TIMESTAMP => {
            read!(NaiveDateTime, |v: NaiveDateTime| Value::Timestamp(
                v.and_utc().timestamp_micros()
            ))
        }
        Type::NUMERIC => read!(Decimal, |v: Decimal| Value::Numeric(v.to_string())),
        Type::JSON | Type::JSONB => read!(JsonText, |v: JsonText| Value::Json(v.0)),
        _ => Err(unsupported(
            "not carried by the sql interface; cast it in SQL, e.g. `::text`".into(),
        )),
    }
}

fn timestamp(micros: i64) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| format!("timestamp {micros} is out of range"))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int32(_) => "int32",
        Value::Int64(_) => "int64",
        Value::Float64(_) => "float64",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytes",
        Value::Uuid(_) => "uuid",
        Value::Timestamp(_) => "timestamp",
        Value::Numeric(_) => "numeric",
        Value::Json(_) => "json",
    }
}

/// JSON as its text, both ways: `jsonb`'s binary form is a version byte (1) and the text, so
/// neither direction builds a tree of the value.
#[derive(Debug)]
struct JsonText(String);

impl ToSql for JsonText {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }

    to_sql_checked!();
}

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = match (ty, raw.split_first()) {
            (&Type::JSONB, Some((1, text))) => text,
            (&Type::JSONB, _) => return Err("unknown jsonb version".into()),
            _ => raw,
        };
        Ok(Self(std::str::from_utf8(text)?.to_owned()))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

/// SQL NULL for a parameter of any type.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _ty: &Type,
        _out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}
