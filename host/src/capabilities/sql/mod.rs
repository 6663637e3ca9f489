//! The `platform:service/sql` capability: a component's statements, run in its unit of work.
//!
//! - [`Database`] is where statements go: [`postgres::PgDatabase`] (one pool per component, built
//!   once at start) or [`fake::FakeDatabase`] in component tests.
//! - [`SqlCtx`] is created per store. It opens the transaction on the first statement and the
//!   trigger ends it with [`SqlCtx::finish`] once the handler has answered.
//! - [`Sql`] is the view the generated `Host` trait is implemented on ([`view`]), with a client
//!   span and a duration per statement.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

pub use crate::bindings::sql::{DatabaseError, Error, ParameterError, RowSet, Value};
use crate::capabilities::memory::{Held, HostMemory};
use tokio::sync::Semaphore;

pub mod budget;
pub mod convert;
pub mod fake;
pub mod postgres;
pub mod role;
pub mod statement;
mod view;

pub use budget::{ResultBudget, SqlLimits, limit_exceeded, memory_spent, params_size};
pub use statement::{Residue, Statement, Verdicts, inspect};
pub use view::{Sql, add_to_linker};

/// A component's database.
#[async_trait]
pub trait Database: Send + Sync + 'static {
    /// Opens a transaction for one unit of work that must be over by `deadline`.
    async fn begin(&self, deadline: Instant) -> Result<Box<dyn Transaction>, Error>;

    /// Checks that the database answers now; the reason when it does not.
    async fn ping(&self) -> Result<(), String>;

    /// Pooled connections in use, idle, and the most the pool opens; `None` without a pool.
    fn connections(&self) -> Option<(usize, usize, usize)> {
        None
    }

    /// Looks again at what the database stores that statements run without naming it
    /// (functions, triggers, rules, views, defaults): called after its migrations ran. Until it
    /// has looked, and whenever what it found could leave session state, every connection is
    /// reset as its unit of work ends.
    async fn schema_changed(&self) {}

    /// Says that migrations are about to run: every connection is reset as its unit of work
    /// ends until [`Database::schema_changed`] has looked.
    fn schema_changing(&self) {}
}

/// One open transaction. Dropping it without `commit` rolls it back.
#[async_trait]
pub trait Transaction: Send {
    /// Runs a query; its rows are counted against `budget` as they arrive.
    async fn query(
        &mut self,
        statement: &str,
        params: Vec<Value>,
        budget: &mut ResultBudget,
    ) -> Result<RowSet, Error>;
    /// Runs a statement; the rows it changed.
    async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<u64, Error>;
    /// Runs a statement whose only outcome that matters is whether it worked, as late as it
    /// may: with the commit, in the same round trip. Its failure is the commit's. An error
    /// here means it could not even be queued.
    async fn defer(&mut self, statement: &str, params: Vec<Value>) -> Result<(), Error>;
    /// Queues a statement to run just ahead of the next `query` or `execute`, in its round trip;
    /// its outcome is then had from [`Transaction::ahead_outcome`].
    fn ahead(&mut self, statement: &str, params: Vec<Value>);
    /// The outcome of the statement [`Transaction::ahead`] queued, once it was sent: rows
    /// changed, or its error.
    fn ahead_outcome(&mut self) -> Option<Result<u64, Error>>;
    /// Withdraws the statement [`Transaction::ahead`] queued while it is unsent: the statement
    /// it was to go with failed before anything of either was sent.
    fn take_ahead(&mut self) -> Option<(String, Vec<Value>)>;
    /// Notes that a statement about to be sent may leave `residue` behind the transaction, so
    /// the connection is reset as it ends.
    fn leaves(&mut self, _residue: Residue) {}
    /// Commits, with any deferred statements in the same round trip.
    async fn commit(self: Box<Self>) -> Result<(), CommitError>;
    /// Rolls back; a connection that cannot is closed, which rolls back too.
    async fn rollback(self: Box<Self>);
}

