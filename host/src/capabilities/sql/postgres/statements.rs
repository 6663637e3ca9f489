//! Requests on one connection, and the order they reach the server in: tokio-postgres sends a
//! request when its future is first polled, so statements prepared beforehand and polled in
//! order share one round trip (see [`pipeline`] and [`in_order`]).

use futures::{FutureExt, TryStreamExt};
use tokio_postgres::types::{FromSql, ToSql, Type};

use super::connection::Object;
use super::{MAX_CACHED_STATEMENTS, MAX_CACHED_TEXT, query_failed};
use crate::capabilities::sql::{Error, ParameterError, ResultBudget, RowSet, Value, convert};

/// A request to the server, sent when first polled.
pub(super) type Request<'a> = futures::future::BoxFuture<'a, Result<(), tokio_postgres::Error>>;

/// A statement prepared and its parameters converted and encoded once already, so that sending
/// it later cannot fail before it reaches the server.
pub(super) type Ready = (tokio_postgres::Statement, Vec<Box<dyn ToSql + Sync + Send>>);

/// Prepares `statement` on `client` and converts `params` to the types it expects.
pub(super) async fn prepare(
    client: &Object,
    statement: &str,
    params: &[Value],
) -> Result<Ready, Error> {
    let prepared = if statement.len() <= MAX_CACHED_TEXT {
        client.prepare_cached(statement).await
    } else {
        client.prepare(statement).await
    }
    .map_err(query_failed)?;
    if client.statement_cache.size() > MAX_CACHED_STATEMENTS {
        // A component that builds SQL text dynamically must not grow the cache forever.
        client.statement_cache.clear();
    }
    let expected = prepared.params();
    if expected.len() != params.len() {
        return Err(Error::WrongParameterCount(expected.len() as u32));
    }
    let converted = params
        .iter()
        .zip(expected)
        .enumerate()
        .map(|(index, (value, ty))| convert::to_sql(index, value, ty))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((prepared, converted))
}

/// Encodes each parameter once, as sending them will, so that a value the wire format refuses
/// is the statement's error now rather than a request that never reaches the server later.
pub(super) fn check_encoding((prepared, params): &Ready) -> Result<(), Error> {
    let mut scratch = bytes::BytesMut::new();
    for (index, (param, ty)) in params.iter().zip(prepared.params()).enumerate() {
        scratch.clear();
        param.to_sql_checked(ty, &mut scratch).map_err(|err| {
            Error::BadParameter(ParameterError {
                index: index as u32,
                message: err.to_string(),
            })
        })?;
    }
    Ok(())
}

/// Runs `requests` on one connection in one round trip, and returns their outcomes in order.
/// tokio-postgres sends a request when its future is first polled, and `join` polls its first
/// future before its second, so nesting the joins from the left sends them in order.
pub(super) async fn pipeline(requests: Vec<Request<'_>>) -> Vec<Result<(), tokio_postgres::Error>> {
    let mut all: futures::future::BoxFuture<'_, Vec<_>> =
        Box::pin(futures::future::ready(Vec::new()));
    for request in requests {
        all = Box::pin(
            futures::future::join(all, request).map(|(mut done, outcome)| {
                done.push(outcome);
                done
            }),
        );
    }
    all.await
}

/// Sends `BEGIN` (when still due), then the statement queued ahead (if any), then `statement`,
/// in one round trip; returns the outcome of the one ahead and `statement`'s. Both are prepared
/// already, so each is sent when first polled, in the order written here.
pub(super) async fn in_order<T>(
    client: &Object,
    begin: Option<String>,
    ahead: Option<Ready>,
    statement: impl Future<Output = Result<T, Error>>,
) -> (Option<Result<u64, Error>>, Result<T, Error>) {
    let begun = async {
        match &begin {
            Some(begin) => client.batch_execute(begin).await.map_err(query_failed),
            None => Ok(()),
        }
    };
    let before = async {
        match ahead {
            Some(ready) => Some(run(client, ready).await),
            None => None,
        }
    };
    // `join` polls its first future first: the requests go out in the order written here.
    let ((begun, ahead), result) =
        futures::future::join(futures::future::join(begun, before), statement).await;
    match begun {
        // Had `BEGIN` failed, the statements failed too (the connection is gone) or found no
        // transaction to run in: `BEGIN`'s error is the one that says why.
        Err(err) => (ahead.map(|_| Err(err.clone())), Err(err)),
        Ok(()) => (ahead, result),
    }
}

/// Runs a prepared statement that returns no rows; the rows it changed.
pub(super) async fn run(client: &Object, (prepared, params): Ready) -> Result<u64, Error> {
    client
        .execute(&prepared, &refs(&params))
        .await
        .map_err(query_failed)
}

/// Runs a query and collects its rows, each counted against `budget` from its columns' lengths
/// on the wire before it is converted; a row the budget refuses ends the query, and `refused`
/// says so (the caller closes the connection, which stops the server).
pub(super) async fn fetch(
    client: &Object,
    (prepared, params): Ready,
    budget: &mut ResultBudget,
    refused: &mut bool,
) -> Result<RowSet, Error> {
    let stream = client
        .query_raw(&prepared, refs(&params))
        .await
        .map_err(query_failed)?;
    futures::pin_mut!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.try_next().await.map_err(query_failed)? {
        if let Err(over) = budget.take(wire_size(&row)).await {
            *refused = true;
            return Err(over);
        }
        rows.push(convert::row(prepared.columns(), &row)?);
    }
    Ok(RowSet {
        columns: convert::column_names(prepared.columns()),
        rows,
    })
}

/// What a row will take once converted, from its columns' lengths as they came from the server:
/// each value's bytes (a uuid's text is longer than its 16 bytes; a numeric's digits take at
/// most about four times their packed size) and its place in the row.
fn wire_size(row: &tokio_postgres::Row) -> usize {
    (0..row.len())
        .map(|index| {
            let length = row
                .try_get::<_, WireLength>(index)
                .map_or(0, |length| length.0);
            let converted = match *row.columns()[index].type_() {
                Type::UUID => 36,
                Type::NUMERIC => length.saturating_mul(4),
                _ => length,
            };
            convert::VALUE_OVERHEAD + converted
        })
        .sum()
}

/// A column's length on the wire, read without converting it.
struct WireLength(usize);

impl<'a> FromSql<'a> for WireLength {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(raw.len()))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(0))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

pub(super) fn refs(params: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|param| param.as_ref() as &(dyn ToSql + Sync))
        .collect()
}
