//! Amounts in base units (sats, wei, lamports, token units): unsigned 256-bit
//! integers with checked arithmetic. Never floats. Any value fits the
//! database's `NUMERIC(78,0)`, and crosses into SQL as decimal text.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::U256;

#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(U256);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount `{0}` is not a non-negative integer in base units")]
    NotAnInteger(String),
    #[error("amount `{0}` is too large")]
    TooLarge(String),
    #[error("amount `{value}` has more than {decimals} decimal places")]
    TooPrecise { value: String, decimals: u8 },
}

impl Amount {
    pub const ZERO: Amount = Amount(U256::ZERO);
    pub const MAX: Amount = Amount(U256::MAX);

    pub const fn from_u64(value: u64) -> Self {
        Amount(U256::from_limbs([value, 0, 0, 0]))
    }

    pub fn from_u128(value: u128) -> Self {
        Amount(U256::from(value))
    }

    pub const fn from_u256(value: U256) -> Self {
        Amount(value)
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// `self * numerator / denominator`, rounded down; `None` on overflow or
    /// a zero denominator. For fees in basis points.
    pub fn checked_mul_div(self, numerator: u64, denominator: u64) -> Option<Amount> {
        if denominator == 0 {
            return None;
        }
        let product = self.0.checked_mul(U256::from(numerator))?;
        Some(Amount(product / U256::from(denominator)))
    }

    pub fn as_u256(self) -> U256 {
        self.0
    }

    /// Parses base units: ASCII digits only, no sign, no decimal point.
    pub fn parse(text: &str) -> Result<Self, AmountError> {
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::NotAnInteger(clip(text)));
        }
        U256::from_str_radix(text, 10)
            .map(Amount)
            .map_err(|_| AmountError::TooLarge(clip(text)))
    }

    /// Parses a decimal in whole units (`"1.5"` BTC) into base units, refusing
    /// more fractional digits than the asset has.
    pub fn from_decimal(text: &str, decimals: u8) -> Result<Self, AmountError> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(AmountError::Empty);
        }
        let significant = fraction.trim_end_matches('0');
        if significant.len() > usize::from(decimals) {
            return Err(AmountError::TooPrecise {
                value: clip(text),
                decimals,
            });
        }
        let mut digits = String::with_capacity(whole.len() + usize::from(decimals));
        digits.push_str(if whole.is_empty() { "0" } else { whole });
        digits.push_str(significant);
        digits.extend(std::iter::repeat_n(
            '0',
            usize::from(decimals) - significant.len(),
        ));
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::NotAnInteger(clip(text)));
        }
        Self::parse(digits.trim_start_matches('0')).or_else(|err| match err {
            AmountError::Empty => Ok(Amount::ZERO),
            other => Err(other),
        })
    }

    /// Whole units with exactly the asset's decimals, for display.
    pub fn to_decimal_string(self, decimals: u8) -> String {
        let digits = self.0.to_string();
        let decimals = usize::from(decimals);
        if decimals == 0 {
            return digits;
        }
        let padded = format!("{digits:0>width$}", width = decimals + 1);
        let (whole, fraction) = padded.split_at(padded.len() - decimals);
        format!("{whole}.{fraction}")
    }
}

fn clip(text: &str) -> String {
    text.chars().take(100).collect()
}

impl Amount {
    /// An amount read back from the database: one that does not parse means
    /// the stored data is corrupt, not that a request was wrong.
    pub(crate) fn from_stored(text: &str) -> crate::Result<Self> {
        Self::parse(text).map_err(|e| crate::Error::Corrupt(format!("stored amount {text}: {e}")))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Amount::parse(s)
    }
}

impl From<u64> for Amount {
    fn from(value: u64) -> Self {
        Amount::from_u64(value)
    }
}

impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Amount::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A balance change: an amount with a sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SignedAmount {
    pub negative: bool,
    pub magnitude: Amount,
}

impl SignedAmount {
    pub fn increase(magnitude: Amount) -> Self {
        Self {
            negative: false,
            magnitude,
        }
    }

