//! One request or one delivery as one unit of work: the platform's invariant, in one place.
//!
//! A unit of work is, in order:
//!
//! 1. a fresh [`Store`] of the component's current code, with a deadline, counted among the
//!    component's units of work in flight while it lives;
//! 2. one call into the guest ([`Call::run`]), bounded by the deadline: a guest still running at
//!    it is dropped with its store, which cancels its statement on the server and rolls back
//!    without waiting behind it;
//! 3. commit when the guest asked for it ([`Call::commits`]) and nothing failed, rollback
//!    otherwise ([`SqlCtx::finish`](crate::capabilities::sql::SqlCtx::finish));
//! 4. what follows a commit: the outbox relay is woken for the events the work wrote;
//! 5. one [`Verdict`] on how it ended, decided by one function, counted in
//!    `units_of_work_total{trigger, outcome}`, recorded as the `outcome` of the current span, and
//!    logged once when it is a failure worth a line.
//!
//! Triggers are adapters around it: each makes a [`Call`] of what arrived and translates the
//! verdict. The HTTP trigger answers with a status code
//! ([`crate::triggers::http`]); the AMQP consumer acknowledges, retries, dead-letters or requeues
//! ([`crate::triggers::messaging`]):
//!
//! | verdict | HTTP | delivery |
//! | --- | --- | --- |
//! | committed, empty | the component's response | ack |
//! | rolled back (the guest declined) | the component's response | retry or dead letter, as the handler asked |
//! | duplicate | — | ack |
//! | timed out | 504 | retry, or requeue when the database does not answer |
//! | trapped | 500 | retry |
//! | busy (no free instance) | 503 | requeue |
//! | outage | 503 | requeue |
//! | conflict | 503 | retry |
//! | commit outcome unknown | 504 | requeue |
//! | failed | the component's 4xx when a statement it saw failed, else 500 | retry |
//! | refused (its guard can never pass) | 500 | dead letter |
//!
//! A third trigger is an adapter of the same size. One that runs a component's
//! `message-handler` on a timer would be, whole:
//!
//! ```ignore
//! struct Tick<'a> {
//!     service: &'a Service,
//!     event: IncomingEvent,
//! }
//!
//! impl Call for Tick<'_> {
//!     type Answer = Result<(), HandleError>;
//!
//!     async fn run(self, store: &mut Store<StoreState>) -> Result<Self::Answer, GuestFailure> {
//!         let code = self.service.code();
//!         let Some(handler) = &code.subscriber else {
//!             return Ok(Err(HandleError::Reject("no message-handler".into())));
//!         };
//!         let instance = handler
//!             .instantiate_async(&mut *store)
//!             .await
//!             .map_err(|err| GuestFailure::of("instantiation failed", &err))?;
//!         instance
//!             .platform_service_message_handler()
//!             .call_handle(&mut *store, &self.event)
//!             .await
//!             .map_err(|err| GuestFailure::of("the handler trapped", &err))
//!     }
//!
//!     fn commits(answer: &Self::Answer) -> bool {
//!         answer.is_ok()
//!     }
//! }
//!
//! async fn every(period: Duration, runtime: &Runtime, service: &Service) {
//!     let mut ticks = tokio::time::interval(period);
//!     loop {
//!         ticks.tick().await;
//!         let tick = Tick { service, event: tick_event() };
//!         let ended = UnitOfWork::new(service, "schedule", period).run(runtime, tick).await;
//!         if !ended.verdict.is_success() {
//!             tracing::debug!(verdict = ?ended.verdict, "the tick did not commit; next period");
//!         }
//!     }
//! }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;

use crate::capabilities::sql::{self, Fault, FinishError, Guard, SqlCtx};
use crate::engine::Runtime;
use crate::service::Service;
use crate::state::StoreState;
use crate::telemetry::metrics::ComponentMetrics;

/// What a trigger runs in a unit of work: one call into the guest.
pub trait Call: Send {
    /// What the guest answered: a response, a handler's result.
    type Answer: Send;

