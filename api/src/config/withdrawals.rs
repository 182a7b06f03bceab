//! `[withdrawals]`: which assets may be withdrawn, and on what terms; and
//! `[withdrawals.ethereum]`, the Ethereum payout loop that pays them out.
//!
//! ```toml
//! [withdrawals.assets.ETH]
//! fee = "1000000000000000"              # base units, on top of the amount
//! approval_threshold = "1000000000000000000"
//! daily_limit = "10000000000000000000"
//!
//! [withdrawals.ethereum]
//! max_fee_per_gas_cap = "500000000000"  # wei
//! [withdrawals.ethereum.sweep_thresholds]
//! ETH = "10000000000000000"             # sweep deposit addresses from 0.01 ETH
//! ```
//!
//! An asset without an entry cannot be withdrawn; by default none can.
//! Asset codes are case-insensitive here, because environment variables
//! arrive lowercased (`COFFER__WITHDRAWALS__ASSETS__ETH__FEE` names
//! `assets.eth.fee`): every spelling of a code is one entry, its fields
//! taken from each spelling in turn, the all-lowercase one (the
//! environment's) last, so an environment variable overrides the file
//! field by field. Sweep thresholds merge the same way.
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::Context;
use indexer::ledger::Amount;
use indexer::payouts::ethereum::{EthereumPayoutConfig, SweepThresholds};
use indexer::withdrawals::{AssetPolicy, WithdrawalPolicy};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ChainSettings, EthereumSettings, Issues};

