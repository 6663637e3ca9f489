//! Identifier newtypes. Each wraps a UUID and parses only from its hyphenated text form, so an
//! order id can never be passed where a customer id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a string is not an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a UUID such as 0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f")]
pub struct ParseIdError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a UUID already known to name one of these.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            /// Accepts the hyphenated form only (36 characters), in either case.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.len() != 36 {
                    return Err(ParseIdError);
                }
                Uuid::try_parse(s).map(Self).map_err(|_| ParseIdError)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseIdError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// An order, chosen by the Orders service (a UUIDv7, so ids sort by creation time).
    OrderId
);
uuid_id!(
    /// A customer, chosen by whoever places the order.
    CustomerId
);
uuid_id!(
    /// An invoice, chosen by the Invoices service.
    InvoiceId
);
uuid_id!(
    /// An event; consumers de-duplicate deliveries on it.
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f";

    #[test]
    fn a_hyphenated_uuid_parses_and_prints_back_the_same() {
        let id: OrderId = SAMPLE.parse().expect("valid id");
        assert_eq!(id.to_string(), SAMPLE);
    }

    #[test]
    fn upper_case_is_accepted_and_printed_in_lower_case() {
        let id: CustomerId = SAMPLE.to_uppercase().parse().expect("valid id");
        assert_eq!(id.to_string(), SAMPLE);
    }

    #[test]
    fn the_simple_and_braced_forms_are_refused() {
        assert_eq!(
            SAMPLE.replace('-', "").parse::<OrderId>(),
            Err(ParseIdError)
        );
        assert_eq!(
            format!("{{{SAMPLE}}}").parse::<OrderId>(),
            Err(ParseIdError)
        );
    }

    #[test]
    fn garbage_and_empty_strings_are_refused() {
        assert!("not-a-uuid".parse::<OrderId>().is_err());
        assert!("".parse::<OrderId>().is_err());
        assert!(
            "0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9g"
                .parse::<OrderId>()
                .is_err()
        );
    }

    #[test]
    fn serde_goes_through_the_parser() {
        let id: OrderId = serde_json::from_str(&format!("\"{SAMPLE}\"")).expect("valid id");
        assert_eq!(
            serde_json::to_string(&id).expect("serializes"),
            format!("\"{SAMPLE}\"")
        );
        assert!(serde_json::from_str::<OrderId>("\"nope\"").is_err());
    }
}
