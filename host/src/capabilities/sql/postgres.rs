//! [`Database`] on PostgreSQL: one deadpool of tokio-postgres connections per component, built
//! once at start and shared by every store of that component.
//!
//! A transaction holds one pooled connection from its first statement to its end. Statements are
//! prepared once per connection (deadpool's statement cache) and always run with parameters.
//!
//! Round trips: `BEGIN` goes out with the unit of work's first statement, and statements whose
//! result nobody reads before the commit (outbox inserts, [`Transaction::defer`]) go out with
//! `COMMIT` and the session reset. A unit of work that inserts a row and publishes an event
//! takes two round trips. Pipelining cannot weaken the transaction: PostgreSQL runs the requests
//! of a connection in the order they were sent, a statement after a failed `BEGIN` batch finds
//! the transaction aborted, and `COMMIT` after a failed statement rolls back.
//!
//! Bounds, so that no guest can make the server or the host outlive its unit of work:
//! - the server has deadlines of its own, as a backstop (the cancel below does not depend on
//!   them): every connection starts with `statement_timeout` and
//!   `idle_in_transaction_session_timeout` at the longest a unit of work may take (plus a
//!   margin), set once in its startup packet; only a transaction given longer than that (the
//!   host's own batches) sets its own with `SET LOCAL`, in its `BEGIN`'s round trip;
//! - a connection whose transaction was neither committed nor rolled back (the store was
//!   dropped at the deadline) has its running statement cancelled on the server, and is then
//!   detached from the pool and closed, which rolls it back; it is never pooled mid-transaction;
//!   should its session still run a statement a moment later (a lost cancel, a timeout lifted
//!   by dynamic SQL), it is terminated from another connection (see [`connection::abandon`]);
//! - `COMMIT` and `ROLLBACK` get [`END_TIMEOUT`];
//! - no message the server sends is read past the connection's limit (see [`wire`]), and a
//!   query's rows are counted from their lengths on the wire as they arrive, against
//!   `max_result_bytes` and the component's share of host memory, before they are converted: one
//!   past either cancels the query;
//! - nothing of one unit of work reaches the next on the same connection. Most statements leave
//!   nothing behind their transaction (settings made with `SET LOCAL` end with it); one that
//!   may (a [`Residue`]: a cursor `WITH HOLD`, a temporary table, a session advisory lock, DDL)
//!   has its connection cleaned as the transaction ends, in the same round trip (settings
//!   reset, advisory locks released, temporary tables dropped), and pooled only when that
//!   worked. So is every connection of a database that stores code statements may run without
//!   naming it (functions, triggers, rules, or views, defaults, checks, indexes or policies
//!   that call what leaves session state), as [`Database::schema_changed`] finds after its
//!   migrations, and of one whose schema a unit of work changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool::managed::{PoolError, TimeoutType, Timeouts};

use super::{
    CommitError, Database, DatabaseError, Error, Residue, ResultBudget, RowSet, Transaction, Value,
};
use crate::config::DatabaseConfig;
use crate::telemetry::truncated;

pub mod connection;
mod statements;
pub mod wire;

pub use connection::{ConnectError, Connector, Object, PgConn, Pool, abandon};
use statements::{Ready, Request, check_encoding, fetch, in_order, pipeline, prepare, refs, run};

/// How long making a new connection may take (and checking a pooled one before reuse). A free
/// connection is waited for until the unit of work's deadline instead: a pool whose connections
/// are all busy is a queue, not an outage.
const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// How long a readiness check waits for a free connection. A pool so busy that none frees up
/// in time is working, so that counts as up.
const PING_WAIT: Duration = Duration::from_secs(1);

/// Prepared statements kept per connection before the cache is emptied.
const MAX_CACHED_STATEMENTS: usize = 256;

/// Longest statement text kept in a connection's cache of prepared statements: a longer one is
/// prepared for its one use, so the cache holds at most a megabyte of text per connection.
const MAX_CACHED_TEXT: usize = 4096;

/// Room a connection leaves for a message beyond the largest result or event it carries.
const MESSAGE_SLACK: usize = 64 * 1024;

