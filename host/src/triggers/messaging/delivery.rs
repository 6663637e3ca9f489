//! One delivered event as one unit of work: de-duplicate, run the handler, commit or roll back.
//!
//! 1. A fresh store and instance, as for an HTTP request.
//! 2. `message-handler.handle`, bounded by the store's deadline. Its unit of work is guarded by
//!    `INSERT INTO platform_inbox ... ON CONFLICT DO NOTHING` on the event's (source, id), sent
//!    ahead of the handler's first statement in the same round trip (see [`SqlCtx::guard`]).
//!    No row inserted means it was handled before: the handler's statement gets an error
//!    instead of its result, the handler cannot write anything more, and the unit of work rolls
//!    back. A competing consumer handling the same event at the same moment waits on that row
//!    until the first commits, then finds it.
//! 3. Commit on `ok`, roll back otherwise; the caller acknowledges only after this returns.
//!
//! [`SqlCtx::guard`]: crate::capabilities::sql::SqlCtx::guard
//!
//! A failure the database caused ([`Fault::Outage`]: a restart, a lost connection, no free
//! connection) is [`Outcome::Unavailable`] wherever it struck (the inbox insert, a statement,
//! the commit) and whatever the handler made of it: the event goes back to its queue and the
//! attempt does not count. Only the unit of work's own failures count towards the dead letters.

use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

use crate::bindings::message_handler::{HandleError, IncomingEvent};
use crate::capabilities::sql::{self, Fault, FinishError, Guard, Value};
use crate::engine::Runtime;
use crate::service::Service;
use crate::state::StoreState;
use crate::triggers::http::unit_of_work_label;

/// Longest reason a handler may give, in bytes: it travels in the retry and dead-letter copies'
/// headers, in log lines and on spans.
const MAX_REASON: usize = 1024;

/// The handler's reason, cut to [`MAX_REASON`].
fn reason(why: &str) -> String {
    crate::telemetry::truncated(why, MAX_REASON).to_owned()
}

/// How long the database may take to answer after a delivery ran out of time, before the wait
/// counts as an outage.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled and committed.
    Handled,
    /// Handled before; nothing ran.
    Duplicate,
    /// The handler failed or asked to be retried.
    Retry(String),
    /// The handler refused the event for good.
    Reject(String),
    /// The database was unreachable: not the event's fault, try it again unchanged.
    Unavailable(String),
}

#[tracing::instrument(
    name = "message.deliver",
    skip_all,
    fields(
        component = %service.name,
        messaging.destination.name = %event.topic,
        messaging.message.id = %event.id,
        attempt = event.attempt,
    )
)]
pub async fn deliver(
    runtime: &Runtime,
    service: &Service,
    event: IncomingEvent,
    deadline: Duration,
) -> Outcome {
    let deadline_at = Instant::now() + deadline;
    let mut store = service.new_store(runtime, deadline_at);
    let answer = match tokio::time::timeout_at(
        deadline_at.into(),
        handle(&mut store, service, &event),
    )
    .await
    {
        Ok(Ok(answer)) => answer,
        Ok(Err(settled)) => {
            let finished = store.data_mut().sql.finish(false).await;
            service
                .metrics
                .unit_of_work("message", unit_of_work_label(&finished));
            return settled;
        }
        Err(_elapsed) => {
            // Dropping the store cancels what runs on the server and closes its connection,
            // which rolls back without waiting behind whatever was too slow.
            crate::state::retire(store);
            service.metrics.trap("message");
            service.metrics.unit_of_work("message", "rolled_back");
            // Whose fault the wait was: a database that does not answer now is an outage.
            return match tokio::time::timeout(PING_TIMEOUT, service.database.ping()).await {
                Ok(Ok(())) => {
                    Outcome::Retry(format!("the handler did not finish within {deadline:?}"))
                }
                Ok(Err(why)) => {
                    Outcome::Unavailable(format!("the database does not answer: {why}"))
                }
                Err(_) => Outcome::Unavailable(format!(
                    "the database does not answer within {PING_TIMEOUT:?}"
                )),
            };
        }
    };
    let finished = store.data_mut().sql.finish(answer.is_ok()).await;
    let label = match store.data().sql.guarded() {
        Some(Guard::NoRow) => "duplicate",
        _ => unit_of_work_label(&finished),
    };
    service.metrics.unit_of_work("message", label);
    let fault = store.data().sql.fault();
    let outcome = match (store.data().sql.guarded(), answer, finished) {
        (Some(Guard::NoRow), _, _) => {
            tracing::debug!("duplicate delivery; its unit of work was rolled back");
            Outcome::Duplicate
        }
        (Some(Guard::Failed(err)), _, _) => inbox_failed(err),
        (_, answer, finished) => outcome_of(store.data(), answer, finished, fault),
    };
    tracing::debug!(?outcome, "delivery done");
    crate::state::retire(store);
    outcome
}