    /// Runs the guest in `store`, a fresh store of the component's current code: its answer, or
    /// why there is none. Bounded by the unit of work's deadline; dropped when it passes.
    fn run(
        self,
        store: &mut Store<StoreState>,
    ) -> impl Future<Output = Result<Self::Answer, GuestFailure>> + Send;

    /// Whether `answer` asks for the unit of work to be committed (a status below 500; `ok`).
    fn commits(answer: &Self::Answer) -> bool;
}

/// Why the guest gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFailure {
    /// It trapped (a panic, `unreachable`, out of memory, a stack overflow) or broke its
    /// interface (no usable answer).
    Trapped(String),
    /// It was still running at its deadline.
    TimedOut,
    /// No instance could be had: the host runs as many as it may at once.
    Busy(String),
}

impl GuestFailure {
    /// Classifies an error of wasmtime's while instantiating or calling the guest: the deadline
    /// when the epoch callback interrupted it, busy when the pool had no free instance, a trap
    /// otherwise (`what` says what failed).
    pub fn of(what: &str, err: &wasmtime::Error) -> Self {
        if err.is::<wasmtime::PoolConcurrencyLimitError>() {
            return Self::Busy(format!("has no free instance: {err}"));
        }
        match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => Self::TimedOut,
            _ => Self::Trapped(format!("{what}: {err:#}")),
        }
    }
}

/// How a unit of work ended. Decided once, by [`classify`]; triggers only translate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The guest succeeded and its work is durable.
    Committed,
    /// The guest succeeded having run no statement: nothing to commit.
    Empty,
    /// The guest declined (a 5xx of its own, a handler's retry or reject): nothing kept.
    RolledBack,
    /// The work's guard found it done before (a delivery handled before): nothing kept.
    Duplicate,
    /// Still running at its deadline: dropped with its store, nothing kept.
    TimedOut,
    /// The guest trapped or gave no usable answer: nothing kept.
    Trapped(String),
    /// No instance was free: the guest never ran.
    Busy(String),
    /// The database was away or restarting: not the work's fault, nothing kept.
    Outage(String),
    /// A serialization failure or deadlock, or the component's memory held by its other units of
    /// work: the same work may well succeed in a moment. Nothing kept.
    Conflict(String),
    /// The commit got no answer in time: the work may or may not be durable.
    OutcomeUnknown(String),
    /// The guest asked to commit, but a statement (one the guest saw fail) or, `at_commit`, the
    /// commit itself failed for the work's own reasons: nothing kept.
    Failed {
        /// What failed.
        reason: String,
        /// Whether the commit failed, after the guest had answered.
        at_commit: bool,
    },
    /// The work's guard failed in a way it will every time (the database refuses the event's
    /// id): nothing kept, and running it again cannot help.
    Refused(String),
}

impl Verdict {
    /// The `outcome` label of `units_of_work_total` and of the unit of work's span.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Committed => "committed",
            Self::Empty => "empty",
            Self::RolledBack => "rolled_back",
            Self::Duplicate => "duplicate",
            Self::TimedOut => "timed_out",
            Self::Trapped(_) => "trapped",
            Self::Busy(_) => "busy",
            Self::Outage(_) => "outage",
            Self::Conflict(_) => "conflict",
            Self::OutcomeUnknown(_) => "outcome_unknown",
            Self::Failed { .. } => "failed",
            Self::Refused(_) => "refused",
        }
    }

    /// Whether the guest got what it asked for: its work committed, or there was none.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Committed | Self::Empty)
    }
}

/// A unit of work that ended: its verdict, and what the guest answered if it did.
#[derive(Debug)]
pub struct Ended<A> {
    /// How it ended.
    pub verdict: Verdict,
    /// The guest's answer; `None` when it trapped, timed out or never ran.
    pub answer: Option<A>,
    /// The route the guest named for what it served (see
    /// [`crate::capabilities::route::RouteCtx`]).
    pub route: Option<Arc<str>>,
}

/// One unit of work of one component, about to run (see the module documentation).
pub struct UnitOfWork<'s> {
    service: &'s Service,
    /// The `trigger` label of its metrics: `http`, `message`.
    trigger: &'static str,
    /// How long it may take, from its store's creation to its commit.
    timeout: Duration,
}