/// Whether a database stores code that statements may run without naming it and that could
/// leave session state: a function, procedure, trigger or rule of its own (not an extension's),
/// or a view, column default, check, index expression or row policy that calls something in
/// [`statement`](super::statement)'s list, `set_config` or `dblink`. One statement, so a
/// migration added later is seen on the next look.
const STORED_CODE: &str = "\
SELECT EXISTS (
    SELECT FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                      AND d.objid = p.oid AND d.deptype = 'e'))
 OR EXISTS (SELECT FROM pg_trigger WHERE NOT tgisinternal)
 OR EXISTS (SELECT FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE r.rulename <> '_RETURN' AND n.nspname NOT IN ('pg_catalog', 'information_schema'))
 OR EXISTS (
    SELECT FROM (
        SELECT definition FROM pg_views
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
        UNION ALL SELECT definition FROM pg_matviews
        UNION ALL SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef
        UNION ALL SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
            JOIN pg_namespace n ON n.oid = c.connamespace
            WHERE c.contype = 'c' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        UNION ALL SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indexprs IS NOT NULL
        UNION ALL SELECT concat(pg_get_expr(polqual, polrelid), ' ',
                                pg_get_expr(polwithcheck, polrelid))
            FROM pg_policy
    ) stored (code)
    WHERE code ~* '(set_config|advisory_lock|dblink|currval|lastval|pg_temp|temporary)')";

/// Undoes whatever session state a unit of work could leave on its connection:
/// `set_config(.., false)`, cursors `WITH HOLD`, session advisory locks, temporary tables,
/// sequence state. Sent right behind `COMMIT` or `ROLLBACK`, in the same round trip. Prepared
/// statements stay.
const RESET_SESSION: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
                             SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// How far past a unit of work's deadline the server's own statement and idle timeouts are set.
const SERVER_TIMEOUT_MARGIN: Duration = Duration::from_millis(250);

/// How long `COMMIT` or `ROLLBACK` may take before the connection is given up.
const END_TIMEOUT: Duration = Duration::from_secs(5);

/// Deferred statements held back at most; more are sent at once, in one round trip, so a unit of
/// work that publishes thousands of events does not build one enormous pipeline.
const MAX_DEFERRED: usize = 64;

/// One component's database on PostgreSQL: its pool of connections, built at start and shared
/// by `Arc` by the component's service and every store of it.
pub struct PgDatabase {
    pool: Pool,
    /// Makes the pool's connections, and the connections that cancel or end their sessions.
    connector: Arc<Connector>,
    /// Whether every connection is reset as its unit of work ends, whatever its statements
    /// were: until [`Database::schema_changed`] has looked, when it found stored code, and
    /// after a unit of work changed the schema.
    reset_always: Arc<AtomicBool>,
    /// The server's `statement_timeout` and `idle_in_transaction_session_timeout` on every
    /// connection, from its startup packet.
    session_timeout: Duration,
}

impl PgDatabase {
    /// Builds the pool; no connection is made until one is needed. A connection reads no
    /// message longer than `largest_value` bytes (the component's `max_result_bytes` or
    /// `max_event_bytes`, whichever is larger), plus a little room; its server-side timeouts
    /// are `unit_timeout` (the longest a unit of work may take) and a margin.
    pub fn new(
        config: &DatabaseConfig,
        largest_value: usize,
        unit_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut pg = config.url.pg_config().clone();
        pg.connect_timeout(CONNECTION_WAIT);
        let session_timeout = unit_timeout + SERVER_TIMEOUT_MARGIN;
        let millis = session_timeout.as_millis();
        let options = format!(
            "{} -c statement_timeout={millis} -c idle_in_transaction_session_timeout={millis}",
            pg.get_options().unwrap_or_default()
        );
        pg.options(options.trim_start());
        let limit = largest_value.saturating_add(MESSAGE_SLACK);
        let connector = Arc::new(Connector::new(
            pg,
            config.url.tls().connector().clone(),
            limit,
        ));
        let pool = Pool::builder(connection::PgManager::new(connector.clone()))
            .max_size(config.max_connections)
            .wait_timeout(Some(CONNECTION_WAIT))
            .create_timeout(Some(CONNECTION_WAIT))
            .recycle_timeout(Some(CONNECTION_WAIT))
            .runtime(deadpool::Runtime::Tokio1)
            .build()?;
        Ok(Self {
            pool,
            connector,
            reset_always: Arc::new(AtomicBool::new(true)),
            session_timeout,
        })
    }

