//! A [`Database`] held in memory, for component tests: it answers each statement with a
//! function the test gives and records everything the component did, in order.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{CommitError, Database, Error, ResultBudget, RowSet, Transaction, Value, convert};

/// What a component asked of its database.
#[derive(Debug, Clone)]
pub enum Call {
    /// A transaction began: the unit of work's first statement.
    Begin,
    /// A query ran, with its statement and parameters.
    Query(String, Vec<Value>),
    /// A statement ran for its row count: an `execute`, or a statement sent ahead or deferred.
    Execute(String, Vec<Value>),
    /// The transaction committed.
    Commit,
    /// The transaction rolled back.
    Rollback,
}

/// Answers one statement: the rows of a query, or for `execute` the row count as `rows.len()`.
pub type Answer = dyn Fn(&str, &[Value]) -> Result<RowSet, Error> + Send + Sync;

/// The fake database of one test: every transaction it begins shares its answer and its record
/// of calls.
#[derive(Clone)]
pub struct FakeDatabase {
    answer: Arc<Answer>,
    calls: Arc<Mutex<Vec<Call>>>,
    /// The statement queued ahead of the next one, then its outcome (per transaction: `begin`
    /// hands out a copy with these empty).
    ahead: Option<(String, Vec<Value>)>,
    ahead_outcome: Option<Result<u64, Error>>,
    /// When set, `begin` fails as if the database were down.
    down: Arc<Mutex<Option<String>>>,
}

impl FakeDatabase {
    /// A database that is up and answers every statement with `answer`.
    pub fn new(
        answer: impl Fn(&str, &[Value]) -> Result<RowSet, Error> + Send + Sync + 'static,
    ) -> Self {
        Self {
            answer: Arc::new(answer),
            calls: Arc::default(),
            ahead: None,
            ahead_outcome: None,
            down: Arc::default(),
        }
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock_calls().clone()
    }

    /// Makes `begin` fail with `unavailable(reason)` from now on.
    pub fn go_down(&self, reason: &str) {
        *self
            .down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason.to_owned());
    }

    fn lock_calls(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        // A panicking test thread must not hide what was recorded.
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, call: Call) {
        self.lock_calls().push(call);
    }

    /// Runs the statement queued ahead, if any, recorded as an `Execute`.
    fn run_ahead(&mut self) {
        if let Some((statement, params)) = self.ahead.take() {
            let answer = (self.answer)(&statement, &params);
            self.record(Call::Execute(statement, params));
            self.ahead_outcome = Some(answer.map(|rows| rows.rows.len() as u64));
        }
    }
}

#[async_trait]
impl Database for FakeDatabase {
    async fn begin(&self, _deadline: std::time::Instant) -> Result<Box<dyn Transaction>, Error> {
        if let Some(reason) = self
            .down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
        {
            return Err(Error::Unavailable(reason));
        }
        self.record(Call::Begin);
        Ok(Box::new(Self {
            ahead: None,
            ahead_outcome: None,
            ..self.clone()
        }))
    }

    async fn ping(&self) -> Result<(), String> {
        match self
            .down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
        {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Transaction for FakeDatabase {
    /// Counts the answer's rows against `budget` as a real database's would be.
    async fn query(
        &mut self,
        statement: &str,
        params: Vec<Value>,
        budget: &mut ResultBudget,
    ) -> Result<RowSet, Error> {
        self.run_ahead();
        let answer = (self.answer)(statement, &params);
        self.record(Call::Query(statement.to_owned(), params));
        let rows = answer?;
        for row in &rows.rows {
            budget.take(row.iter().map(convert::size).sum()).await?;
        }
        Ok(rows)
    }

    async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<u64, Error> {
        self.run_ahead();
        let answer = (self.answer)(statement, &params);
        self.record(Call::Execute(statement.to_owned(), params));
        answer.map(|rows| rows.rows.len() as u64)
    }

    /// Runs the statement at once (this fake has no round trips to save), recorded as an
    /// `Execute`.
    async fn defer(&mut self, statement: &str, params: Vec<Value>) -> Result<(), Error> {
        self.execute(statement, params).await.map(drop)
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

    async fn commit(self: Box<Self>) -> Result<(), CommitError> {
        self.record(Call::Commit);
        Ok(())
    }

    async fn rollback(self: Box<Self>) {
        self.record(Call::Rollback);
    }
}
