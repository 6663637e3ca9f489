//! Money. An [`Amount`] is a whole number of minor currency units (cents), greater than zero
//! and at most [`Amount::MAX`]. Integers, never floats: money must add up exactly.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A positive amount of money in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

/// Why a number is not an [`Amount`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must be greater than 0")]
    NotPositive,
    #[error("must be at most {max}", max = Amount::MAX.0)]
    TooLarge,
}

impl Amount {
    /// The largest amount accepted: one hundred billion minor units (a billion in major units
    /// with two decimals). Sums of many amounts still fit in an `i64`.
    pub const MAX: Amount = Amount(100_000_000_000);

    pub fn new(minor_units: i64) -> Result<Self, AmountError> {
        if minor_units <= 0 {
            Err(AmountError::NotPositive)
        } else if minor_units > Self::MAX.0 {
            Err(AmountError::TooLarge)
        } else {
            Ok(Self(minor_units))
        }
    }

    pub const fn minor_units(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = AmountError;

    fn try_from(minor_units: i64) -> Result<Self, Self::Error> {
        Self::new(minor_units)
    }
}

impl From<Amount> for i64 {
    fn from(amount: Amount) -> i64 {
        amount.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_minor_unit_is_the_smallest_amount() {
        assert_eq!(Amount::new(1).map(Amount::minor_units), Ok(1));
    }

    #[test]
    fn zero_and_negative_amounts_are_refused() {
        assert_eq!(Amount::new(0), Err(AmountError::NotPositive));
        assert_eq!(Amount::new(-5), Err(AmountError::NotPositive));
        assert_eq!(Amount::new(i64::MIN), Err(AmountError::NotPositive));
    }

    #[test]
    fn the_maximum_is_accepted_and_one_more_is_not() {
        assert_eq!(Amount::new(Amount::MAX.minor_units()), Ok(Amount::MAX));
        assert_eq!(
            Amount::new(Amount::MAX.minor_units() + 1),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn the_error_message_names_the_limit() {
        assert_eq!(
            AmountError::TooLarge.to_string(),
            "must be at most 100000000000"
        );
    }

    #[test]
    fn serde_goes_through_the_constructor() {
        assert_eq!(
            serde_json::from_str::<Amount>("250").ok(),
            Amount::new(250).ok()
        );
        assert!(serde_json::from_str::<Amount>("0").is_err());
        assert!(serde_json::from_str::<Amount>("2.5").is_err());
    }
}