    /// A pooled connection, waiting for one to come free until `deadline` at the latest.
    async fn connection(&self, deadline: Instant) -> Result<Object, Error> {
        let timeouts = Timeouts {
            wait: Some(deadline.saturating_duration_since(Instant::now())),
            ..self.pool.timeouts()
        };
        self.pool
            .timeout_get(&timeouts)
            .await
            .map_err(|err| Error::Unavailable(pool_failed(err)))
    }
}

#[async_trait]
impl Database for PgDatabase {
    async fn begin(&self, deadline: Instant) -> Result<Box<dyn Transaction>, Error> {
        // Owned by the transaction before BEGIN is sent: if it is dropped midway, its drop
        // detaches the connection instead of pooling it mid-transaction.
        Ok(Box::new(PgTransaction {
            client: Some(self.connection(deadline).await?),
            begin: Some(deadline),
            session_timeout: self.session_timeout,
            reset: false,
            reset_always: self.reset_always.clone(),
            deferred: Vec::new(),
            ahead: None,
            ahead_outcome: None,
            connector: self.connector.clone(),
            ended: false,
            used: false,
        }))
    }

    async fn ping(&self) -> Result<(), String> {
        let timeouts = Timeouts {
            wait: Some(PING_WAIT),
            ..self.pool.timeouts()
        };
        let client = match self.pool.timeout_get(&timeouts).await {
            Ok(client) => client,
            Err(PoolError::Timeout(TimeoutType::Wait)) => return Ok(()),
            Err(err) => return Err(pool_failed(err)),
        };
        client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|err| err.to_string())
    }

    fn connections(&self) -> Option<(usize, usize, usize)> {
        let status = self.pool.status();
        Some((
            status.size.saturating_sub(status.available),
            status.available,
            status.max_size,
        ))
    }

    fn schema_changing(&self) {
        self.reset_always.store(true, Ordering::SeqCst);
    }

    async fn schema_changed(&self) {
        // Reset until the answer is in: a unit of work that runs meanwhile is cleaned after.
        self.schema_changing();
        let looked = async {
            let client = self.pool.get().await.map_err(pool_failed)?;
            let row = client
                .query_one(STORED_CODE, &[])
                .await
                .map_err(|err| err.to_string())?;
            row.try_get::<_, bool>(0).map_err(|err| err.to_string())
        };
        match looked.await {
            Ok(stored) => self.reset_always.store(stored, Ordering::SeqCst),
            Err(err) => tracing::warn!(
                error = %err,
                "cannot look at the database's stored code; every connection is reset after its \
                 unit of work"
            ),
        }
    }
}

struct PgTransaction {
    /// `None` once the transaction has ended.
    client: Option<Object>,
    /// The unit of work's deadline while `BEGIN` has not been sent: it goes with the next
    /// request.
    begin: Option<Instant>,
    /// The server's timeouts on the connection, from its startup packet.
    session_timeout: Duration,
    /// A statement was sent that may leave session state: the connection is reset as the
    /// transaction ends.
    reset: bool,
    /// The database's [`PgDatabase::reset_always`].
    reset_always: Arc<AtomicBool>,
    /// Statements to send with the commit (see [`Transaction::defer`]).
    deferred: Vec<Ready>,
    /// A statement to send just ahead of the next one (see [`Transaction::ahead`]), and then
    /// its outcome.
    ahead: Option<(String, Vec<Value>)>,
    ahead_outcome: Option<Result<u64, Error>>,
    connector: Arc<Connector>,
    /// `COMMIT` or `ROLLBACK` was answered: nothing runs on the connection any more.
    ended: bool,
    /// Something was asked of the connection (a statement prepared) before `BEGIN` was sent:
    /// dropped midway, it may still be answering, so it is not pooled.
    used: bool,
}