/// The outcome of a unit of work its guard let through.
fn outcome_of(
    state: &StoreState,
    answer: Result<(), Outcome>,
    finished: Result<sql::Outcome, FinishError>,
    fault: Option<Fault>,
) -> Outcome {
    match (answer, finished) {
        (Ok(()), Ok(_)) => {
            state.messaging.committed();
            Outcome::Handled
        }
        // The inbox row makes a second run harmless if the commit did happen.
        (_, Err(err @ FinishError::OutcomeUnknown(_))) => Outcome::Unavailable(err.to_string()),
        (_, Err(err)) if fault == Some(Fault::Outage) => Outcome::Unavailable(err.to_string()),
        (_, _) if fault == Some(Fault::Outage) => {
            Outcome::Unavailable("the database was unreachable".into())
        }
        (Err(outcome), _) => outcome,
        (Ok(()), Err(err)) => Outcome::Retry(err.to_string()),
    }
}

/// The outcome of a delivery whose inbox insert failed.
fn inbox_failed(err: &sql::Error) -> Outcome {
    // Waiting on another consumer's uncommitted row for the same event, until a timeout or a
    // lock limit: the other may yet roll back, so this is for later, not for the dead letters.
    if matches!(err, sql::Error::Database(db) if db.code == "57014" || db.code == "55P03") {
        return Outcome::Retry(format!("cannot record the event in the inbox yet: {err:?}"));
    }
    match Fault::of(err) {
        Fault::Outage => {
            Outcome::Unavailable(format!("cannot record the event in the inbox: {err:?}"))
        }
        Fault::Conflict => Outcome::Retry(format!("cannot record the event in the inbox: {err:?}")),
        // PostgreSQL refused this event's id or source (too long, a NUL byte): it will refuse
        // it every time, so retrying cannot help.
        Fault::UnitOfWork => {
            tracing::error!(error = ?err, "cannot record the event in the inbox");
            Outcome::Reject(format!("cannot record the event in the inbox: {err:?}"))
        }
    }
}

/// Runs the handler, its unit of work guarded by the event's inbox row: `Ok` with the handler's
/// answer (an `Err` outcome when it failed), or `Err` when the delivery is settled without it.
async fn handle(
    store: &mut Store<StoreState>,
    service: &Service,
    event: &IncomingEvent,
) -> Result<Result<(), Outcome>, Outcome> {
    store.data_mut().sql.guard(
        "INSERT INTO platform_inbox (source, event_id, topic) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        vec![Value::Text(event.source.clone()), Value::Text(event.id.clone()), Value::Text(event.topic.clone())],
    );
    let code = service.code();
    let Some(subscriber) = &code.subscriber else {
        return Err(Outcome::Reject(format!(
            "component `{}` does not consume events",
            service.name
        )));
    };
    let handled = async {
        let instance = subscriber.instantiate_async(&mut *store).await?;
        instance
            .platform_service_message_handler()
            .call_handle(&mut *store, event)
            .await
    };
    let handled = handled.await;
    // The guard's verdict, within the deadline, whatever the handler made of its work: a
    // duplicate is acknowledged even when its handler failed before any statement.
    store.data_mut().sql.send_guard_alone().await;
    Ok(match handled {
        Ok(Ok(())) => Ok(()),
        Ok(Err(HandleError::Retry(why))) => Err(Outcome::Retry(reason(&why))),
        Ok(Err(HandleError::Reject(why))) => Err(Outcome::Reject(reason(&why))),
        Err(trap) if matches!(trap.downcast_ref::<Trap>(), Some(Trap::Interrupt)) => {
            service.metrics.trap("message");
            Err(Outcome::Retry(
                "the handler was still running at its deadline".into(),
            ))
        }
        Err(trap) => {
            service.metrics.trap("message");
            if service.log_rate().allows_line() {
                tracing::error!(error = %trap, "the handler trapped");
            }
            Err(Outcome::Retry(reason(&format!(
                "the handler trapped: {trap}"
            ))))
        }
    })
}
