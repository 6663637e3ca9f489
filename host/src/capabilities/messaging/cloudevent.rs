//! The wire format of events: CloudEvents 1.0 in structured JSON mode
//! (`application/cloudevents+json`), with `data` as embedded JSON and W3C `traceparent`.
//!
//! The envelope is [`contracts::events::CloudEvent`], the one the services use. The host writes it
//! from an outbox row and reads it back from a delivery, with `data` as raw JSON: it never looks
//! inside `data`, which belongs to the services.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use contracts::events::{CloudEvent, SPEC_VERSION};
use serde_json::value::RawValue;

use crate::bindings::message_handler::IncomingEvent;
use crate::telemetry::truncated;

/// What a delivered envelope may hold beside its data, in bytes.
pub const ENVELOPE_BYTES: usize = 16 * 1024;

/// The longest value of each envelope field a delivery may carry, in bytes: the host copies them
/// into the handler's event, spans, log lines and the headers of retry and dead-letter copies.
const FIELD_LIMITS: [(&str, usize); 8] = [
    ("specversion", 16),
    ("id", super::MAX_ID_BYTES),
    ("type", 200),
    ("source", 64),
    ("time", 64),
    ("datacontenttype", super::MAX_CONTENT_TYPE_BYTES),
    ("dataschema", super::MAX_DATA_SCHEMA_BYTES),
    ("traceparent", 256),
];

/// How much of a refused value an error shows.
const SHOWN: usize = 64;

/// The AMQP content type of a structured CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The fields of an outbox row that make up an event.
pub struct Outgoing<'a> {
    /// The event's id, unique per source.
    pub id: &'a str,
    /// Its topic, which is its CloudEvents `type` and its routing key.
    pub topic: &'a str,
    /// The publishing component.
    pub source: &'a str,
    /// When the unit of work that published it wrote it.
    pub time: DateTime<Utc>,
    /// The media type of `data`.
    pub content_type: &'a str,
    /// The version of `data`, when the publisher named one.
    pub data_schema: Option<&'a str>,
    /// The trace context to carry to the consumer.
    pub traceparent: Option<&'a str>,
    /// The event's data, JSON.
    pub data: &'a [u8],
}

/// Writes the envelope; fails only if `data` is not JSON (publish checked it already).
pub fn encode(event: &Outgoing<'_>) -> Result<Vec<u8>, serde_json::Error> {
    let data: &RawValue = serde_json::from_slice(event.data)?;
    serde_json::to_vec(&CloudEvent {
        specversion: SPEC_VERSION.into(),
        id: event.id.into(),
        kind: event.topic.into(),
        source: event.source.into(),
        time: event
            .time
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .into(),
        datacontenttype: event.content_type.into(),
        dataschema: event.data_schema.map(Into::into),
        traceparent: event.traceparent.map(Into::into),
        data,
    })
}

