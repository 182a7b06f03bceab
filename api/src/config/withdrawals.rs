//! `[withdrawals]`: which assets may be withdrawn, and on what terms.
//!
//! ```toml
//! [withdrawals.assets.ETH]
//! fee = "1000000000000000"              # base units, on top of the amount
//! approval_threshold = "1000000000000000000"
//! daily_limit = "10000000000000000000"
//! ```
//!
//! An asset without an entry cannot be withdrawn; by default none can.
//! Asset codes are case-insensitive here, because environment variables
//! arrive lowercased (`COFFER__WITHDRAWALS__ASSETS__ETH__FEE` names
//! `assets.eth.fee`): every spelling of a code is one entry, its fields
//! taken from each spelling in turn, the all-lowercase one (the
//! environment's) last, so an environment variable overrides the file
//! field by field.

use std::collections::BTreeMap;
use std::fmt;

use indexer::ledger::Amount;
use indexer::withdrawals::{AssetPolicy, WithdrawalPolicy};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::Issues;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WithdrawalsSettings {
    /// Per asset code (as the ledger names it: `ETH`, `USDC` …).
    pub assets: AssetPolicies,
}

/// The per-asset entries, keyed by the uppercase code.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "BTreeMap<String, AssetPolicySettings>")]
pub struct AssetPolicies(pub BTreeMap<String, AssetPolicySettings>);

impl From<BTreeMap<String, AssetPolicySettings>> for AssetPolicies {
    fn from(spellings: BTreeMap<String, AssetPolicySettings>) -> Self {
        // Keys sort uppercase before lowercase: the all-lowercase spelling
        // of a code comes last and so wins.
        let mut merged: BTreeMap<String, AssetPolicySettings> = BTreeMap::new();
        for (code, fields) in spellings {
            let entry = merged.entry(code.to_ascii_uppercase()).or_default();
            entry.fee = fields.fee.or(entry.fee);
            entry.approval_threshold = fields.approval_threshold.or(entry.approval_threshold);
            entry.daily_limit = fields.daily_limit.or(entry.daily_limit);
        }
        Self(merged)
    }
}

/// One asset's terms, in its base units. Every key is required.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssetPolicySettings {
    /// Charged on top of the amount, held with it; 0 charges nothing.
    #[serde(
        default,
        deserialize_with = "amount",
        skip_serializing_if = "Option::is_none"
    )]
    pub fee: Option<Amount>,
    /// The largest amount approved automatically; above it an operator or
    /// admin must approve. 0 sends every withdrawal to an approver.
    #[serde(
        default,
        deserialize_with = "amount",
        skip_serializing_if = "Option::is_none"
    )]
    pub approval_threshold: Option<Amount>,
    /// The most one user may withdraw in any 24 hours (amounts, fees aside).
    #[serde(
        default,
        deserialize_with = "amount",
        skip_serializing_if = "Option::is_none"
    )]
    pub daily_limit: Option<Amount>,
}

impl WithdrawalsSettings {
    pub(super) fn validate(&self, issues: &mut Issues) {
        for (code, asset) in &self.assets.0 {
            let key = format!("withdrawals.assets.{code}");
            let code_ok = (2..=16).contains(&code.len())
                && code
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !code_ok {
                issues.bad(&key, "must be an asset code of 2 to 16 characters A-Z, 0-9");
            }
            for (field, value) in [
                ("fee", asset.fee),
                ("approval_threshold", asset.approval_threshold),
                ("daily_limit", asset.daily_limit),
            ] {
                if value.is_none() {
                    issues.bad(
                        &format!("{key}.{field}"),
                        "missing key: give an amount in base units, such as \"0\"",
                    );
                }
            }
            if asset.daily_limit.is_some_and(Amount::is_zero) {
                issues.bad(
                    &format!("{key}.daily_limit"),
                    "must be positive; remove the asset's entry to turn its withdrawals off",
                );
            }
        }
    }

    /// The policy the indexer enforces; entries `validate` refused are left out.
    pub fn policy(&self) -> WithdrawalPolicy {
        WithdrawalPolicy {
            assets: self
                .assets
                .0
                .iter()
                .filter_map(|(code, asset)| {
                    Some((
                        code.clone(),
                        AssetPolicy {
                            fee: asset.fee?,
                            approval_threshold: asset.approval_threshold?,
                            daily_limit: asset.daily_limit?,
                        },
                    ))
                })
                .collect(),
        }
    }
}

/// An amount in base units: a decimal string, or an integer (environment
/// variables of up to 20 digits arrive as one).
fn amount<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Amount>, D::Error> {
    struct AmountVisitor;

    impl Visitor<'_> for AmountVisitor {
        type Value = Amount;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an amount in base units as a decimal string, such as \"1000\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Amount, E> {
            Amount::parse(text.trim()).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Amount, E> {
            Ok(Amount::from_u64(value))
        }

        fn visit_u128<E: de::Error>(self, value: u128) -> Result<Amount, E> {
            Ok(Amount::from_u128(value))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Amount, E> {
            u64::try_from(value)
                .map(Amount::from_u64)
                .map_err(|_| E::custom(format!("amount {value} is negative")))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Amount, E> {
            Err(E::custom(format!(
                "amount {value} is not an integer: amounts are base units (wei, sats …)"
            )))
        }
    }

    deserializer.deserialize_any(AmountVisitor).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<WithdrawalsSettings, toml::de::Error> {
        toml::from_str(toml)
    }

    #[test]
    fn spellings_of_a_code_merge_with_the_lowercase_one_last() {
        let settings = parse(
            r#"
            [assets.ETH]
            fee = "10"
            approval_threshold = "100"
            daily_limit = "1000"
            [assets.eth]
            fee = 20
            "#,
        )
        .expect("parses");
        let mut issues = Issues::default();
        settings.validate(&mut issues);
        assert!(issues.0.is_empty(), "{issues:?}");
        let policy = settings.policy();
        assert_eq!(
            policy.asset("ETH"),
            Some(&AssetPolicy {
                fee: Amount::from_u64(20),
                approval_threshold: Amount::from_u64(100),
                daily_limit: Amount::from_u64(1000),
            })
        );
        assert_eq!(policy.assets.len(), 1);
    }

    #[test]
    fn every_key_is_required_and_amounts_are_base_units() {
        let settings = parse("[assets.BTC]\nfee = \"1\"\ndaily_limit = \"0\"\n").expect("parses");
        let mut issues = Issues::default();
        settings.validate(&mut issues);
        let keys: Vec<&str> = issues.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "withdrawals.assets.BTC.approval_threshold",
                "withdrawals.assets.BTC.daily_limit"
            ]
        );
        assert!(settings.policy().assets.is_empty());
        for bad in ["\"1.5\"", "\"-1\"", "\"abc\"", "-1", "1.5"] {
            assert!(
                parse(&format!("[assets.ETH]\nfee = {bad}\n")).is_err(),
                "{bad}"
            );
        }
        assert!(parse("[assets.ETH]\nfees = \"1\"\n").is_err());
    }
}
