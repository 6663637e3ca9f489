//! One delivered event as one unit of work: de-duplicate, run the handler, commit or roll back.
//!
//! 1. A fresh store and instance, as for an HTTP request.
//! 2. `INSERT INTO platform_inbox ... ON CONFLICT DO NOTHING` on the event's (source, id), in
//!    the unit of work's transaction. No row inserted means it was handled before: the handler
//!    does not run again. A competing consumer handling the same event at the same moment waits
//!    on that row until the first commits, then finds it.
//! 3. `message-handler.handle`, bounded by the store's deadline.
//! 4. Commit on `ok`, roll back otherwise; the caller acknowledges only after this returns.

use std::time::Duration;

use crate::bindings::message_handler::{HandleError, IncomingEvent};
use crate::capabilities::sql::{Error as SqlError, FinishError, Value};
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
    let mut store = service.new_store(runtime, Runtime::ticks(deadline));
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
        Err(SqlError::Unavailable(why)) => {
            let _ = store.data_mut().sql.finish(false).await;
            return Outcome::Unavailable(why);
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
    let handled = tokio::time::timeout(deadline, async {
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
    let unavailable = store.data().sql.saw_unavailable();
    let finished = store.data_mut().sql.finish(answer.is_ok()).await;
    let outcome = match (answer, finished) {
        (Ok(()), Ok(_)) => {
            store.data().messaging.committed();
            Outcome::Handled
        }
        (Ok(()), Err(FinishError::Commit(SqlError::Unavailable(why)))) => {
            Outcome::Unavailable(format!("commit failed: {why}"))
        }
        (Ok(()), Err(FinishError::Commit(err))) => Outcome::Retry(format!("commit failed: {err:?}")),
        (Ok(()), Err(err @ FinishError::StatementFailed(_))) if !unavailable => Outcome::Retry(err.to_string()),
        (_, _) if unavailable => Outcome::Unavailable("the database was unreachable".into()),
        (Err(outcome), _) => outcome,
        (Ok(()), Err(err)) => Outcome::Retry(err.to_string()),
    };
    tracing::debug!(?outcome, "delivery done");
    outcome
}