impl<'s> UnitOfWork<'s> {
    /// A unit of work of `service`, counted under `trigger`, that must end within `timeout`.
    pub fn new(service: &'s Service, trigger: &'static str, timeout: Duration) -> Self {
        Self {
            service,
            trigger,
            timeout,
        }
    }

    /// Runs `call` as one unit of work: store, guest, commit or rollback, what follows a commit,
    /// and the verdict. Dropped before it ends (a client that went away), the work is rolled
    /// back with its store and counted as rolled back.
    pub async fn run<C: Call>(self, runtime: &Runtime, call: C) -> Ended<C::Answer> {
        let service = self.service;
        let mut tally = Tally {
            metrics: &service.metrics,
            trigger: self.trigger,
            counted: false,
        };
        let deadline = Instant::now() + self.timeout;
        let mut store = new_store(service, runtime, deadline);
        let answer = tokio::time::timeout_at(deadline.into(), call.run(&mut store))
            .await
            .unwrap_or(Err(GuestFailure::TimedOut));
        let route = store.data().capabilities.route.matched().cloned();
        let (verdict, answer) = if matches!(answer, Err(GuestFailure::TimedOut)) {
            let verdict = timed_out(&store.data().capabilities.sql);
            // No orderly rollback: it would wait behind whatever was too slow. Dropping the
            // store cancels that statement and closes its connection.
            crate::state::retire(store);
            (verdict, None)
        } else {
            let commits = matches!(&answer, Ok(answer) if C::commits(answer));
            let finished = store.data_mut().capabilities.sql.finish(commits).await;
            let verdict = classify(&answer, commits, finished, &store.data().capabilities.sql);
            if verdict == Verdict::Committed {
                store.data_mut().capabilities.messaging.committed();
            }
            crate::state::retire(store);
            (verdict, answer.ok())
        };
        self.report(&verdict);
        tally.count(verdict.label());
        Ended {
            verdict,
            answer,
            route,
        }
    }

    /// Counts a trap, records the verdict on the current span, and logs the failures an
    /// operator should hear of, once (guests' failures at the component's log rate).
    fn report(&self, verdict: &Verdict) {
        let (service, trigger) = (self.service, self.trigger);
        if matches!(verdict, Verdict::TimedOut | Verdict::Trapped(_)) {
            service.metrics.trap(trigger);
        }
        tracing::Span::current().record("outcome", verdict.label());
        let component = service.name();
        match verdict {
            Verdict::Trapped(why) if service.log_rate().allows_line() => {
                tracing::error!(%component, trigger, error = %why, "the guest failed");
            }
            Verdict::OutcomeUnknown(why) => {
                tracing::error!(
                    %component,
                    trigger,
                    error = %why,
                    "the commit's outcome is unknown",
                );
            }
            Verdict::Failed { reason: why, .. } if service.log_rate().allows_line() => {
                tracing::warn!(
                    %component,
                    trigger,
                    error = %why,
                    "the unit of work could not be committed",
                );
            }
            Verdict::Refused(why) => {
                tracing::error!(
                    %component,
                    trigger,
                    error = %why,
                    "the unit of work's guard refused it",
                );
            }
            _ => {}
        }
    }
}

