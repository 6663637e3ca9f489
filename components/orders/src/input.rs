//! Requests into domain values. Every refusal is a problem naming the field at fault, and
//! nothing is written before input has been accepted.

use contracts::{Amount, CustomerId, Location, OrderId, ParseIdError, Problem};
use serde_json::{Map, Value};
use service_guest::query::Query;
use spin_sdk::http::Request;

use crate::domain::{ListQuery, NewOrder, OrderStatus};

/// Largest `POST /orders` body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Longest `Idempotency-Key` accepted, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

impl NewOrder {
    /// Parses a `POST /orders` request: content type, size, then the JSON body.
    pub fn from_request(request: &Request) -> Result<Self, Problem> {
        let content_type = request
            .header("content-type")
            .and_then(|value| value.as_str());
        if !content_type.is_some_and(contracts::media::is_json) {
            return Err(Problem::invalid_with_status(
                415,
                Location::Header,
                "Content-Type",
                format!(
                    "must be application/json (got {})",
                    content_type.unwrap_or("none")
                ),
            ));
        }
        if request.body().len() > MAX_BODY_BYTES {
            return Err(Problem::new(
                413,
                format!("the body is over {MAX_BODY_BYTES} bytes"),
            ));
        }
        Self::from_json(request.body())
    }

    /// Parses `{"customerId": "<uuid>", "amount": <integer>}`; no other member is allowed,
    /// and none twice.
    pub fn from_json(body: &[u8]) -> Result<Self, Problem> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|err| Problem::new(400, format!("the body is not valid JSON: {err}")))?;
        if !value.is_object() {
            return Err(Problem::new(400, "the body must be a JSON object"));
        }
        // Read again member by member: a JSON object may repeat a name, which a map would hide.
        let Members(members) = serde_json::from_slice(body)
            .map_err(|err| Problem::new(400, format!("the body is not valid JSON: {err}")))?;
        let mut object = Map::new();
        for (name, member) in members {
            if name != "customerId" && name != "amount" {
                return Err(body_error(
                    &name,
                    "is not a known field; expected customerId and amount",
                ));
            }
            if object.insert(name.clone(), member).is_some() {
                return Err(body_error(&name, "is given more than once"));
            }
        }
        let customer_id = take(&mut object, "customerId")?;
        let amount = take(&mut object, "amount")?;
        let customer_id = customer_id
            .as_str()
            .ok_or_else(|| body_error("customerId", "must be a string"))?
            .parse::<CustomerId>()
            .map_err(|err| body_error("customerId", err))?;
        let amount = match amount {
            Value::Number(number) => match (number.as_i64(), number.as_u64()) {
                (Some(units), _) => Amount::new(units).map_err(|err| body_error("amount", err))?,
                (None, Some(_)) => {
                    return Err(body_error("amount", contracts::AmountError::TooLarge));
                }
                // JSON has one number type: `250.0` is the integer 250 (as JSON Schema says),
                // `250.5` is not a whole number of cents.
                (None, None) => match number.as_f64().filter(|units| units.fract() == 0.0) {
                    Some(units) if units.abs() <= Amount::MAX.minor_units() as f64 => {
                        Amount::new(units as i64).map_err(|err| body_error("amount", err))?
                    }
                    Some(units) if units > 0.0 => {
                        return Err(body_error("amount", contracts::AmountError::TooLarge));
                    }
                    Some(_) => {
                        return Err(body_error("amount", contracts::AmountError::NotPositive));
                    }
                    None => {
                        return Err(body_error(
                            "amount",
                            "must be a whole number of minor units (cents)",
                        ));
                    }
                },
            },
            _ => return Err(body_error("amount", "must be a number")),
        };
        Ok(Self {
            customer_id,
            amount,
        })
    }
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
pub fn idempotency_key(request: &Request) -> Result<Option<String>, Problem> {
    let Some(value) = request.header("idempotency-key") else {
        return Ok(None);
    };
    let refuse = |detail: &str| Problem::invalid(Location::Header, "Idempotency-Key", detail);
    let key = value
        .as_str()
        .ok_or_else(|| refuse("must be visible ASCII text"))?;
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(refuse("must be 1 to 255 characters"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse("must be visible ASCII text, without spaces"));
    }
    Ok(Some(key.to_owned()))
}

/// An order id from the path.
pub fn order_id(segment: &str) -> Result<OrderId, Problem> {
    segment
        .parse()
        .map_err(|err: ParseIdError| Problem::invalid(Location::Path, "id", err.to_string()))
}

impl ListQuery {
    pub fn parse(query: &str) -> Result<Self, Problem> {
        let query = Query::parse(query, &["customerId", "status"])?;
        Ok(Self {
            customer_id: query.get("customerId", str::parse::<CustomerId>)?,
            status: query.get("status", |status| status.parse::<OrderStatus>())?,
            limit: query.limit()?,
            cursor: query.cursor()?,
        })
    }
}

/// An object's members in order, repeats included.
struct Members(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

fn take(object: &mut Map<String, Value>, field: &str) -> Result<Value, Problem> {
    match object.remove(field) {
        None | Some(Value::Null) => Err(body_error(field, "is required")),
        Some(value) => Ok(value),
    }
}

fn body_error(field: &str, detail: impl ToString) -> Problem {
    Problem::invalid(Location::Body, field, detail.to_string())
}
