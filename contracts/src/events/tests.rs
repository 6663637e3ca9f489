//! The Rust types against the JSON Schemas in `contracts/schemas/`.

use super::*;

const ORDER: &str = "0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f";
const CUSTOMER: &str = "0190b3b2-8c1a-7d2e-9f00-000000000001";
const INVOICE: &str = "0190b3b2-8c1a-7d2e-9f00-000000000002";
const EVENT: &str = "0190b3b2-8c1a-7d2e-9f00-000000000003";

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!("{}/schemas/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema is valid")
}

fn envelope<T: Event>(data: T) -> CloudEvent<'static, T> {
    let time = Timestamp::from_unix_micros(1_767_225_600_000_000).expect("time");
    let mut event = CloudEvent::new(EVENT.parse().expect("id"), "orders", time, data);
    event.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    event
}

fn order_created() -> OrderCreated {
    OrderCreated {
        order_id: ORDER.parse().expect("id"),
        customer_id: CUSTOMER.parse().expect("id"),
        amount: Amount::new(1250).expect("amount"),
        created_at: Timestamp::from_unix_micros(1_767_225_600_000_000).expect("time"),
    }
}

fn invoice_issued() -> InvoiceIssued {
    InvoiceIssued {
        invoice_id: INVOICE.parse().expect("id"),
        order_id: ORDER.parse().expect("id"),
        amount: Amount::new(1250).expect("amount"),
        issued_at: Timestamp::from_unix_micros(1_767_225_600_000_000).expect("time"),
    }
}

#[test]
fn an_order_created_event_matches_its_schema() {
    let json = serde_json::to_value(envelope(order_created())).expect("serializes");
    let errors: Vec<String> = schema("orders.created.v1")
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{json}");
}

#[test]
fn an_invoice_issued_event_matches_its_schema() {
    let json = serde_json::to_value(envelope(invoice_issued())).expect("serializes");
    let errors: Vec<String> = schema("invoices.issued.v1")
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{json}");
}

#[test]
fn the_schemas_refuse_what_the_types_refuse() {
    let mut json = serde_json::to_value(envelope(order_created())).expect("serializes");
    let order_created = schema("orders.created.v1");
    for (pointer, bad) in [
        ("/data/amount", serde_json::json!(0)),
        ("/data/amount", serde_json::json!(12.5)),
        ("/data/orderId", serde_json::json!("not-a-uuid")),
        ("/type", serde_json::json!("invoices.issued")),
        ("/specversion", serde_json::json!("0.3")),
        ("/data/createdAt", serde_json::json!("2026-13-45T99:99:99Z")),
        ("/time", serde_json::json!("2026-02-30")),
    ] {
        let original = json.pointer(pointer).cloned().expect("pointer exists");
        *json.pointer_mut(pointer).expect("pointer exists") = bad.clone();
        assert!(
            !order_created.is_valid(&json),
            "schema accepted {pointer} = {bad}"
        );
        let data = serde_json::to_vec(&json["data"]).expect("data");
        if pointer.starts_with("/data") {
            assert!(
                decode::<OrderCreated>(Some(OrderCreated::DATA_SCHEMA), &data).is_err(),
                "type accepted {pointer} = {bad}"
            );
        }
        *json.pointer_mut(pointer).expect("pointer exists") = original;
    }
}

#[test]
fn the_data_schema_is_the_one_dataschema_names() {
    let json = serde_json::to_value(envelope(order_created())).expect("serializes");
    let envelope_schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/schemas/orders.created.v1.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("schema"),
    )
    .expect("JSON");
    let data_schema = &envelope_schema["$defs"]["data"];
    assert_eq!(data_schema["$id"], OrderCreated::DATA_SCHEMA);
    assert_eq!(json["dataschema"], OrderCreated::DATA_SCHEMA);
    assert_ne!(
        envelope_schema["$id"],
        OrderCreated::DATA_SCHEMA,
        "the envelope has an id of its own"
    );
}

#[test]
fn extra_data_fields_are_refused_by_schema_and_type() {
    let mut json = serde_json::to_value(envelope(invoice_issued())).expect("serializes");
    json["data"]["discount"] = serde_json::json!(5);
    assert!(!schema("invoices.issued.v1").is_valid(&json));
    let data = serde_json::to_vec(&json["data"]).expect("data");
    assert!(decode::<InvoiceIssued>(Some(InvoiceIssued::DATA_SCHEMA), &data).is_err());
}

#[test]
fn decode_reads_data_of_the_known_version() {
    let data = serde_json::to_vec(&order_created()).expect("data");
    let decoded: OrderCreated = decode(Some(OrderCreated::DATA_SCHEMA), &data).expect("decodes");
    assert_eq!(decoded, order_created());
}

#[test]
fn decode_refuses_another_schema_version() {
    let data = serde_json::to_vec(&order_created()).expect("data");
    let refused = decode::<OrderCreated>(Some("urn:contracts:orders.created:v2"), &data);
    assert!(matches!(refused, Err(DecodeError::UnknownSchema { .. })));
    assert!(matches!(
        decode::<OrderCreated>(None, &data),
        Err(DecodeError::UnknownSchema { .. })
    ));
}

#[test]
fn the_committed_schemas_are_the_ones_the_types_generate() {
    let generated = [
        ("orders.created.v1", crate::schema::event::<OrderCreated>()),
        (
            "invoices.issued.v1",
            crate::schema::event::<InvoiceIssued>(),
        ),
    ];
    for (name, schema) in generated {
        let path = format!("{}/schemas/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let text = serde_json::to_string_pretty(&schema).expect("serializes") + "\n";
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &text).unwrap_or_else(|err| panic!("{path}: {err}"));
        }
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
        assert!(
            committed == text,
            "{path} is not what the types generate: run `UPDATE_SCHEMAS=1 cargo test -p contracts` \
             and commit the result"
        );
    }
}
