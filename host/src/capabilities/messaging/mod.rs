//! The `platform:service/messaging` capability: `publish` writes the event to the component's
//! outbox table in the unit of work's own transaction, so an event goes out if and only if the
//! work commits. Once it has, its events go to [`outbox::Relay`] from memory ([`fresh`]), which
//! publishes them and marks their rows sent; rows whose events did not get out that way are
//! carried by the relay's pass over the outbox.
//!
//! - [`Outbound`] is built once per component: the topics it may publish to, its name as the
//!   CloudEvents `source`, the events committed and not yet taken by the relay, and its
//!   wake-up.
//! - [`MessagingCtx`] is created per store and counts what the unit of work published.
//! - [`Messaging`] is the view the generated `Host` trait is implemented on; it borrows the
//!   store's [`SqlCtx`] too, since the outbox row belongs to the same transaction.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::Notify;
use wasmtime::component::{HasData, Linker};

use crate::bindings::messaging::{self as wit, OutgoingEvent, PublishError};
use crate::capabilities::memory::{Held, HostMemory};
use crate::capabilities::sql::{Error as SqlError, SqlCtx, Value};
use crate::telemetry::metrics::ComponentMetrics;
use crate::telemetry::{propagation, truncated};
use fresh::{Event, Fresh, FreshEvent};

pub mod broker;
pub mod cloudevent;
pub mod fresh;
pub mod outbox;
pub mod retention;
pub mod tables;

/// Longest event id, in bytes (an AMQP `message-id` is at most 255).
pub const MAX_ID_BYTES: usize = 200;

/// Longest `content-type`, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 256;

/// Longest `data-schema`, in bytes.
pub const MAX_DATA_SCHEMA_BYTES: usize = 2048;

/// What the host keeps of an event beside its strings and data, until the commit.
const EVENT_OVERHEAD: usize = 512;

/// How much one unit of work may publish (from the component's limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishLimits {
    /// The `data` of one event.
    pub max_event_bytes: usize,
    /// Everything the unit of work publishes, strings and data.
    pub max_published_bytes: usize,
}

/// What one component may publish, built once.
#[derive(Debug, Default)]
pub struct Outbound {
    /// The CloudEvents `source` of everything it publishes: the component's name.
    pub source: String,
    /// The topics the manifest lets it publish; a publish to any other is refused.
    pub topics: HashSet<String>,
    /// Events committed, waiting for the relay.
    pub fresh: Fresh,
    /// Woken after a unit of work that published commits, so events leave at once.
    pub wakeup: Notify,
}

/// The messaging side of one unit of work.
pub struct MessagingCtx {
    outbound: Arc<Outbound>,
    /// Each event published, in order, kept for the relay once the unit of work commits.
    published: Vec<FreshEvent>,
    /// An event published was not kept (its copy would not fit the component's share of host
    /// memory): the relay finds it in the outbox.
    left_behind: bool,
    metrics: ComponentMetrics,
    limits: PublishLimits,
    /// The component's share of host memory, and what this unit of work's events hold of it
    /// until they leave with the commit.
    memory: Arc<HostMemory>,
    held: Held,
    /// Bytes published so far.
    published_bytes: usize,
}

impl MessagingCtx {
    /// The messaging side of a new unit of work of the component `outbound` describes.
    pub fn new(
        outbound: Arc<Outbound>,
        metrics: ComponentMetrics,
        limits: PublishLimits,
        memory: Arc<HostMemory>,
    ) -> Self {
        Self {
            outbound,
            published: Vec::new(),
            left_behind: false,
            metrics,
            limits,
            memory,
            held: Held::default(),
            published_bytes: 0,
        }
    }

    /// Call once the unit of work committed: counts what it published, hands the events to the
    /// relay and wakes it.
    pub fn committed(&mut self) {
        if self.published.is_empty() && !self.left_behind {
            return;
        }
        for event in &self.published {
            self.metrics.published(&event.event.topic, 1);
        }
        let published = std::mem::take(&mut self.published);
        self.outbound.fresh.push(published, self.left_behind);
        self.outbound.wakeup.notify_one();
    }
}

/// The view the generated `messaging` host trait is implemented on: the unit of work's messaging
/// and its transaction, which the outbox insert joins.
pub struct Messaging<'a> {
    ctx: &'a mut MessagingCtx,
    sql: &'a mut SqlCtx,
}

