//! One delivered event as one unit of work: de-duplicate, run the handler, commit or roll back.
//!
//! 1. A fresh store and instance, as for an HTTP request.
//! 2. `INSERT INTO platform_inbox ... ON CONFLICT DO NOTHING` on the event's (source, id), in
//!    the unit of work's transaction. No row inserted means it was handled before: the handler
//!    does not run again. A competing consumer handling the same event at the same moment waits
//!    on that row until the first commits, then finds it.
//! 3. `message-handler.handle`, bounded by the store's deadline.
//! 4. Commit on `ok`, roll back otherwise; the caller acknowledges only after this returns.
//!
//! A failure the database caused ([`Fault::Outage`]: a restart, a lost connection, no free
//! connection) is [`Outcome::Unavailable`] wherever it struck (the inbox insert, a statement,
//! the commit) and whatever the handler made of it: the event goes back to its queue and the
//! attempt does not count. Only the unit of work's own failures count towards the dead letters.

use std::time::{Duration, Instant};

use crate::bindings::message_handler::{HandleError, IncomingEvent};
use crate::capabilities::sql::{Fault, FinishError, Value};
use crate::engine::Runtime;
use crate::service::Service;

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
pub async fn deliver(runtime: &Runtime, service: &Service, event: IncomingEvent, deadline: Duration) -> Outcome {
    let deadline_at = Instant::now() + deadline;
    let mut store = service.new_store(runtime, deadline_at);
    let inbox = store
        .data_mut()
        .sql
        .execute(
            "INSERT INTO platform_inbox (source, event_id, topic) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            vec![Value::Text(event.source.clone()), Value::Text(event.id.clone()), Value::Text(event.topic.clone())],
        )
        .await;
    match inbox {
        Ok(0) => {
            let _ = store.data_mut().sql.finish(false).await;
            tracing::debug!("duplicate delivery; acknowledged without running the handler");
            return Outcome::Duplicate;
        }
        Ok(_) => {}
        Err(err) if Fault::of(&err) != Fault::UnitOfWork => {
            let _ = store.data_mut().sql.finish(false).await;
            return Outcome::Unavailable(format!("cannot record the event in the inbox: {err:?}"));
        }
        Err(other) => {
            // PostgreSQL refused this event's id or source (too long, a NUL byte): it will
            // refuse it every time, so retrying cannot help.
            let _ = store.data_mut().sql.finish(false).await;
            tracing::error!(error = ?other, "cannot record the event in the inbox");
            return Outcome::Reject(format!("cannot record the event in the inbox: {other:?}"));
        }
    }

    let code = service.code();
    let Some(subscriber) = &code.subscriber else {
        let _ = store.data_mut().sql.finish(false).await;
        return Outcome::Reject(format!("component `{}` does not consume events", service.name));
    };
    let handled = tokio::time::timeout_at(deadline_at.into(), async {
        let instance = subscriber.instantiate_async(&mut store).await?;
        instance.platform_service_message_handler().call_handle(&mut store, &event).await
    })
    .await;
    let answer = match handled {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(HandleError::Retry(why)))) => Err(Outcome::Retry(why)),
        Ok(Ok(Err(HandleError::Reject(why)))) => Err(Outcome::Reject(why)),
        Ok(Err(trap)) => {
            tracing::error!(error = format!("{trap:#}"), "the handler trapped");
            Err(Outcome::Retry(format!("the handler trapped: {trap}")))
        }
        Err(_elapsed) => {
            // Dropping the store closes its connection, which rolls back without waiting
            // behind whatever was too slow.
            drop(store);
            return Outcome::Retry(format!("the handler did not finish within {deadline:?}"));
        }
    };
    let finished = store.data_mut().sql.finish(answer.is_ok()).await;
    let fault = store.data().sql.fault().max(finished.as_ref().err().map(FinishError::fault));
    let outcome = match (answer, finished) {
        (Ok(()), Ok(_)) => {
            store.data().messaging.committed();
            Outcome::Handled
        }
        (_, Err(err)) if fault == Some(Fault::Outage) => Outcome::Unavailable(err.to_string()),
        (_, _) if fault == Some(Fault::Outage) => Outcome::Unavailable("the database was unreachable".into()),
        (Err(outcome), _) => outcome,
        (Ok(()), Err(err)) => Outcome::Retry(err.to_string()),
    };
    tracing::debug!(?outcome, "delivery done");
    outcome
}
