//! The view of a store's [`SqlCtx`] that the generated `platform:service/sql` bindings call
//! into: each statement is checked against the component's limits and read (see
//! [`super::statement`]) before anything else, then runs in the unit of work under a client span
//! named after its operation, and its duration is counted in the component's metrics.

use std::time::Instant;

use tracing::Instrument;
use wasmtime::component::{HasData, Linker};

use super::{Error, RowSet, SqlCtx, Value};
use crate::bindings::sql::{self as wit};
use crate::telemetry::metrics::ComponentMetrics;
use crate::telemetry::truncated;

/// Longest statement text recorded on a span, in bytes: the guest writes the statement, and a
/// span waits in the export queue while the collector is slow.
const MAX_QUERY_TEXT: usize = 2048;

/// The view of a store's [`SqlCtx`] that the generated bindings call into.
pub struct Sql<'a> {
    ctx: &'a mut SqlCtx,
    metrics: &'a ComponentMetrics,
}

impl<'a> Sql<'a> {
    /// The view for one call from the guest, borrowing the store's context and the
    /// component's metrics for as long as the call lasts.
    pub fn new(ctx: &'a mut SqlCtx, metrics: &'a ComponentMetrics) -> Self {
        Self { ctx, metrics }
    }

    /// A client span for one statement, named after its operation (`SELECT`), with the
    /// statement's text (its parameters are never recorded).
    fn span(&self, statement: &str, operation: &'static str) -> tracing::Span {
        tracing::debug_span!(
            "sql",
            otel.name = operation,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            component = %self.metrics.name().0,
            db.system.name = "postgresql",
            db.operation.name = operation,
            db.query.text = %truncated(statement, MAX_QUERY_TEXT),
            db.response.returned_rows = tracing::field::Empty,
            db.response.affected_rows = tracing::field::Empty,
            db.response.status_code = tracing::field::Empty,
        )
    }
}

/// Marks a statement's span as failed, with the SQLSTATE when there is one.
fn record_failure(span: &tracing::Span, err: &Error) {
    span.record("otel.status_code", "error");
    if let Error::Database(db) = err {
        span.record("db.response.status_code", db.code.as_str());
    }
}

impl wit::Host for Sql<'_> {
    async fn query(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        // Checked before anything is done with it: the text may be up to the guest's memory.
        let checked = self.ctx.check(&statement);
        let operation = checked
            .as_ref()
            .map_or("OTHER", |checked| checked.operation());
        let span = self.span(&statement, operation);
        let started = Instant::now();
        let result = match checked {
            Ok(checked) => {
                self.ctx
                    .query(checked, params)
                    .instrument(span.clone())
                    .await
            }
            Err(refused) => Err(refused),
        };
        self.metrics
            .statement(operation, started.elapsed().as_secs_f64());
        match &result {
            Ok(rows) => {
                span.record("db.response.returned_rows", rows.rows.len() as u64);
            }
            Err(err) => record_failure(&span, err),
        }
        Ok(result)
    }

    async fn execute(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let checked = self.ctx.check(&statement);
        let operation = checked
            .as_ref()
            .map_or("OTHER", |checked| checked.operation());
        let span = self.span(&statement, operation);
        let started = Instant::now();
        let result = match checked {
            Ok(checked) => {
                self.ctx
                    .execute(checked, params)
                    .instrument(span.clone())
                    .await
            }
            Err(refused) => Err(refused),
        };
        self.metrics
            .statement(operation, started.elapsed().as_secs_f64());
        match &result {
            Ok(changed) => {
                span.record("db.response.affected_rows", *changed);
            }
            Err(err) => record_failure(&span, err),
        }
        Ok(result)
    }
}

struct HasSql;

impl HasData for HasSql {
    type Data<'a> = Sql<'a>;
}

/// Adds `platform:service/sql` to `linker`; `view` finds a store's [`SqlCtx`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Sql<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSql>(linker, view)
}