/// Why `COMMIT` did not report success.
#[derive(Debug)]
pub enum CommitError {
    /// The database answered that the transaction was not committed.
    Failed(Error),
    /// No answer came in time: the transaction may or may not have been committed.
    Unknown(String),
}

/// How a unit of work ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The component ran no statement.
    NoStatements,
    /// Its transaction committed.
    Committed,
    /// Its transaction was rolled back, as asked.
    RolledBack,
}

/// Whose fault a failed statement or commit is. Decided here, once, for HTTP and deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The unit of work's own doing (bad SQL, a constraint, a refused statement): an HTTP
    /// request gets the component's 4xx or a 500; a delivery is retried, counting attempts,
    /// then dead-lettered.
    UnitOfWork,
    /// A serialization failure or deadlock (`40001`, `40P01`): it may work next time. HTTP 503;
    /// a delivery is retried, counting attempts.
    Conflict,
    /// The database is away, restarting or out of resources: nothing the work could help. HTTP
    /// 503; a delivery goes back to its queue without counting an attempt.
    Outage,
}

impl Fault {
    /// Whose fault `err` is: the one place a capability error is classified.
    pub fn of(err: &Error) -> Self {
        match err {
            Error::Unavailable(_) => Self::Outage,
            // 53200: the component's share of host memory was held by its other units of work.
            Error::Database(db) if matches!(db.code.as_str(), "40001" | "40P01" | "53200") => {
                Self::Conflict
            }
            _ => Self::UnitOfWork,
        }
    }
}

/// What a unit of work's guard found (see [`SqlCtx::guard`]).
#[derive(Debug, Clone)]
pub enum Guard {
    /// It changed a row: the unit of work goes on.
    Passed,
    /// It changed no row: the work was done before, and this unit of work is rolled back.
    NoRow,
    /// It failed, and the unit of work with it.
    Failed(Error),
}

/// Why a unit of work that should have committed did not.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// A statement failed (or the transaction could not begin), so it could only roll back.
    #[error("a statement failed earlier in this unit of work, so it was rolled back: {0}")]
    StatementFailed(String),
    /// The database refused the commit.
    #[error("the commit failed: {0:?}")]
    Commit(Error),
    /// No answer to the commit came in time.
    #[error("the commit's outcome is unknown: {0}")]
    OutcomeUnknown(String),
}

/// What every unit of work of one component shares, built once with its service: its database,
/// its limits, its share of host memory, its turns, and what its statements were found to be.
pub struct SqlComponent {
    /// Where its statements go.
    pub database: Arc<dyn Database>,
    /// What one statement and one result may hold.
    pub limits: SqlLimits,
    /// Its share of host memory, which statements and results are reserved from.
    pub memory: Arc<HostMemory>,
    /// The component's turns, in which large results are read.
    pub turns: Arc<Semaphore>,
    /// What each statement text was found to be, so it is parsed once.
    pub verdicts: Verdicts,
}

/// The database side of one unit of work.
pub struct SqlCtx {
    component: Arc<SqlComponent>,
    /// When the unit of work must be over; the server is told too.
    deadline: Instant,
    /// Opened on the first statement; `None` before it and after `finish`.
    transaction: Option<Box<dyn Transaction>>,
    /// The first error that aborted the transaction, if any: it can then only roll back.
    aborted: Option<String>,
    /// The gravest [`Fault`] a statement of this unit of work met, if any: when it is an
    /// outage, the unit of work's failure is the database's, not the component's.
    fault: Option<Fault>,
    /// The first statement that failed with a `database` error: PostgreSQL refuses every later
    /// one, so the host does, without sending it.
    failed: Option<String>,
    /// The guard statement, until it is sent.
    guard: Option<(String, Vec<Value>)>,
    /// What the guard is for, in a few words ("record the event in the inbox").
    guard_purpose: &'static str,
    /// What the guard found, once sent.
    guarded: Option<Guard>,
    /// The last result's reservation: its rows are in the guest by the next call.
    result_held: Held,
}

