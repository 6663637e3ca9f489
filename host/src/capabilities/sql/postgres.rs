//! [`Database`] on PostgreSQL: one deadpool of tokio-postgres connections per component, built
//! once at start and shared by every store of that component.
//!
//! A transaction holds one pooled connection from its first statement to its end. Statements are
//! prepared once per connection (deadpool's statement cache) and always run with parameters.
//! A connection whose transaction was neither committed nor rolled back (the store was dropped
//! on a trap or a timeout) is detached from the pool and closed, which makes PostgreSQL roll it
//! back; it is never handed to the next request mid-transaction.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, TimeoutType, Timeouts};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::{Database, DatabaseError, Error, RowSet, Transaction, Value, convert};
use crate::config::DatabaseConfig;

/// How long a request waits for a free connection, or for a new one to be made.
const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// How long a readiness check waits for a free connection. A pool so busy that none frees up
/// in time is working, so that counts as up.
const PING_WAIT: Duration = Duration::from_secs(1);

/// Prepared statements kept per connection before the cache is emptied.
const MAX_CACHED_STATEMENTS: usize = 256;

pub struct PgDatabase {
    pool: Pool,
}

impl PgDatabase {
    /// Builds the pool; no connection is made until one is needed.
    pub fn new(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let mut pg = config.url.pg_config().clone();
        pg.connect_timeout(CONNECTION_WAIT);
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections)
            .wait_timeout(Some(CONNECTION_WAIT))
            .create_timeout(Some(CONNECTION_WAIT))
            .recycle_timeout(Some(CONNECTION_WAIT))
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Self { pool })
    }

    /// The pool itself, for host work on the component's database (the outbox relay).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn connection(&self) -> Result<Object, Error> {
        self.pool.get().await.map_err(|err| Error::Unavailable(pool_failed(err)))
    }
}

#[async_trait]
impl Database for PgDatabase {
    async fn begin(&self) -> Result<Box<dyn Transaction>, Error> {
        // Owned by the transaction before BEGIN is sent: if this future is dropped midway, the
        // transaction's drop detaches the connection instead of pooling it mid-transaction.
        let transaction = PgTransaction { client: Some(self.connection().await?) };
        // Stated, not assumed from the server's default: `ON CONFLICT` waits and the lookups
        // after it rely on each statement seeing what committed before it.
        transaction.client()?.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED").await.map_err(query_failed)?;
        Ok(Box::new(transaction))
    }

    async fn ping(&self) -> Result<(), String> {
        let timeouts = Timeouts { wait: Some(PING_WAIT), ..self.pool.timeouts() };
        let client = match self.pool.timeout_get(&timeouts).await {
            Ok(client) => client,
            Err(deadpool_postgres::PoolError::Timeout(TimeoutType::Wait)) => return Ok(()),
            Err(err) => return Err(pool_failed(err)),
        };
        client.simple_query("SELECT 1").await.map(drop).map_err(|err| err.to_string())
    }
}

struct PgTransaction {
    /// `None` once the transaction has ended.
    client: Option<Object>,
}

impl PgTransaction {
    fn client(&self) -> Result<&Object, Error> {
        self.client.as_ref().ok_or_else(|| Error::Unavailable("the transaction has ended".into()))
    }

    /// Prepares `statement` and converts `params` to the types it expects.
    async fn prepare(
        &self,
        statement: &str,
        params: &[Value],
    ) -> Result<(tokio_postgres::Statement, Vec<Box<dyn ToSql + Sync + Send>>), Error> {
        let client = self.client()?;
        let prepared = client.prepare_cached(statement).await.map_err(query_failed)?;
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

    /// Ends the transaction with `COMMIT` or `ROLLBACK`, returning the connection to the pool
    /// only when that worked (otherwise, or if cancelled, `Drop` detaches it).
    async fn end(&mut self, command: &str) -> Result<(), Error> {
        let Some(client) = &self.client else { return Ok(()) };
        client.batch_execute(command).await.map_err(query_failed)?;
        // Back to the pool, outside any transaction.
        drop(self.client.take());
        Ok(())
    }
}

#[async_trait]
impl Transaction for PgTransaction {
    async fn query(&mut self, statement: &str, params: Vec<Value>) -> Result<RowSet, Error> {
        let (prepared, params) = self.prepare(statement, &params).await?;
        let rows = self.client()?.query(&prepared, &refs(&params)).await.map_err(query_failed)?;
        convert::row_set(prepared.columns(), &rows)
    }

    async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<u64, Error> {
        let (prepared, params) = self.prepare(statement, &params).await?;
        self.client()?.execute(&prepared, &refs(&params)).await.map_err(query_failed)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), Error> {
        self.end("COMMIT").await
    }

    async fn rollback(mut self: Box<Self>) {
        if let Err(err) = self.end("ROLLBACK").await {
            tracing::warn!(error = ?err, "rollback failed; the connection was closed instead");
        }
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Closing the connection is PostgreSQL's rollback.
            drop(Object::take(client));
        }
    }
}

fn refs(params: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|param| param.as_ref() as &(dyn ToSql + Sync)).collect()
}

/// The one place a tokio-postgres error becomes the WIT `error`.
fn query_failed(err: tokio_postgres::Error) -> Error {
    match err.as_db_error() {
        Some(db) => Error::Database(DatabaseError {
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
            constraint: db.constraint().map(str::to_owned),
            column: db.column().map(str::to_owned),
            detail: db.detail().map(str::to_owned),
        }),
        None => Error::Unavailable(err.to_string()),
    }
}

fn pool_failed(err: deadpool_postgres::PoolError) -> String {
    match err {
        deadpool_postgres::PoolError::Backend(err) => err.to_string(),
        other => other.to_string(),
    }
}
