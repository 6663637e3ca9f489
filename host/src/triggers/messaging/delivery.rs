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
//! The unit of work itself (store, deadline, commit, verdict) is [`UnitOfWork`]'s; this module
//! is the adapter that turns its [`Verdict`] into what the consumer does. A failure the
//! database caused (an outage: a restart, a lost connection, no free connection) is
//! [`Outcome::Unavailable`] wherever it struck (the inbox insert, a statement, the commit) and
//! whatever the handler made of it: the event goes back to its queue and the attempt does not
//! count. Only the unit of work's own failures count towards the dead letters.

use std::time::Duration;

use wasmtime::Store;

use crate::bindings::message_handler::{HandleError, IncomingEvent};
use crate::capabilities::sql::Value;
use crate::engine::Runtime;
use crate::service::Service;
use crate::service::unit_of_work::{Call, GuestFailure, UnitOfWork, Verdict};
use crate::state::StoreState;

/// Longest reason a delivery's outcome carries, in bytes: it travels in the retry and
/// dead-letter copies' headers, in log lines and on spans.
const MAX_REASON: usize = 1024;

/// `why`, cut to [`MAX_REASON`].
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
    /// The component had no free instance: not the event's fault either.
    Busy(String),
}

/// Delivers `event` as one unit of work, and says what the consumer is to do with it.
#[tracing::instrument(
    name = "message.deliver",
    skip_all,
    fields(
        component = %service.name(),
        messaging.destination.name = %event.topic,
        messaging.message.id = %event.id,
        attempt = event.attempt,
        outcome = tracing::field::Empty,
    )
)]
pub async fn deliver(
    runtime: &Runtime,
    service: &Service,
    event: IncomingEvent,
    deadline: Duration,
) -> Outcome {
    let handle = Handle {
        service,
        event: &event,
    };
    let ended = UnitOfWork::new(service, "message", deadline)
        .run(runtime, handle)
        .await;
    let outcome = match (ended.verdict, ended.answer) {
        (Verdict::Committed | Verdict::Empty, _) => Outcome::Handled,
        (Verdict::Duplicate, _) => {
            tracing::debug!("duplicate delivery; its unit of work was rolled back");
            Outcome::Duplicate
        }
        (Verdict::RolledBack, Some(Err(HandleError::Reject(why)))) => Outcome::Reject(reason(&why)),
        (Verdict::RolledBack, Some(Err(HandleError::Retry(why)))) => Outcome::Retry(reason(&why)),
        (Verdict::RolledBack, _) => Outcome::Retry("the unit of work was rolled back".into()),
        (Verdict::TimedOut, _) => timed_out(service, deadline).await,
        (Verdict::Busy(why), _) => Outcome::Busy(reason(&why)),
        (Verdict::Outage(why) | Verdict::OutcomeUnknown(why), _) => {
            // The inbox row makes a second run harmless if an unknown commit did happen.
            Outcome::Unavailable(reason(&why))
        }
        (Verdict::Trapped(why) | Verdict::Conflict(why), _) => Outcome::Retry(reason(&why)),
        (Verdict::Failed { reason: why, .. }, _) => Outcome::Retry(reason(&why)),
        (Verdict::Refused(why), _) => Outcome::Reject(reason(&why)),
    };
    tracing::debug!(?outcome, "delivery done");
    outcome
}

/// A delivery that ran out of time: the handler's fault, unless the database does not answer
/// now either.
async fn timed_out(service: &Service, deadline: Duration) -> Outcome {
    match tokio::time::timeout(PING_TIMEOUT, service.reach.database.ping()).await {
        Ok(Ok(())) => Outcome::Retry(format!("the handler did not finish within {deadline:?}")),
        Ok(Err(why)) => {
            Outcome::Unavailable(reason(&format!("the database does not answer: {why}")))
        }
        Err(_) => Outcome::Unavailable(format!(
            "the database does not answer within {PING_TIMEOUT:?}"
        )),
    }
}

/// The call into `message-handler.handle`, its unit of work guarded by the event's inbox row.
struct Handle<'a> {
    service: &'a Service,
    event: &'a IncomingEvent,
}

impl Call for Handle<'_> {
    type Answer = Result<(), HandleError>;

    async fn run(self, store: &mut Store<StoreState>) -> Result<Self::Answer, GuestFailure> {
        let event = self.event;
        store.data_mut().capabilities.sql.guard(
            "record the event in the inbox",
            "INSERT INTO platform_inbox (source, event_id, topic) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            vec![
                Value::Text(event.source.clone()),
                Value::Text(event.id.clone()),
                Value::Text(event.topic.clone()),
            ],
        );
        let code = self.service.code();
        let Some(subscriber) = &code.subscriber else {
            return Ok(Err(HandleError::Reject(format!(
                "component `{}` does not consume events",
                self.service.name()
            ))));
        };
        let handled = async {
            let instance = subscriber
                .instantiate_async(&mut *store)
                .await
                .map_err(|err| GuestFailure::of("instantiation failed", &err))?;
            instance
                .platform_service_message_handler()
                .call_handle(&mut *store, event)
                .await
                .map_err(|trap| GuestFailure::of("the handler trapped", &trap))
        }
        .await;
        // The guard's verdict, within the deadline, whatever the handler made of its work: a
        // duplicate is acknowledged even when its handler failed before any statement.
        store.data_mut().capabilities.sql.send_guard_alone().await;
        handled
    }

    fn commits(answer: &Self::Answer) -> bool {
        answer.is_ok()
    }
}