impl SqlCtx {
    /// The database side of a unit of work that must be over by `deadline`.
    pub fn new(component: Arc<SqlComponent>, deadline: Instant) -> Self {
        Self {
            component,
            deadline,
            transaction: None,
            aborted: None,
            fault: None,
            failed: None,
            guard: None,
            guard_purpose: "",
            guarded: None,
            result_held: Held::default(),
        }
    }

    /// Reads a guest's statement (see [`statement`]): what the host will send, or a `54000`
    /// error when the text is over `max_statement_bytes`, or `refused`.
    /// A statement over a limit fails the unit of work, as a failed statement does; a refused
    /// one does not (nothing of it reached the database).
    pub fn check<'a>(&mut self, text: &'a str) -> Result<Statement<'a>, Error> {
        let limits = &self.component.limits;
        if text.len() > limits.max_statement_bytes {
            let over = format!(
                "the statement is {} bytes, over {} (max_statement_bytes)",
                text.len(),
                limits.max_statement_bytes
            );
            return self.note(Err(limit_exceeded(over)));
        }
        self.component
            .verdicts
            .inspect(text)
            .map_err(|refusal| Error::Refused(refusal.0))
    }

    /// Reserves what a statement and its parameters take while they are sent, refusing them past
    /// the component's limits.
    fn admit(&mut self, statement: &str, params: &[Value]) -> Result<Held, Error> {
        let limits = &self.component.limits;
        if params.len() > limits.max_parameters {
            return Err(limit_exceeded(format!(
                "{} parameters, over {} (max_parameters)",
                params.len(),
                limits.max_parameters
            )));
        }
        let bytes = params_size(params);
        if bytes > limits.max_parameter_bytes {
            let over = format!(
                "the parameters are {bytes} bytes, over {} (max_parameter_bytes)",
                limits.max_parameter_bytes
            );
            return Err(limit_exceeded(over));
        }
        self.component
            .memory
            .reserve(statement.len() + bytes)
            .map_err(|spent| memory_spent(&spent))
    }

    /// Refuses a statement after one failed: PostgreSQL would answer `25P02`.
    fn refuse_after_failure(&self) -> Result<(), Error> {
        match &self.failed {
            None => Ok(()),
            Some(first) => Err(Error::Database(DatabaseError {
                code: "25P02".into(),
                message: format!(
                    "current transaction is aborted, commands ignored until end of transaction \
                     block (an earlier statement failed: {first})"
                ),
                constraint: None,
                column: None,
                detail: None,
            })),
        }
    }

    /// Makes the unit of work depend on a host statement that must change a row (a delivery's
    /// inbox insert): it goes ahead of the first statement, in the same round trip, or alone
    /// before the commit when there is none. When it changes no row or fails, the statement
    /// that went with it answers an error instead of its own result, every later one is
    /// refused unsent, and the unit of work rolls back; [`SqlCtx::guarded`] says which.
    /// `purpose` says what it is for, in a few words, for the reason a failure gives.
    pub fn guard(&mut self, purpose: &'static str, statement: &str, params: Vec<Value>) {
        self.guard = Some((statement.to_owned(), params));
        self.guard_purpose = purpose;
    }

    /// What the guard is for, as [`SqlCtx::guard`] was told.
    pub fn guard_purpose(&self) -> &'static str {
        self.guard_purpose
    }

    /// Why the unit of work can only roll back: the first statement that failed, or the
    /// transaction that could not begin.
    pub fn failure(&self) -> Option<&str> {
        self.aborted.as_deref()
    }

    /// What the guard found, once it was sent.
    pub fn guarded(&self) -> Option<&Guard> {
        self.guarded.as_ref()
    }

    /// The gravest fault a statement of this unit of work met.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// Runs a statement that returns rows, in this unit of work's transaction.
    pub async fn query(
        &mut self,
        statement: Statement<'_>,
        params: Vec<Value>,
    ) -> Result<RowSet, Error> {
        // The previous result is in the guest by now.
        self.result_held = Held::default();
        self.refuse_after_guard()?;
        self.refuse_after_failure()?;
        let _sending = match self.admit(statement.text(), &params) {
            Ok(held) => held,
            Err(err) => return self.note(Err(err)),
        };
        let component = &self.component;
        let mut budget = ResultBudget::new(
            component.limits.max_result_bytes,
            component.memory.clone(),
            component.turns.clone(),
        );
        let result = match self.transaction_with_guard().await {
            Ok(transaction) => {
                transaction.leaves(statement.residue());
                transaction
                    .query(statement.text(), params, &mut budget)
                    .await
            }
            Err(err) => Err(err),
        };
        self.result_held = budget.into_held();
        let result = self.settle_guard(result);
        self.note(result)
    }

    /// Runs a statement and returns the rows it changed, in this unit of work's transaction.
    pub async fn execute(
        &mut self,
        statement: Statement<'_>,
        params: Vec<Value>,
    ) -> Result<u64, Error> {
        self.result_held = Held::default();
        self.refuse_after_guard()?;
        self.refuse_after_failure()?;
        let _sending = match self.admit(statement.text(), &params) {
            Ok(held) => held,
            Err(err) => return self.note(Err(err)),
        };
        let result = match self.transaction_with_guard().await {
            Ok(transaction) => {
                transaction.leaves(statement.residue());
                transaction.execute(statement.text(), params).await
            }
            Err(err) => Err(err),
        };
        let result = self.settle_guard(result);
        self.note(result)
    }

    /// The transaction, with the guard queued ahead of the next statement if it is still due.
    async fn transaction_with_guard(&mut self) -> Result<&mut Box<dyn Transaction>, Error> {
        // Taken only once there is a transaction: a failed `BEGIN` leaves it queued.
        self.transaction().await?;
        let guard = self.guard.take();
        let transaction = self.transaction().await?;
        if let Some((statement, params)) = guard {
            transaction.ahead(&statement, params);
        }
        Ok(transaction)
    }

    /// Records what the guard found, if it went with this statement, and puts its verdict in
    /// place of the statement's result when it did not pass.
    fn settle_guard<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        let Some(transaction) = self.transaction.as_mut() else {
            return result;
        };
        let Some(outcome) = transaction.ahead_outcome() else {
            // The statement failed before anything was sent (a parameter it could not take):
            // the guard was not sent either, and is still due, with the next statement or
            // alone before the commit. Left queued in the transaction, it would be forgotten.
            if let Some(guard) = transaction.take_ahead() {
                self.guard = Some(guard);
            }
            return result;
        };
        let guarded = match outcome {
            Ok(0) => Guard::NoRow,
            Ok(_) => Guard::Passed,
            Err(err) => Guard::Failed(err),
        };
        self.guarded = Some(guarded);
        self.refuse_after_guard().and(result)
    }

    /// Refuses a statement once the guard did not pass.
    fn refuse_after_guard(&mut self) -> Result<(), Error> {
        match &self.guarded {
            None | Some(Guard::Passed) => Ok(()),
            Some(Guard::NoRow) => {
                let reason = "this work was done before; nothing of this unit of work is kept";
                self.aborted.get_or_insert_with(|| reason.to_owned());
                Err(Error::Refused(reason.into()))
            }
            Some(Guard::Failed(err)) => {
                let err = err.clone();
                self.fault = self.fault.max(Some(Fault::of(&err)));
                self.aborted.get_or_insert_with(|| describe(&err));
                Err(err)
            }
        }
    }

    /// Sends the guard by itself if it is still due (no statement went with it), so that
    /// [`SqlCtx::guarded`] has its verdict; `finish` does so before committing in any case.
    pub async fn send_guard_alone(&mut self) {
        let Some((statement, params)) = self.guard.take() else {
            return;
        };
        let result = match self.transaction().await {
            Ok(transaction) => transaction.execute(&statement, params).await,
            Err(err) => Err(err),
        };
        self.guarded = Some(match result {
            Ok(0) => Guard::NoRow,
            Ok(_) => Guard::Passed,
            Err(err) => Guard::Failed(err),
        });
        let _ = self.refuse_after_guard();
    }

    /// Runs a host statement (never a guest's: it is not checked) that nothing reads before the
    /// commit, such as an outbox insert, in the commit's round trip. Its failure fails the
    /// commit, which then rolls back.
    pub async fn defer(&mut self, statement: &str, params: Vec<Value>) -> Result<(), Error> {
        self.refuse_after_guard()?;
        self.refuse_after_failure()?;
        let result = match self.transaction().await {
            Ok(transaction) => transaction.defer(statement, params).await,
            Err(err) => Err(err),
        };
        self.note(result)
    }

    /// Ends the unit of work: commits when the handler `succeeded` and no statement failed,
    /// rolls back otherwise. A failed commit's fault joins [`SqlCtx::fault`].
    pub async fn finish(&mut self, succeeded: bool) -> Result<Outcome, FinishError> {
        if succeeded {
            self.send_guard_alone().await;
        }
        let failed = |reason: &String| Err(FinishError::StatementFailed(reason.clone()));
        match (self.transaction.take(), &self.aborted, succeeded) {
            (None, None, _) => Ok(Outcome::NoStatements),
            // The transaction could not even begin: nothing was written, whatever the handler said.
            (None, Some(reason), true) => failed(reason),
            (None, Some(_), false) => Ok(Outcome::NoStatements),
            (Some(transaction), None, true) => match transaction.commit().await {
                Ok(()) => Ok(Outcome::Committed),
                Err(CommitError::Failed(err)) => {
                    self.fault = self.fault.max(Some(Fault::of(&err)));
                    Err(FinishError::Commit(err))
                }
                Err(CommitError::Unknown(why)) => Err(FinishError::OutcomeUnknown(why)),
            },
            (Some(transaction), Some(reason), true) => {
                transaction.rollback().await;
                failed(reason)
            }
            (Some(transaction), _, false) => {
                transaction.rollback().await;
                Ok(Outcome::RolledBack)
            }
        }
    }

    async fn transaction(&mut self) -> Result<&mut Box<dyn Transaction>, Error> {
        if self.transaction.is_none() {
            self.transaction = Some(self.component.database.begin(self.deadline).await?);
        }
        // Set just above when it was empty.
        self.transaction
            .as_mut()
            .ok_or_else(|| Error::Unavailable("no transaction".into()))
    }

    /// Remembers an error that leaves the PostgreSQL transaction aborted, and its fault.
    fn note<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(err) = &result {
            self.fault = self.fault.max(Some(Fault::of(err)));
            if matches!(err, Error::Database(_) | Error::Unavailable(_)) {
                self.aborted.get_or_insert_with(|| describe(err));
            }
            if matches!(err, Error::Database(_)) {
                self.failed.get_or_insert_with(|| describe(err));
            }
        }
        result
    }
}

/// An error of the capability, in a line for a log or a reason.
pub fn describe(err: &Error) -> String {
    match err {
        Error::Database(db) => format!("{} (SQLSTATE {})", db.message, db.code),
        Error::BadParameter(p) => format!("parameter {}: {}", p.index, p.message),
        Error::WrongParameterCount(n) => format!("the statement wants {n} parameters"),
        Error::UnsupportedType(what) => what.clone(),
        Error::Unavailable(why) => format!("database unavailable: {why}"),
        Error::Refused(why) => format!("refused: {why}"),
    }
}

#[cfg(test)]
mod tests;
