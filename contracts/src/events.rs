//! The events that cross the broker, as CloudEvents 1.0 in structured JSON mode.
//!
//! A topic is also the event's CloudEvents `type`. Each event's `data` has a version, named in
//! `dataschema`; a consumer refuses a version it does not know instead of guessing. The JSON
//! Schema of each whole event is kept in `contracts/schemas/` and checked against these types in
//! a test, so a consumer written in another language can rely on it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::{Amount, CustomerId, EventId, InvoiceId, OrderId, Timestamp};

/// CloudEvents `specversion`.
pub const SPEC_VERSION: &str = "1.0";

/// The `datacontenttype` of every event here.
pub const JSON: &str = "application/json";

/// An event's topic (its CloudEvents `type`) and the schema of its `data`.
pub trait Event: Serialize + for<'de> Deserialize<'de> {
    const TOPIC: &'static str;
    /// CloudEvents `dataschema`: the version of `data` this type reads and writes.
    const DATA_SCHEMA: &'static str;
}

/// `orders.created`: an order was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderCreated {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub amount: Amount,
    pub created_at: Timestamp,
}

impl Event for OrderCreated {
    const TOPIC: &'static str = "orders.created";
    const DATA_SCHEMA: &'static str = "urn:contracts:orders.created:v1";
}

/// `invoices.issued`: an invoice was issued for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvoiceIssued {
    pub invoice_id: InvoiceId,
    pub order_id: OrderId,
    pub amount: Amount,
    pub issued_at: Timestamp,
}

impl Event for InvoiceIssued {
    const TOPIC: &'static str = "invoices.issued";
    const DATA_SCHEMA: &'static str = "urn:contracts:invoices.issued:v1";
}

/// A whole event as it travels: the CloudEvents 1.0 envelope around `data`, in structured JSON
/// mode. The one envelope of the system: the services build it typed ([`CloudEvent::new`]); the
/// host writes and reads it with borrowed text around raw JSON `data`, which it never looks into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<'a, D> {
    /// Always [`SPEC_VERSION`].
    #[serde(borrow)]
    pub specversion: Cow<'a, str>,
    /// Unique per event from its source: consumers de-duplicate on (`source`, `id`).
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// The topic, such as `orders.created`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// The component that published it.
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    /// When it happened, RFC 3339.
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    /// The media type of `data`: [`JSON`] for every event here.
    #[serde(borrow)]
    pub datacontenttype: Cow<'a, str>,
    /// The version of `data` (see [`Event::DATA_SCHEMA`]).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<Cow<'a, str>>,
    /// W3C trace context of the publishing request (the distributed tracing extension).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<Cow<'a, str>>,
    /// The event itself.
    pub data: D,
}

impl<E: Event> CloudEvent<'static, E> {
    /// Event `data` with id `id`, published by `source` at `time`, in its envelope.
    pub fn new(id: EventId, source: &str, time: Timestamp, data: E) -> Self {
        Self {
            specversion: SPEC_VERSION.into(),
            id: id.to_string().into(),
            kind: E::TOPIC.into(),
            source: source.to_owned().into(),
            time: time.to_string().into(),
            datacontenttype: JSON.into(),
            dataschema: Some(E::DATA_SCHEMA.into()),
            traceparent: None,
            data,
        }
    }
}

/// Why received `data` is not an event of the expected type.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("dataschema {found:?} is not {expected:?}, the version this consumer reads")]
    UnknownSchema {
        expected: &'static str,
        found: Option<String>,
    },
    #[error("data is not a valid {topic} event: {source}")]
    Invalid {
        topic: &'static str,
        source: serde_json::Error,
    },
}

/// Reads `data` of an event of type `E`, checking its schema version first.
pub fn decode<E: Event>(data_schema: Option<&str>, data: &[u8]) -> Result<E, DecodeError> {
    if data_schema != Some(E::DATA_SCHEMA) {
        return Err(DecodeError::UnknownSchema {
            expected: E::DATA_SCHEMA,
            found: data_schema.map(str::to_owned),
        });
    }
    serde_json::from_slice(data).map_err(|source| DecodeError::Invalid {
        topic: E::TOPIC,
        source,
    })
}

#[cfg(test)]
mod tests;