    pub fn decrease(magnitude: Amount) -> Self {
        Self {
            negative: !magnitude.is_zero(),
            magnitude,
        }
    }

    /// Parses the database's text form, such as `-100` or `42`.
    pub fn parse(text: &str) -> Result<Self, AmountError> {
        match text.strip_prefix('-') {
            Some(rest) => Amount::parse(rest).map(SignedAmount::decrease),
            None => Amount::parse(text).map(SignedAmount::increase),
        }
    }
}

impl fmt::Display for SignedAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        fmt::Display::fmt(&self.magnitude, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_units_strictly() {
        assert_eq!(Amount::parse("0"), Ok(Amount::ZERO));
        assert_eq!(Amount::parse("00042"), Ok(Amount::from_u64(42)));
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(Amount::parse(max), Ok(Amount::MAX));
        assert!(matches!(
            Amount::parse(&format!("{max}0")),
            Err(AmountError::TooLarge(_))
        ));
        for bad in ["-1", "+1", "1.0", "1e3", " 1", "0x10", "١"] {
            assert!(
                matches!(Amount::parse(bad), Err(AmountError::NotAnInteger(_))),
                "{bad}"
            );
        }
        assert_eq!(Amount::parse(""), Err(AmountError::Empty));
    }

    #[test]
    fn checked_arithmetic_never_wraps() {
        assert_eq!(Amount::MAX.checked_add(Amount::from_u64(1)), None);
        assert_eq!(Amount::ZERO.checked_sub(Amount::from_u64(1)), None);
        assert_eq!(
            Amount::from_u64(7).checked_sub(Amount::from_u64(2)),
            Some(Amount::from_u64(5))
        );
    }

    #[test]
    fn basis_points_round_down() {
        assert_eq!(
            Amount::from_u64(10_000).checked_mul_div(25, 10_000),
            Some(Amount::from_u64(25))
        );
        assert_eq!(
            Amount::from_u64(399).checked_mul_div(25, 10_000),
            Some(Amount::ZERO)
        );
        assert_eq!(Amount::MAX.checked_mul_div(2, 1), None);
        assert_eq!(Amount::from_u64(1).checked_mul_div(1, 0), None);
    }

    #[test]
    fn decimals_round_trip_and_refuse_extra_precision() {
        assert_eq!(
            Amount::from_decimal("1.5", 8),
            Ok(Amount::from_u64(150_000_000))
        );
        assert_eq!(
            Amount::from_decimal("0.00000001", 8),
            Ok(Amount::from_u64(1))
        );
        assert_eq!(Amount::from_decimal("2", 0), Ok(Amount::from_u64(2)));
        assert_eq!(Amount::from_decimal("1.50", 1), Ok(Amount::from_u64(15)));
        assert!(matches!(
            Amount::from_decimal("0.000000001", 8),
            Err(AmountError::TooPrecise { .. })
        ));
        assert!(matches!(
            Amount::from_decimal("1.-5", 8),
            Err(AmountError::NotAnInteger(_))
        ));
        assert_eq!(
            Amount::from_u64(150_000_000).to_decimal_string(8),
            "1.50000000"
        );
        assert_eq!(
            Amount::from_u64(1).to_decimal_string(18),
            "0.000000000000000001"
        );
        assert_eq!(Amount::from_u64(12).to_decimal_string(0), "12");
    }

    #[test]
    fn serializes_as_a_string() {
        let json = serde_json::to_string(&Amount::from_u64(12)).ok();
        assert_eq!(json.as_deref(), Some("\"12\""));
        assert_eq!(
            serde_json::from_str::<Amount>("\"12\"").ok(),
            Some(Amount::from_u64(12))
        );
        assert!(serde_json::from_str::<Amount>("12.5").is_err());
        assert_eq!(
            SignedAmount::parse("-5")
                .map(|s| s.to_string())
                .ok()
                .as_deref(),
            Some("-5")
        );
        assert_eq!(SignedAmount::decrease(Amount::ZERO).to_string(), "0");
    }
}