/// The chain's native asset, in which the Ethereum payout loop books gas.
const ETHEREUM_NATIVE_ASSET: &str = "ETH";

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WithdrawalsSettings {
    /// Per asset code (as the ledger names it: `ETH`, `USDC` …).
    pub assets: AssetPolicies,
    /// The Ethereum payout loop.
    pub ethereum: EthereumPayoutSettings,
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
    /// `eth` is `[chains.ethereum]`, whose tokens the sweep thresholds may name.
    pub(super) fn validate(&self, eth: &ChainSettings<EthereumSettings>, issues: &mut Issues) {
        for (code, asset) in &self.assets.0 {
            let key = format!("withdrawals.assets.{code}");
            if !is_asset_code(code) {
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
        self.ethereum.validate(eth, issues);
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

fn is_asset_code(code: &str) -> bool {
    (2..=16).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// `[withdrawals.ethereum]`: the payout loop that signs, sends, replaces and
/// tracks every Ethereum payout (withdrawals, sweeps, gas top-ups, nonce
/// fillers). It runs while this and `chains.ethereum.enabled` are both on;
/// finality, the chain id and the tokens are `[chains.ethereum]`'s. The
/// defaults are the indexer's `EthereumPayoutConfig::default()`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EthereumPayoutSettings {
    pub enabled: bool,
    /// Between the loop's rounds.
    pub poll_interval_ms: u64,
    /// The most any transaction offers per gas, in wei; above it nothing
    /// new is signed and a due replacement waits.
    #[serde(deserialize_with = "wei", serialize_with = "decimal")]
    pub max_fee_per_gas_cap: u128,
    /// The least priority fee offered, in wei.
    #[serde(deserialize_with = "wei", serialize_with = "decimal")]
    pub min_priority_fee_per_gas: u128,
    /// Recent blocks whose tips `eth_feeHistory` reports.
    pub fee_history_blocks: u64,
    /// The percentile of each block's tips taken (0 to 100).
    pub tip_percentile: f64,
    /// Blocks after an attempt's first send without it being mined before
    /// it is replaced with fees raised at least 10%.
    pub replace_after_blocks: u64,
    /// Blocks after a send before the same bytes are sent again.
    pub rebroadcast_after_blocks: u64,
    /// Refusals in a row (for a reason the loop has no rule for) that send
    /// a row to manual.
    pub max_send_rejections: u32,
    /// A payout signed longer ago than this and still unmined counts as stuck.
    pub stuck_after_secs: u64,
    /// Rows signed, sent or tracked at once.
    pub concurrency: usize,
    /// Per asset code, the final balance of a deposit address worth
    /// sweeping into the hot wallet, in base units; an asset without one is
    /// never swept.
    pub sweep_thresholds: SweepThresholdSettings,
}

impl Default for EthereumPayoutSettings {
    fn default() -> Self {
        let indexer = EthereumPayoutConfig::default();
        Self {
            enabled: true,
            poll_interval_ms: indexer.poll_interval.as_millis() as u64,
            max_fee_per_gas_cap: indexer.max_fee_per_gas_cap,
            min_priority_fee_per_gas: indexer.min_priority_fee_per_gas,
            fee_history_blocks: indexer.fee_history_blocks,
            tip_percentile: indexer.tip_percentile,
            replace_after_blocks: indexer.replace_after_blocks,
            rebroadcast_after_blocks: indexer.rebroadcast_after_blocks,
            max_send_rejections: indexer.max_send_rejections,
            stuck_after_secs: indexer.stuck_after.as_secs(),
            concurrency: indexer.concurrency,
            sweep_thresholds: SweepThresholdSettings(indexer.sweeps.assets),
        }
    }
}

/// Sweep thresholds keyed by the uppercase asset code.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "BTreeMap<String, AnyAmount>")]
pub struct SweepThresholdSettings(pub BTreeMap<String, Amount>);

impl From<BTreeMap<String, AnyAmount>> for SweepThresholdSettings {
    fn from(spellings: BTreeMap<String, AnyAmount>) -> Self {
        // As for the policies: the all-lowercase spelling comes last and wins.
        Self(
            spellings
                .into_iter()
                .map(|(code, amount)| (code.to_ascii_uppercase(), amount.0))
                .collect(),
        )
    }
}

impl EthereumPayoutSettings {
    fn validate(&self, eth: &ChainSettings<EthereumSettings>, issues: &mut Issues) {
        if !self.enabled {
            return;
        }
        let mut at = issues.section("withdrawals.ethereum");
        at.ranges(&[
            ("poll_interval_ms", self.poll_interval_ms, 1, 3_600_000),
            ("fee_history_blocks", self.fee_history_blocks, 1, 1_024),
            ("replace_after_blocks", self.replace_after_blocks, 1, 10_000),
            (
                "rebroadcast_after_blocks",
                self.rebroadcast_after_blocks,
                1,
                10_000,
            ),
            (
                "max_send_rejections",
                u64::from(self.max_send_rejections),
                1,
                1_000,
            ),
            ("stuck_after_secs", self.stuck_after_secs, 1, 30 * 86_400),
            ("concurrency", self.concurrency as u64, 1, 64),
        ]);
        if self.max_fee_per_gas_cap == 0 {
            at.bad("max_fee_per_gas_cap", "must be at least 1 wei");
        }
        if self.min_priority_fee_per_gas > self.max_fee_per_gas_cap {
            at.bad(
                "min_priority_fee_per_gas",
                format!(
                    "is above max_fee_per_gas_cap ({} wei): no transaction could pay it",
                    self.max_fee_per_gas_cap
                ),
            );
        }
        if !(0.0..=100.0).contains(&self.tip_percentile) {
            at.bad(
                "tip_percentile",
                format!("must be 0 to 100, not {}", self.tip_percentile),
            );
        }
        let tokens: Vec<&str> = eth.chain.tokens.iter().map(|t| t.asset.as_str()).collect();
        for (code, threshold) in &self.sweep_thresholds.0 {
            let key = format!("sweep_thresholds.{code}");
            if !is_asset_code(code) {
                at.bad(&key, "must be an asset code of 2 to 16 characters A-Z, 0-9");
            } else if code != ETHEREUM_NATIVE_ASSET && !tokens.contains(&code.as_str()) {
                at.bad(
                    &key,
                    format!(
                        "names no Ethereum asset: sweep {ETHEREUM_NATIVE_ASSET} or an asset of \
                         chains.ethereum.tokens ({})",
                        if tokens.is_empty() {
                            "none listed".to_owned()
                        } else {
                            tokens.join(", ")
                        }
                    ),
                );
            }
            if threshold.is_zero() {
                at.bad(
                    &key,
                    "must be positive; remove the entry to leave the asset unswept",
                );
            }
        }
    }

    /// The payout loop's settings over `[chains.ethereum]`'s finality and
    /// tokens. `chain_id` is the configured one (1 when unset); the daemon
    /// signs with the id its node reports, once checked against it.
    pub fn payout_config(
        &self,
        eth: &ChainSettings<EthereumSettings>,
    ) -> anyhow::Result<EthereumPayoutConfig> {
        let mut tokens = BTreeMap::new();
        for (i, token) in eth.chain.tokens.iter().enumerate() {
            let contract = token
                .contract
                .parse()
                .with_context(|| format!("config key `chains.ethereum.tokens[{i}].contract`"))?;
            tokens.insert(token.asset.clone(), contract);
        }
        Ok(EthereumPayoutConfig {
            chain_id: eth
                .chain
                .chain_id
                .unwrap_or(super::ETHEREUM_MAINNET_CHAIN_ID),
            native_asset: ETHEREUM_NATIVE_ASSET.to_owned(),
            tokens,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            max_fee_per_gas_cap: self.max_fee_per_gas_cap,
            min_priority_fee_per_gas: self.min_priority_fee_per_gas,
            fee_history_blocks: self.fee_history_blocks,
            tip_percentile: self.tip_percentile,
            replace_after_blocks: self.replace_after_blocks,
            rebroadcast_after_blocks: self.rebroadcast_after_blocks,
            use_finalized_tag: eth.chain.use_finalized_tag,
            confirmations: eth.chain.confirmations,
            max_send_rejections: self.max_send_rejections,
            stuck_after: Duration::from_secs(self.stuck_after_secs),
            sweeps: SweepThresholds {
                assets: self.sweep_thresholds.0.clone(),
            },
            concurrency: self.concurrency,
        })
    }
}

/// An amount in base units: a decimal string, or an integer (environment
/// variables of up to 20 digits arrive as one).
#[derive(Clone, Copy, Debug)]
struct AnyAmount(Amount);

impl<'de> Deserialize<'de> for AnyAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
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

        deserializer.deserialize_any(AmountVisitor).map(AnyAmount)
    }
}

fn amount<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Amount>, D::Error> {
    AnyAmount::deserialize(deserializer).map(|amount| Some(amount.0))
}

/// Wei per gas, as [`AnyAmount`] takes it, within 128 bits.
fn wei<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
    let amount = AnyAmount::deserialize(deserializer)?.0;
    u128::try_from(amount.as_u256())
        .map_err(|_| de::Error::custom(format!("{amount} wei is above 128 bits")))
}

/// A wei value as a decimal string: TOML integers stop at 63 bits.
fn decimal<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
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
        settings.validate(&ChainSettings::default(), &mut issues);
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
        settings.validate(&ChainSettings::default(), &mut issues);
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

    fn keys(issues: &Issues) -> Vec<&str> {
        issues.0.iter().map(|i| i.key.as_str()).collect()
    }

    #[test]
    fn the_payout_loop_defaults_are_the_indexers() {
        let settings = parse("").expect("parses");
        let mut issues = Issues::default();
        settings.validate(&ChainSettings::default(), &mut issues);
        assert!(issues.0.is_empty(), "{issues:?}");
        let config = settings
            .ethereum
            .payout_config(&ChainSettings::default())
            .expect("config");
        let indexer = EthereumPayoutConfig::default();
        assert_eq!(config.poll_interval, indexer.poll_interval);
        assert_eq!(config.max_fee_per_gas_cap, indexer.max_fee_per_gas_cap);
        assert_eq!(config.stuck_after, indexer.stuck_after);
        assert_eq!(config.concurrency, indexer.concurrency);
        assert_eq!(config.native_asset, "ETH");
        assert!(config.sweeps.assets.is_empty());
        // Finality is the chain section's.
        let chain = ChainSettings::<EthereumSettings>::default();
        assert_eq!(config.use_finalized_tag, chain.chain.use_finalized_tag);
        assert_eq!(config.confirmations, chain.chain.confirmations);
        // Wei values print as strings: TOML integers stop at 63 bits.
        let printed = toml::to_string(&settings).expect("serializes");
        assert!(
            printed.contains("max_fee_per_gas_cap = \"500000000000\""),
            "{printed}"
        );
    }

    #[test]
    fn payout_loop_keys_are_checked_and_named() {
        let settings = parse(
            r#"
            [ethereum]
            max_fee_per_gas_cap = 0
            min_priority_fee_per_gas = "2"
            tip_percentile = 101
            replace_after_blocks = 0
            rebroadcast_after_blocks = 0
            max_send_rejections = 0
            concurrency = 65
            fee_history_blocks = 0
            [ethereum.sweep_thresholds]
            ETH = "0"
            USDC = "1"
            "#,
        )
        .expect("parses");
        let mut issues = Issues::default();
        settings.validate(&ChainSettings::default(), &mut issues);
        let mut named = keys(&issues);
        named.sort_unstable();
        assert_eq!(
            named,
            [
                "withdrawals.ethereum.concurrency",
                "withdrawals.ethereum.fee_history_blocks",
                "withdrawals.ethereum.max_fee_per_gas_cap",
                "withdrawals.ethereum.max_send_rejections",
                "withdrawals.ethereum.min_priority_fee_per_gas",
                "withdrawals.ethereum.rebroadcast_after_blocks",
                "withdrawals.ethereum.replace_after_blocks",
                "withdrawals.ethereum.sweep_thresholds.ETH",
                "withdrawals.ethereum.sweep_thresholds.USDC",
                "withdrawals.ethereum.tip_percentile",
            ]
        );

        // Off, the loop's keys are not checked.
        let mut off = settings.clone();
        off.ethereum.enabled = false;
        let mut issues = Issues::default();
        off.validate(&ChainSettings::default(), &mut issues);
        assert!(issues.0.is_empty(), "{issues:?}");

        for bad in ["-1", "1.5", "\"abc\"", &format!("\"{}0\"", u128::MAX)] {
            assert!(
                parse(&format!("[ethereum]\nmax_fee_per_gas_cap = {bad}\n")).is_err(),
                "{bad}"
            );
        }
        assert!(parse("[ethereum]\nmax_fee_per_gas = 1\n").is_err());
    }

    #[test]
    fn sweep_thresholds_name_a_listed_token_in_any_case() {
        let mut chain = ChainSettings::<EthereumSettings>::default();
        chain.chain.tokens = vec![super::super::TokenSettings {
            contract: "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48".into(),
            asset: "USDC".into(),
            decimals: 6,
        }];
        let settings = parse(
            r#"
            [ethereum.sweep_thresholds]
            ETH = "10"
            usdc = 5
            USDC = "7"
            "#,
        )
        .expect("parses");
        let mut issues = Issues::default();
        settings.validate(&chain, &mut issues);
        assert!(issues.0.is_empty(), "{issues:?}");
        let config = settings.ethereum.payout_config(&chain).expect("config");
        assert_eq!(
            config.sweeps.assets,
            BTreeMap::from([
                ("ETH".to_owned(), Amount::from_u64(10)),
                ("USDC".to_owned(), Amount::from_u64(5)),
            ])
        );
        assert_eq!(
            config.tokens.get("USDC").map(|a| a.to_checksum(None)),
            Some("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48".to_owned())
        );
    }
}