impl PgTransaction {
    fn client(&self) -> Result<&Object, Error> {
        self.client
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the transaction has ended".into()))
    }

    /// The `BEGIN` batch, when it has not been sent yet.
    fn take_begin(&mut self) -> Option<String> {
        let deadline = self.begin.take()?;
        // A little past the deadline: the host ends the unit of work at the deadline and cancels
        // what is running; the server's own timeouts are the backstop should that cancel be lost.
        let left = deadline.saturating_duration_since(Instant::now()) + SERVER_TIMEOUT_MARGIN;
        // READ COMMITTED is stated, not assumed from the server's default: `ON CONFLICT` waits
        // and the lookups after it rely on each statement seeing what committed before it.
        const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
        if left <= self.session_timeout {
            // The session's own timeouts are the backstop.
            return Some(BEGIN.to_owned());
        }
        let left = left.as_millis();
        Some(format!(
            "{BEGIN}; SET LOCAL statement_timeout = {left}; \
             SET LOCAL idle_in_transaction_session_timeout = {left}"
        ))
    }

    /// Prepares the statement queued ahead, if any, and `statement`, before anything of either is
    /// sent: a prepared statement's execution goes out at once, an unprepared one's only once its
    /// `Parse` is answered, so only prepared statements keep the order they are sent in. When
    /// the one ahead cannot be prepared or encoded, that is its outcome and nothing is sent;
    /// when `statement` cannot, the one ahead stays queued.
    async fn prepare_in_order(
        &mut self,
        statement: &str,
        params: &[Value],
    ) -> Result<(Option<Ready>, Ready), Error> {
        let ahead = self.ahead.take();
        self.used = true;
        let client = self.client()?;
        let before = async {
            let (statement, params) = ahead.as_ref()?;
            Some(
                prepare(client, statement, params)
                    .await
                    .and_then(|ready| check_encoding(&ready).map(|()| ready)),
            )
        };
        let (before, ready) =
            futures::future::join(before, prepare(client, statement, params)).await;
        let before = match before.transpose() {
            Ok(before) => before,
            Err(err) => {
                self.ahead_outcome = Some(Err(err.clone()));
                return Err(err);
            }
        };
        match ready {
            Ok(ready) => Ok((before, ready)),
            Err(err) => {
                self.ahead = ahead;
                Err(err)
            }
        }
    }

