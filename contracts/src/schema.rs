//! JSON Schemas of the events, generated from the types (feature `schema`, with `schemars`), so
//! the schemas in `contracts/schemas/` cannot drift from what the services read and write: a
//! test compares each committed file with [`event`]'s output (`UPDATE_SCHEMAS=1 cargo test -p
//! contracts` writes them anew).
//!
//! The newtypes say what their constructors accept: a UUID's hyphenated form, an amount's
//! bounds, a timestamp's RFC 3339 form.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

use crate::events::{Event, JSON, SPEC_VERSION};
use crate::{Amount, CustomerId, EventId, InvoiceId, OrderId, Timestamp};

/// A UUID in its hyphenated form, in either case.
const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// An RFC 3339 date-time.
const TIMESTAMP_PATTERN: &str = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])\
     T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?\
     (Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";

/// A W3C `traceparent`.
const TRACEPARENT_PATTERN: &str = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$";

fn uuid() -> Value {
    json!({ "type": "string", "pattern": UUID_PATTERN })
}

fn timestamp() -> Value {
    json!({
        "$id": "urn:contracts:timestamp",
        "type": "string",
        "format": "date-time",
        "pattern": TIMESTAMP_PATTERN,
        "description": "RFC 3339; services write UTC with microseconds.",
    })
}

/// Each newtype is a reference to the definition of what its constructor accepts, which
/// [`event`] puts beside the data's schema.
macro_rules! defined_as {
    ($($name:ident => $definition:literal),* $(,)?) => {$(
        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "$ref": concat!("#/$defs/", $definition) })
            }
        }
    )*};
}

defined_as! {
    OrderId => "uuid",
    CustomerId => "uuid",
    InvoiceId => "uuid",
    EventId => "uuid",
    Amount => "amount",
    Timestamp => "timestamp",
}

/// The JSON Schema of a whole event of type `E` as it travels: the CloudEvents envelope, with
/// the schema of `data` (its `$id` the event's `dataschema`) among its definitions.
pub fn event<E: Event + JsonSchema>() -> Value {
    let version = E::DATA_SCHEMA.rsplit(':').next().unwrap_or_default();
    let mut data = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<E>()
        .to_value();
    if let Some(data) = data.as_object_mut() {
        data.remove("$schema");
        data.remove("description");
        data.insert("$id".into(), E::DATA_SCHEMA.into());
        data.insert(
            "title".into(),
            format!(
                "{} data, version {}",
                E::TOPIC,
                version.trim_start_matches('v')
            )
            .into(),
        );
        data.insert(
            "$defs".into(),
            json!({
                "uuid": uuid(),
                "timestamp": { "$ref": "urn:contracts:timestamp" },
                "amount": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": Amount::MAX.minor_units(),
                    "description": "Whole minor currency units (cents), written without a \
                                    fraction or exponent.",
                },
            }),
        );
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("urn:contracts:cloudevent:{}:{version}", E::TOPIC),
        "title": format!("{} (CloudEvents 1.0, structured JSON mode)", E::TOPIC),
        "description": format!(
            "The whole event as it travels. Its data is described by the embedded schema {}, \
             the event's dataschema.",
            E::DATA_SCHEMA
        ),
        "type": "object",
        "additionalProperties": false,
        "required": [
            "specversion", "id", "type", "source", "time", "datacontenttype", "dataschema", "data"
        ],
        "properties": {
            "specversion": { "const": SPEC_VERSION },
            "id": {
                "$ref": "#/$defs/uuid",
                "description": "Unique per event; consumers de-duplicate on it.",
            },
            "type": { "const": E::TOPIC },
            "source": {
                "type": "string",
                "minLength": 1,
                "description": "The publishing service.",
            },
            "time": { "$ref": "urn:contracts:timestamp" },
            "datacontenttype": { "const": JSON },
            "dataschema": { "const": E::DATA_SCHEMA },
            "traceparent": {
                "type": "string",
                "pattern": TRACEPARENT_PATTERN,
                "description": "W3C trace context of the publishing request.",
            },
            "data": { "$ref": E::DATA_SCHEMA },
        },
        "$defs": {
            "uuid": uuid(),
            "timestamp": timestamp(),
            "data": data,
        },
    })
}