/// How a unit of work ended, from the guest's answer, whether it asked to commit, how
/// [`SqlCtx::finish`] went, and what its statements met.
///
/// The database's verdict comes before the guest's: a duplicate is one whatever the handler did,
/// and an outage or a conflict is not the guest's fault, whatever it made of it.
fn classify<A>(
    answer: &Result<A, GuestFailure>,
    commits: bool,
    finished: Result<sql::Outcome, FinishError>,
    sql: &SqlCtx,
) -> Verdict {
    match sql.guarded() {
        Some(Guard::NoRow) => return Verdict::Duplicate,
        Some(Guard::Failed(err)) => return guard_failed(sql, err),
        Some(Guard::Passed) | None => {}
    }
    let reason = |finished: &Result<sql::Outcome, FinishError>| match (finished, sql.failure()) {
        (Err(err), _) => err.to_string(),
        (Ok(_), Some(first)) => first.to_owned(),
        (Ok(_), None) => "the database failed the unit of work".to_owned(),
    };
    match (answer, finished) {
        (Err(GuestFailure::TimedOut), _) => Verdict::TimedOut,
        (_, Ok(sql::Outcome::Committed)) => Verdict::Committed,
        (Ok(_), Ok(sql::Outcome::NoStatements)) if commits => Verdict::Empty,
        (_, Err(FinishError::OutcomeUnknown(why))) => Verdict::OutcomeUnknown(why),
        (_, finished) if sql.fault() == Some(Fault::Outage) => Verdict::Outage(reason(&finished)),
        (_, finished) if sql.fault() == Some(Fault::Conflict) => {
            Verdict::Conflict(reason(&finished))
        }
        (Err(GuestFailure::Busy(why)), _) => Verdict::Busy(why.clone()),
        (Err(GuestFailure::Trapped(why)), _) => Verdict::Trapped(why.clone()),
        (Ok(_), Err(err)) if commits => Verdict::Failed {
            at_commit: !matches!(err, FinishError::StatementFailed(_)),
            reason: err.to_string(),
        },
        (Ok(_), _) => Verdict::RolledBack,
    }
}

/// The verdict on a unit of work still running at its deadline: what its statements met before
/// comes first (a duplicate, a guard that can never pass, an outage), since running it again
/// would meet it again, or the database, not the guest, took the time.
fn timed_out(sql: &SqlCtx) -> Verdict {
    match sql.guarded() {
        Some(Guard::NoRow) => Verdict::Duplicate,
        Some(Guard::Failed(err)) => guard_failed(sql, err),
        Some(Guard::Passed) | None if sql.fault() == Some(Fault::Outage) => Verdict::Outage(
            sql.failure()
                .unwrap_or("the database was unreachable")
                .to_owned(),
        ),
        Some(Guard::Passed) | None => Verdict::TimedOut,
    }
}

/// The verdict on a unit of work whose guard failed.
fn guard_failed(sql: &SqlCtx, err: &sql::Error) -> Verdict {
    let why = format!("cannot {}: {}", sql.guard_purpose(), sql::describe(err));
    // Waiting on another unit of work's uncommitted row for the same key, until a timeout or a
    // lock limit: the other may yet roll back, so this is a conflict, for later.
    if matches!(err, sql::Error::Database(db) if db.code == "57014" || db.code == "55P03") {
        return Verdict::Conflict(why);
    }
    match Fault::of(err) {
        Fault::Outage => Verdict::Outage(why),
        Fault::Conflict => Verdict::Conflict(why),
        // PostgreSQL refused the guard's values (too long, a NUL byte): it will every time.
        Fault::UnitOfWork => Verdict::Refused(why),
    }
}

/// Counts the unit of work once: as it ended, or, when it is dropped first (dropping the store
/// rolls the work back), as rolled back.
struct Tally<'a> {
    metrics: &'a ComponentMetrics,
    trigger: &'static str,
    counted: bool,
}

impl Tally<'_> {
    fn count(&mut self, outcome: &'static str) {
        self.metrics.unit_of_work(self.trigger, outcome);
        self.counted = true;
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        if !self.counted {
            self.metrics.unit_of_work(self.trigger, "rolled_back");
        }
    }
}

/// A fresh store for one unit of work of `service` that must end by `deadline`, counted among
/// its units of work in flight while it lives.
///
/// At every epoch tick the guest yields its worker thread and waits for a turn (see
/// [`crate::turns`]); once the deadline has passed it traps instead. So a guest that loops or
/// computes for long neither starves other requests nor outlives its unit of work.
fn new_store(service: &Service, runtime: &Runtime, deadline: Instant) -> Store<StoreState> {
    let guests = &service.guests;
    let state = StoreState::new(
        &guests.capabilities,
        deadline,
        guests.memory_bytes,
        &guests.limits,
        guests.in_flight.clone(),
    );
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|state| &mut state.limits);
    guests
        .turns
        .install(&mut store, deadline, |state| &state.turn);
    store
}

#[cfg(test)]
mod tests;