    /// The requests that send `BEGIN`, when it is still due, and the deferred statements; nothing
    /// is sent until they are polled.
    fn due_requests<'a>(
        client: &'a Object,
        begin: Option<String>,
        deferred: Vec<Ready>,
    ) -> Vec<Request<'a>> {
        let mut requests: Vec<Request<'a>> = Vec::with_capacity(deferred.len() + 3);
        if let Some(begin) = begin {
            requests.push(Box::pin(async move { client.batch_execute(&begin).await }));
        }
        for (prepared, params) in deferred {
            requests.push(Box::pin(async move {
                client.execute(&prepared, &refs(&params)).await.map(drop)
            }));
        }
        requests
    }

    /// Sends `BEGIN` if it is still due and the deferred statements, in one round trip.
    async fn flush(&mut self) -> Result<(), Error> {
        let (begin, deferred) = (self.take_begin(), std::mem::take(&mut self.deferred));
        let client = self.client()?;
        let requests = Self::due_requests(client, begin, deferred);
        pipeline(requests)
            .await
            .into_iter()
            .collect::<Result<(), _>>()
            .map_err(query_failed)
    }

    /// Ends the transaction with `COMMIT` (after the deferred statements) or `ROLLBACK`, returning
    /// the connection to the pool only when that worked and no cancel request may still be on
    /// its way to it (otherwise, or if cancelled, `Drop` detaches it).
    async fn end(&mut self, commit: bool) -> Result<(), CommitError> {
        let (begin, deferred) = (self.take_begin(), std::mem::take(&mut self.deferred));
        let Some(client) = &self.client else {
            return Ok(());
        };
        if begin.is_some() && (!commit || deferred.is_empty()) {
            // Nothing was sent: the connection is as clean as it was taken.
            drop(self.client.take());
            return Ok(());
        }
        let command = if commit { "COMMIT" } else { "ROLLBACK" };
        let mut requests = if commit {
            Self::due_requests(client, begin, deferred)
        } else {
            Vec::new()
        };
        requests.push(Box::pin(client.batch_execute(command)));
        let reset = self.reset || self.reset_always.load(Ordering::SeqCst);
        if reset {
            // The reset is its own request, so its outcome is never mistaken for the commit's.
            requests.push(Box::pin(client.batch_execute(RESET_SESSION)));
        }
        let Ok(mut outcomes) = tokio::time::timeout(END_TIMEOUT, pipeline(requests)).await else {
            return Err(CommitError::Unknown(format!(
                "{command} got no answer within {END_TIMEOUT:?}"
            )));
        };
        self.ended = true;
        let reset = if reset { outcomes.pop() } else { None };
        let failure = outcomes.into_iter().find_map(Result::err);
        // Pooled only when it is known to be clean and outside any transaction: the reset, when
        // one was sent, worked; when none was, the server itself answered every request (an
        // error it answers still ends the transaction) and the connection is open.
        let clean = match &reset {
            Some(outcome) => outcome.is_ok(),
            None => !client.is_closed() && failure.as_ref().is_none_or(session_goes_on),
        };
        // A statement that failed on the server aborted the transaction, and the `COMMIT` after it
        // rolled back (PostgreSQL answers `ROLLBACK`, not an error): the failure is the commit's.
        // (A connection that broke is `unavailable`, as for `COMMIT` alone.) A connection closed
        // by the guard (a message over the limit, from a deferred trigger, say) leaves the
        // commit's outcome unknown.
        let ended = match failure {
            None => Ok(()),
            Some(err) if wire::is_cut(&err) => {
                Err(CommitError::Unknown(format!("{command}: {err}")))
            }
            Some(err) => Err(CommitError::Failed(query_failed(err))),
        };
        if clean {
            // Back to the pool, clean and outside any transaction.
            drop(self.client.take());
        } else if let Some(Err(err)) = reset {
            // Not clean: `Drop` closes it instead.
            tracing::warn!(error = %err, "could not reset a connection; closing it");
        }
        ended
    }
}

#[async_trait]
impl Transaction for PgTransaction {
    async fn query(
        &mut self,
        statement: &str,
        params: Vec<Value>,
        budget: &mut ResultBudget,
    ) -> Result<RowSet, Error> {
        let (ahead, ready) = self.prepare_in_order(statement, &params).await?;
        let begin = self.take_begin();
        let client = self.client()?;
        let mut refused = false;
        let rows = fetch(client, ready, budget, &mut refused);
        let (ahead, result) = in_order(client, begin, ahead, rows).await;
        self.ahead_outcome = self.ahead_outcome.take().or(ahead);
        if refused && let Some(client) = self.client.take() {
            // The rest of the rows would only be read to be thrown away. Closing the connection
            // stops the server at its next write; nothing more is sent in this unit of work (a
            // failed statement fails every later one), and closing is its rollback.
            drop(Object::take(client));
        }
        result
    }

    async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<u64, Error> {
        let (ahead, ready) = self.prepare_in_order(statement, &params).await?;
        let begin = self.take_begin();
        let client = self.client()?;
        let (ahead, result) = in_order(client, begin, ahead, run(client, ready)).await;
        self.ahead_outcome = self.ahead_outcome.take().or(ahead);
        result
    }

    fn ahead(&mut self, statement: &str, params: Vec<Value>) {
        self.ahead = Some((statement.to_owned(), params));
    }

    fn ahead_outcome(&mut self) -> Option<Result<u64, Error>> {
        self.ahead_outcome.take()
    }

    fn take_ahead(&mut self) -> Option<(String, Vec<Value>)> {
        self.ahead.take()
    }