impl<'a> Messaging<'a> {
    /// Borrows one store's messaging and SQL contexts for a call.
    pub fn new(ctx: &'a mut MessagingCtx, sql: &'a mut SqlCtx) -> Self {
        Self { ctx, sql }
    }

    /// Checks `event` against the rules and the unit of work's limits, and reserves what the host
    /// keeps of it until the commit. Lengths first: nothing of a value over its limit is read.
    fn check(&mut self, event: &OutgoingEvent) -> Result<Held, PublishError> {
        let too_long = |field: &str, limit: usize| {
            PublishError::Invalid(format!("{field} is over {limit} bytes"))
        };
        if event.id.trim().is_empty() || event.id.len() > MAX_ID_BYTES {
            return Err(PublishError::Invalid(format!(
                "id must be 1 to {MAX_ID_BYTES} bytes"
            )));
        }
        if event.content_type.len() > MAX_CONTENT_TYPE_BYTES {
            return Err(too_long("content-type", MAX_CONTENT_TYPE_BYTES));
        }
        if event
            .data_schema
            .as_ref()
            .is_some_and(|schema| schema.len() > MAX_DATA_SCHEMA_BYTES)
        {
            return Err(too_long("data-schema", MAX_DATA_SCHEMA_BYTES));
        }
        if event.data.len() > self.ctx.limits.max_event_bytes {
            return Err(too_long("data", self.ctx.limits.max_event_bytes));
        }
        if !self.ctx.outbound.topics.contains(&event.topic) {
            return Err(PublishError::NotAllowed(format!(
                "component `{}` may not publish to {:?}; add it to `publishes` in the manifest",
                self.ctx.outbound.source,
                truncated(&event.topic, 256)
            )));
        }
        // PostgreSQL text cannot hold NUL; refused here, since the row is only written at commit.
        let texts = [
            ("id", Some(&event.id)),
            ("content-type", Some(&event.content_type)),
            ("data-schema", event.data_schema.as_ref()),
        ];
        if let Some((field, _)) = texts
            .iter()
            .find(|(_, text)| text.is_some_and(|text| text.contains('\0')))
        {
            return Err(PublishError::Invalid(format!(
                "{field} contains a NUL character"
            )));
        }
        if !contracts::media::is_json(&event.content_type) {
            return Err(PublishError::Invalid(format!(
                "content-type {:?}: only application/json data is carried",
                event.content_type
            )));
        }
        serde_json::from_slice::<serde::de::IgnoredAny>(&event.data)
            .map_err(|err| PublishError::Invalid(format!("data is not valid JSON: {err}")))?;
        let bytes = EVENT_OVERHEAD
            + event.id.len()
            + event.topic.len()
            + event.content_type.len()
            + event.data_schema.as_ref().map_or(0, String::len)
            + event.data.len();
        let published = self.ctx.published_bytes + bytes;
        if published > self.ctx.limits.max_published_bytes {
            return Err(PublishError::Invalid(format!(
                "this unit of work would publish {published} bytes, over {} (max_published_bytes)",
                self.ctx.limits.max_published_bytes
            )));
        }
        let held = self
            .ctx
            .memory
            .reserve(bytes)
            .map_err(|spent| PublishError::Invalid(spent.to_string()))?;
        self.ctx.published_bytes = published;
        Ok(held)
    }
}

