//! The wire format of events: CloudEvents 1.0 in structured JSON mode
//! (`application/cloudevents+json`), with `data` as embedded JSON and W3C `traceparent`.
//!
//! The host writes the envelope from an outbox row and reads it back from a delivery; it never
//! looks inside `data`, which belongs to the services (see `contracts/`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::bindings::message_handler::IncomingEvent;

/// The AMQP content type of a structured CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub time: String,
    pub datacontenttype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub data: Box<RawValue>,
}

/// `application/json`, `application/json; charset=utf-8`, or a `+json` type.
pub fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// The fields of an outbox row that make up an event.
pub struct Outgoing<'a> {
    pub id: &'a str,
    pub topic: &'a str,
    pub source: &'a str,
    pub time: DateTime<Utc>,
    pub content_type: &'a str,
    pub data_schema: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    pub data: &'a [u8],
}

/// Writes the envelope; fails only if `data` is not JSON (publish checked it already).
pub fn encode(event: &Outgoing<'_>) -> Result<Vec<u8>, serde_json::Error> {
    let data: &RawValue = serde_json::from_slice(event.data)?;
    #[derive(Serialize)]
    struct Borrowed<'a> {
        specversion: &'static str,
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        source: &'a str,
        time: String,
        datacontenttype: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        dataschema: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        traceparent: Option<&'a str>,
        data: &'a RawValue,
    }
    serde_json::to_vec(&Borrowed {
        specversion: "1.0",
        id: event.id,
        kind: event.topic,
        source: event.source,
        time: event.time.to_rfc3339_opts(SecondsFormat::Micros, true),
        datacontenttype: event.content_type,
        dataschema: event.data_schema,
        traceparent: event.traceparent,
        data,
    })
}

/// Reads a delivered message body into what the component's handler receives, and the
/// publisher's `traceparent`.
pub fn decode(body: &[u8], attempt: u32) -> Result<(IncomingEvent, Option<String>), String> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|err| format!("not a CloudEvents JSON envelope: {err}"))?;
    if envelope.specversion != "1.0" {
        return Err(format!("specversion {:?} is not 1.0", envelope.specversion));
    }
    if envelope.id.is_empty() || envelope.source.is_empty() || envelope.kind.is_empty() {
        return Err("id, source and type must not be empty".into());
    }
    let time = DateTime::parse_from_rfc3339(&envelope.time)
        .map_err(|err| format!("time {:?} is not RFC 3339: {err}", envelope.time))?;
    let event = IncomingEvent {
        id: envelope.id,
        topic: envelope.kind,
        source: envelope.source,
        time: time.timestamp_micros(),
        content_type: envelope.datacontenttype,
        data_schema: envelope.dataschema,
        data: envelope.data.get().as_bytes().to_vec(),
        attempt,
    };
    Ok((event, envelope.traceparent))
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
        let (event, _) = decode(&body, 2).expect("decodes");
        assert_eq!(event.id, "e-1");
        assert_eq!(event.topic, "orders.created");
        assert_eq!(event.source, "orders");
        assert_eq!(event.time, 1_767_225_600_000_001);
        assert_eq!(event.data_schema.as_deref(), Some("urn:contracts:orders.created:v1"));
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
        assert!(decode(b"not json", 1).expect_err("refused").contains("not a CloudEvents JSON envelope"));
        let wrong_version = br#"{"specversion":"0.3","id":"1","type":"t","source":"s","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","data":{}}"#;
        assert!(decode(wrong_version, 1).expect_err("refused").contains("specversion"));
        let bad_time = br#"{"specversion":"1.0","id":"1","type":"t","source":"s","time":"yesterday","datacontenttype":"application/json","data":{}}"#;
        assert!(decode(bad_time, 1).expect_err("refused").contains("RFC 3339"));
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonx"));
    }
}