/// Reads a delivered message body into what the component's handler receives, and the
/// publisher's `traceparent`. A body over `max_data` bytes of data (plus [`ENVELOPE_BYTES`]) or
/// a field over its limit is refused, and a refusal shows at most a few bytes of any value.
pub fn decode(
    body: &[u8],
    attempt: u32,
    max_data: usize,
) -> Result<(IncomingEvent, Option<String>), String> {
    let most = max_data.saturating_add(ENVELOPE_BYTES);
    if body.len() > most {
        return Err(format!(
            "the message is {} bytes, over the {most} bytes its subscriber takes",
            body.len()
        ));
    }
    let envelope: CloudEvent<'_, &RawValue> = serde_json::from_slice(body).map_err(|err| {
        format!(
            "not a CloudEvents JSON envelope: {}",
            truncated(&err.to_string(), 2 * SHOWN)
        )
    })?;
    let fields = [
        Some(&envelope.specversion),
        Some(&envelope.id),
        Some(&envelope.kind),
        Some(&envelope.source),
        Some(&envelope.time),
        Some(&envelope.datacontenttype),
        envelope.dataschema.as_ref(),
        envelope.traceparent.as_ref(),
    ];
    for ((field, limit), value) in FIELD_LIMITS.iter().zip(fields) {
        if let Some(value) = value.filter(|value| value.len() > *limit) {
            return Err(format!("{field} is {} bytes, over {limit}", value.len()));
        }
    }
    if envelope.specversion != SPEC_VERSION {
        return Err(format!(
            "specversion {:?} is not 1.0",
            truncated(&envelope.specversion, SHOWN)
        ));
    }
    if envelope.id.is_empty() || envelope.source.is_empty() || envelope.kind.is_empty() {
        return Err("id, source and type must not be empty".into());
    }
    let time = DateTime::parse_from_rfc3339(&envelope.time).map_err(|err| {
        format!(
            "time {:?} is not RFC 3339: {err}",
            truncated(&envelope.time, SHOWN)
        )
    })?;
    let event = IncomingEvent {
        id: envelope.id.into_owned(),
        topic: envelope.kind.into_owned(),
        source: envelope.source.into_owned(),
        time: time.timestamp_micros(),
        content_type: envelope.datacontenttype.into_owned(),
        data_schema: envelope.dataschema.map(Cow::into_owned),
        data: envelope.data.get().as_bytes().to_vec(),
        attempt,
    };
    Ok((event, envelope.traceparent.map(Cow::into_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(data: &[u8]) -> Outgoing<'_> {
        Outgoing {
            id: "e-1",
            topic: "orders.created",
            source: "orders",
            time: DateTime::from_timestamp_micros(1_767_225_600_000_001).expect("time"),
            content_type: "application/json",
            data_schema: Some("urn:contracts:orders.created:v1"),
            traceparent: None,
            data,
        }
    }

    #[test]
    fn an_encoded_event_decodes_to_the_same_fields() {
        let body = encode(&sample(br#"{"orderId":"x","amount":5}"#)).expect("encodes");
        let (event, _) = decode(&body, 2, 1024).expect("decodes");
        assert_eq!(event.id, "e-1");
        assert_eq!(event.topic, "orders.created");
        assert_eq!(event.source, "orders");
        assert_eq!(event.time, 1_767_225_600_000_001);
        assert_eq!(
            event.data_schema.as_deref(),
            Some("urn:contracts:orders.created:v1")
        );
        assert_eq!(event.data, br#"{"orderId":"x","amount":5}"#);
        assert_eq!(event.attempt, 2);
    }

    #[test]
    fn the_envelope_is_structured_cloudevents_json() {
        let body = encode(&sample(b"{}")).expect("encodes");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "orders.created");
        assert_eq!(json["time"], "2026-01-01T00:00:00.000001Z");
        assert!(json["data"].is_object());
        assert!(json.get("traceparent").is_none());
    }

    #[test]
    fn garbage_and_incomplete_envelopes_are_refused_with_a_reason() {
        assert!(
            decode(b"not json", 1, 1024)
                .expect_err("refused")
                .contains("not a CloudEvents JSON envelope")
        );
        let wrong_version = br#"{"specversion":"0.3","id":"1","type":"t","source":"s",
            "time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","data":{}}"#;
        assert!(
            decode(wrong_version, 1, 1024)
                .expect_err("refused")
                .contains("specversion")
        );
        let bad_time = br#"{"specversion":"1.0","id":"1","type":"t","source":"s",
            "time":"yesterday","datacontenttype":"application/json","data":{}}"#;
        assert!(
            decode(bad_time, 1, 1024)
                .expect_err("refused")
                .contains("RFC 3339")
        );
    }

    #[test]
    fn an_oversized_message_or_field_is_refused_and_the_refusal_stays_short() {
        let huge = "x".repeat(200_000);
        let envelope = |field: &str| {
            let mut json = serde_json::json!({
                "specversion": "1.0", "id": "1", "type": "orders.created", "source": "orders",
                "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json", "data": {}
            });
            json[field] = huge.clone().into();
            serde_json::to_vec(&json).expect("JSON")
        };
        for field in [
            "specversion",
            "id",
            "type",
            "source",
            "time",
            "datacontenttype",
            "dataschema",
            "traceparent",
        ] {
            let refused = decode(&envelope(field), 1, 1 << 20).expect_err(field);
            assert!(
                refused.contains(field) && refused.len() < 200,
                "{field}: {refused}"
            );
        }
        let big = serde_json::to_vec(&serde_json::json!({ "data": huge })).expect("JSON");
        let refused = decode(&big, 1, 1024).expect_err("too large");
        assert!(refused.contains("over") && refused.len() < 200, "{refused}");
    }
}