impl wit::Host for Messaging<'_> {
    /// The outbox write's span is the parent of the relay's publish: its context is stored with
    /// the row.
    #[tracing::instrument(
        name = "messaging.create",
        skip_all,
        fields(
            otel.name = %format_args!("create {}", truncated(&event.topic, 256)),
            otel.kind = "producer",
            component = %self.ctx.outbound.source,
            messaging.system = "rabbitmq",
            messaging.operation.type = "create",
            messaging.destination.name = %truncated(&event.topic, 256),
            messaging.message.id = %truncated(&event.id, MAX_ID_BYTES),
        )
    )]
    async fn publish(
        &mut self,
        event: OutgoingEvent,
    ) -> wasmtime::Result<Result<(), PublishError>> {
        let held = match self.check(&event) {
            Ok(held) => held,
            Err(refused) => return Ok(Err(refused)),
        };
        let traceparent = propagation::traceparent_of(&tracing::Span::current());
        // The relay's copy, sent from memory once the unit of work commits; without room for
        // it, the relay reads the row instead.
        let kept = self
            .ctx
            .memory
            .reserve(held.bytes())
            .ok()
            .map(|held| FreshEvent {
                event: Event {
                    id: event.id.clone(),
                    topic: event.topic.clone(),
                    content_type: event.content_type.clone(),
                    data_schema: event.data_schema.clone(),
                    data: event.data.clone(),
                    traceparent: traceparent.clone(),
                    time: chrono::Utc::now(),
                },
                held,
            });
        let params = vec![
            Value::Text(event.id),
            Value::Text(event.topic),
            Value::Text(self.ctx.outbound.source.clone()),
            Value::Text(event.content_type),
            event.data_schema.map_or(Value::Null, Value::Text),
            Value::Bytes(event.data),
            traceparent.map_or(Value::Null, Value::Text),
        ];
        // Nothing reads the row before the commit: it goes to the server with the commit.
        match self.sql.defer(outbox::INSERT, params).await {
            Ok(_) => {
                self.ctx.held.merge(held);
                match kept {
                    Some(event) => self.ctx.published.push(event),
                    None => self.ctx.left_behind = true,
                }
                Ok(Ok(()))
            }
            Err(SqlError::Unavailable(why)) => Ok(Err(PublishError::Unavailable(why))),
            Err(other) => Ok(Err(PublishError::Unavailable(format!(
                "cannot write the outbox: {other:?}"
            )))),
        }
    }
}

struct HasMessaging;

impl HasData for HasMessaging {
    type Data<'a> = Messaging<'a>;
}

/// Adds `platform:service/messaging` to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Messaging<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasMessaging>(linker, view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::sql::RowSet;
    use crate::capabilities::sql::fake::{Call, FakeDatabase};

    fn event(id: &str, data_schema: Option<&str>) -> OutgoingEvent {
        OutgoingEvent {
            id: id.into(),
            topic: "orders.created".into(),
            content_type: "application/json".into(),
            data_schema: data_schema.map(str::to_owned),
            data: b"{}".to_vec(),
        }
    }

    async fn publish(event: OutgoingEvent) -> (Result<(), PublishError>, Vec<Call>) {
        let database = FakeDatabase::new(|_, _| {
            Ok(RowSet {
                columns: vec![],
                rows: vec![vec![]],
            })
        });
        let outbound = Outbound {
            source: "orders".into(),
            topics: ["orders.created".to_owned()].into(),
            ..Outbound::default()
        };
        let far = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let memory = HostMemory::new(64 << 20);
        let metrics = Arc::new(crate::telemetry::metrics::Metrics::new()).component("test");
        let limits = PublishLimits {
            max_event_bytes: 256 << 10,
            max_published_bytes: 1 << 20,
        };
        let mut ctx = MessagingCtx::new(Arc::new(outbound), metrics, limits, memory.clone());
        let limits = crate::capabilities::sql::SqlLimits {
            max_statement_bytes: 1 << 16,
            max_parameters: 64,
            max_parameter_bytes: 1 << 20,
            max_result_bytes: 1 << 20,
        };
        let component = crate::capabilities::sql::SqlComponent {
            database: Arc::new(database.clone()),
            limits,
            memory,
            turns: Arc::new(tokio::sync::Semaphore::new(1)),
            verdicts: Default::default(),
        };
        let mut sql = SqlCtx::new(Arc::new(component), far);
        let published = wit::Host::publish(&mut Messaging::new(&mut ctx, &mut sql), event)
            .await
            .expect("no trap");
        (published, database.calls())
    }

    #[tokio::test]
    async fn text_with_a_nul_character_is_refused_at_publish_not_left_to_fail_the_commit() {
        for event in [event("a\0b", None), event("order-1", Some("urn:x\0"))] {
            let (published, calls) = publish(event).await;
            assert!(
                matches!(published, Err(PublishError::Invalid(ref why)) if why.contains("NUL")),
                "{published:?}"
            );
            assert!(calls.is_empty(), "{calls:?}");
        }
        let (published, calls) = publish(event("order-1", Some("urn:orders:created:v1"))).await;
        assert!(published.is_ok(), "{published:?}");
        assert_eq!(calls.len(), 2, "begin and the outbox insert: {calls:?}");
    }
}
