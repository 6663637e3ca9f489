//! OpenAPI schemas of the shared types (feature `openapi`), for the services' API documents.
//!
//! The types serialize through strings or integers of their own (`#[serde(try_from, into)]`),
//! which a derive cannot see, so their schemas are written here beside the rules their
//! constructors enforce.

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::{Amount, CustomerId, EventId, InvoiceId, OrderId, Timestamp};

macro_rules! uuid_schema {
    ($($name:ident: $description:literal),* $(,)?) => {$(
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                    .min_length(Some(36))
                    .max_length(Some(36))
                    .pattern(Some(UUID_PATTERN))
                    .description(Some($description))
                    .examples([serde_json::json!("0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f")])
                    .into()
            }
        }
        impl ToSchema for $name {}
    )*};
}

/// The hyphenated form, the only one the ids parse from.
const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

uuid_schema! {
    OrderId: "An order's id (UUID).",
    CustomerId: "A customer's id (UUID).",
    InvoiceId: "An invoice's id (UUID).",
    EventId: "An event's id (UUID).",
}

impl PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            // As a float: utoipa keeps integer bounds in an `isize`, which on wasm32 (where
            // the services build this document) cuts 100000000000 down to 32 bits.
            .maximum(Some(Amount::MAX.minor_units() as f64))
            .description(Some(
                "Money in whole minor units (cents), 1 to 100000000000.",
            ))
            .examples([serde_json::json!(100)])
            .into()
    }
}
impl ToSchema for Amount {}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("RFC 3339 date-time in UTC, to the microsecond."))
            .into()
    }
}
impl ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schemas accept what the types write and refuse what they refuse to read.
    #[test]
    fn the_schemas_agree_with_the_types() {
        let validator = |schema: RefOr<Schema>| {
            jsonschema::validator_for(&serde_json::to_value(schema).expect("json"))
                .expect("a schema")
        };
        let id = validator(OrderId::schema());
        let order = OrderId::from_uuid(uuid::Uuid::from_u128(7));
        assert!(id.is_valid(&serde_json::to_value(order).expect("json")));
        for bad in [
            "7",
            "0190b3b28c1a7d2e9f004a5b6c7d8e9f",
            "{0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f}",
        ] {
            assert!(bad.parse::<OrderId>().is_err());
            assert!(!id.is_valid(&serde_json::json!(bad)), "{bad}");
        }
        let amount = validator(Amount::schema());
        for (value, ok) in [
            (0, false),
            (1, true),
            (Amount::MAX.minor_units(), true),
            (Amount::MAX.minor_units() + 1, false),
        ] {
            assert_eq!(Amount::new(value).is_ok(), ok);
            assert_eq!(amount.is_valid(&serde_json::json!(value)), ok, "{value}");
        }
    }
}