    fn leaves(&mut self, residue: Residue) {
        match residue {
            Residue::Nothing => {}
            Residue::Session => self.reset = true,
            Residue::Schema => {
                self.reset = true;
                // What it made may be run by any later statement, unseen: every connection of
                // the database is reset from now on, until the next look after migrations.
                self.reset_always.store(true, Ordering::SeqCst);
            }
        }
    }

    async fn defer(&mut self, statement: &str, params: Vec<Value>) -> Result<(), Error> {
        // Prepared (from the connection's cache, usually), converted and encoded now, within the
        // unit of work's deadline: what is left for the commit cannot fail before it is sent.
        self.used = true;
        let ready = prepare(self.client()?, statement, &params).await?;
        check_encoding(&ready)?;
        self.deferred.push(ready);
        if self.deferred.len() >= MAX_DEFERRED {
            self.flush().await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), CommitError> {
        self.end(true).await
    }

    async fn rollback(mut self: Box<Self>) {
        if let Err(err) = self.end(false).await {
            tracing::warn!(error = ?err, "rollback failed; the connection was closed instead");
        }
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if self.begin.is_some() && !self.used {
            // Nothing was ever asked of it: it goes back to the pool as it came.
            return;
        }
        if self.ended || client.is_closed() {
            // Ended but not clean, or closed already (a message over the limit): closed, not
            // pooled, and nothing runs on it.
            drop(Object::take(client));
        } else {
            // A statement may still run on the server, which goes on after its client has
            // gone: cancelled, then ended from elsewhere if need be. Closing is the rollback.
            abandon(client, &self.connector);
        }
    }
}

/// Longest text of the server's error the host keeps (its message, detail, names), in bytes:
/// a guest's `RAISE` writes it, and it travels to spans, logs and later errors.
const MAX_ERROR_TEXT: usize = 2048;

/// The one place a tokio-postgres error becomes the WIT `error`. A server that is unreachable,
/// going away or full (SQLSTATE class 08, `53100` disk full, `53300` too many connections,
/// `57P01`–`57P03` shutting down or starting) is `unavailable`, like a broken connection: the
/// statement was fine, the server was not. Limits a statement can hit by itself (out of memory
/// or locks, a temporary file limit) stay the unit of work's `database` errors.
fn query_failed(err: tokio_postgres::Error) -> Error {
    match err.as_db_error() {
        Some(db) if is_server_outage(db.code().code()) => Error::Unavailable(format!(
            "{} (SQLSTATE {})",
            truncated(db.message(), MAX_ERROR_TEXT),
            db.code().code()
        )),
        Some(db) => Error::Database(DatabaseError {
            code: truncated(db.code().code(), 5).to_owned(),
            message: truncated(db.message(), MAX_ERROR_TEXT).to_owned(),
            constraint: db.constraint().map(|text| truncated(text, 256).to_owned()),
            column: db.column().map(|text| truncated(text, 256).to_owned()),
            detail: db
                .detail()
                .map(|text| truncated(text, MAX_ERROR_TEXT).to_owned()),
        }),
        None => Error::Unavailable(err.to_string()),
    }
}

/// Whether the session survives `err`: an error the server answered and went on after (not a
/// broken connection, a message cut by the guard, or the server ending the session, such as an
/// administrator's terminate answering `57P01`).
fn session_goes_on(err: &tokio_postgres::Error) -> bool {
    err.as_db_error()
        .is_some_and(|db| !is_server_outage(db.code().code()) && db.severity() == "ERROR")
        && !wire::is_cut(err)
}

fn is_server_outage(sqlstate: &str) -> bool {
    sqlstate.starts_with("08")
        || matches!(sqlstate, "53100" | "53300" | "57P01" | "57P02" | "57P03")
}

fn pool_failed(err: PoolError<ConnectError>) -> String {
    match err {
        PoolError::Backend(err) => err.to_string(),
        PoolError::Timeout(TimeoutType::Wait) => {
            "every connection of the pool stayed busy until the deadline".into()
        }
        other => other.to_string(),
    }
}
