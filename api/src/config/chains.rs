//! `[chains.*]`: one section per chain. Every section has the same node and
//! watch keys under the same names ([`ChainSettings`]), then the chain's own
//! keys, all flat in one table. Their defaults are the indexer's.

use std::collections::HashSet;
use std::hash::Hash;
use std::path::PathBuf;
use std::time::Duration;

use chains::Chain;
use figment::Figment;
use figment::value::Value;
use indexer::deposits::bitcoin::BitcoinWatchConfig;
use indexer::deposits::ethereum::EthereumWatchConfig;
use indexer::deposits::solana::SolanaWatchConfig;
use indexer::deposits::watcher::{FETCH_AHEAD, WatchConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Issues, Network, Secret, Section};

/// The devnet's Bitcoin RPC password (`scripts/devnet`, docker compose):
/// public, so refused on mainnet.
pub const INSECURE_DEVNET_BITCOIN_RPC_PASSWORD: &str = "coffer-devnet";

/// Ethereum mainnet's `eth_chainId`.
pub const ETHEREUM_MAINNET_CHAIN_ID: u64 = 1;

/// Solana mainnet-beta's genesis hash.
pub const SOLANA_MAINNET_GENESIS_HASH: &str = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d";

/// Keys renamed so that every chain names the same thing the same way; the
/// old name is refused with a message naming the new one.
const RENAMED: &[(&str, &str)] = &[
    ("start_slot", "start_height"),
    ("batch_slots", "batch_blocks"),
];

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainsSettings {
    pub bitcoin: ChainSettings<BitcoinSettings>,
    pub ethereum: ChainSettings<EthereumSettings>,
    pub solana: ChainSettings<SolanaSettings>,
}

/// A chain's section: its node, how its watcher walks the chain (heights
/// and blocks are slots on Solana), and the chain's own keys in `chain`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, bound = "")]
pub struct ChainSettings<C: ChainKeys> {
    pub enabled: bool,
    /// A secret: node URLs often carry a provider's API key.
    pub rpc_url: Secret,
    /// How often the watcher asks for the tip.
    pub poll_interval_ms: u64,
    /// Per request to the node.
    pub timeout_ms: u64,
    /// First block to index on a new install; unset starts at the node's
    /// tip. Ignored once the watcher has a cursor.
    pub start_height: Option<u64>,
    /// A reorg deeper than this halts the watcher (`coffer_watcher_halted`).
    pub max_reorg_depth: u64,
    /// Blocks per fetch during catch-up; a transaction writes one or more.
    pub batch_blocks: u64,
    /// Batches fetched ahead while earlier ones are written.
    pub fetch_concurrency: usize,
    /// Flattened: serde's `deny_unknown_fields` does not work with it, so
    /// [`ChainsSettings::check_sections`] refuses unknown keys instead.
    #[serde(flatten)]
    pub chain: C,
}

/// What one chain adds to [`ChainSettings`].
pub trait ChainKeys: Clone + Default + std::fmt::Debug + Serialize + DeserializeOwned {
    const CHAIN: Chain;
    /// Where the devnet's node answers.
    const DEVNET_RPC_URL: &'static str;
    /// The deepest `max_reorg_depth` accepted.
    const MAX_REORG_DEPTH: u64;
    /// The indexer's defaults for the chain's watch loop.
    fn watch_defaults() -> WatchConfig;
    /// Checks the chain's own keys, on or off (a chain that names mainnet
    /// is refused off mainnet even when disabled).
    fn validate(section: &ChainSettings<Self>, network: Network, at: &mut Section<'_>);
}

impl<C: ChainKeys> Default for ChainSettings<C> {
    fn default() -> Self {
        let watch = C::watch_defaults();
        Self {
            enabled: true,
            rpc_url: C::DEVNET_RPC_URL.into(),
            poll_interval_ms: watch.poll_interval.as_millis() as u64,
            timeout_ms: 15_000,
            start_height: watch.start_height,
            max_reorg_depth: watch.max_reorg_depth,
            batch_blocks: watch.batch_blocks,
            fetch_concurrency: watch.fetch_concurrency,
            chain: C::default(),
        }
    }
}

impl<C: ChainKeys> ChainSettings<C> {
    /// The settings of the indexer's watch loop.
    pub fn watch_config(&self) -> WatchConfig {
        WatchConfig {
            start_height: self.start_height,
            max_reorg_depth: self.max_reorg_depth,
            batch_blocks: self.batch_blocks,
            fetch_concurrency: self.fetch_concurrency,
            fetch_ahead: FETCH_AHEAD,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    fn validate(&self, network: Network, issues: &mut Issues) {
        let mut at = issues.section(&format!("chains.{}", C::CHAIN));
        C::validate(self, network, &mut at);
        if !self.enabled {
            return;
        }
        match url::Url::parse(self.rpc_url.expose()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => at.bad(
                "rpc_url",
                format!("scheme must be http or https, not `{}`", url.scheme()),
            ),
            Err(err) => at.bad("rpc_url", format!("not a valid URL: {err}")),
        }
        for (key, value) in [
            ("poll_interval_ms", self.poll_interval_ms),
            ("timeout_ms", self.timeout_ms),
        ] {
            if value == 0 {
                at.bad(key, "must be at least 1");
            }
        }
        at.ranges(&[
            (
                "max_reorg_depth",
                self.max_reorg_depth,
                1,
                C::MAX_REORG_DEPTH,
            ),
            ("batch_blocks", self.batch_blocks, 1, 1_000),
            ("fetch_concurrency", self.fetch_concurrency as u64, 1, 64),
        ]);
    }
}

impl ChainsSettings {
    pub(super) fn validate(&self, network: Network, issues: &mut Issues) {
        self.bitcoin.validate(network, issues);
        self.ethereum.validate(network, issues);
        self.solana.validate(network, issues);
    }

    /// What serde cannot check in the chains' sections, whose own keys are
    /// flattened into the shared ones: that every key is known (naming the
    /// new key for a renamed one), and, in a type error of a chain's own
    /// key, the key itself (flattened, serde names only the section).
    pub(super) fn check_sections(figment: &Figment) -> Vec<figment::Error> {
        let mut errors = Vec::new();
        check_section::<BitcoinSettings>(figment, &mut errors);
        check_section::<EthereumSettings>(figment, &mut errors);
        check_section::<SolanaSettings>(figment, &mut errors);
        errors
    }
}

fn check_section<C: ChainKeys>(figment: &Figment, errors: &mut Vec<figment::Error>) {
    let section = format!("chains.{}", C::CHAIN);
    // Absent, or not a table (which extracting the settings names).
    let Some(given) = figment.find_value(&section).ok().and_then(Value::into_dict) else {
        return;
    };
    let known: Vec<String> = Value::serialize(ChainSettings::<C>::default())
        .ok()
        .and_then(Value::into_dict)
        .map(|keys| keys.into_keys().collect())
        .unwrap_or_default();
    for key in given.keys().filter(|key| !known.contains(key)) {
        let path = format!("{section}.{key}");
        let message = match RENAMED.iter().find(|(old, _)| old == key) {
            Some((_, new)) => format!("`{key}` is now `{new}`, as on every chain"),
            None => format!("unknown key `{key}`; expected one of: {}", known.join(", ")),
        };
        let mut error = figment::Error::from(message).with_path(&path);
        error.metadata = figment.find_metadata(&path).cloned();
        errors.push(error);
    }
    if let Err(err) = figment.focus(&section).extract::<C>() {
        errors.extend(err.into_iter().map(|mut error| {
            error
                .path
                .splice(0..0, section.split('.').map(str::to_owned));
            error
        }));
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BitcoinNetwork {
    Bitcoin,
    Testnet,
    Signet,
    #[default]
    Regtest,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct BitcoinSettings {
    /// Address format and BIP84 coin type: `bitcoin` (mainnet), `testnet`, `signet`, `regtest`.
    pub network: BitcoinNetwork,
    pub rpc_user: Option<String>,
    pub rpc_password: Option<Secret>,
    /// Bitcoin Core's `.cookie` file; when set it replaces `rpc_user`/`rpc_password`.
    pub cookie_file: Option<PathBuf>,
    /// Confirmations (the deposit's block counts as one) that make a
    /// deposit available; it is pending from the first.
    pub confirmations: u64,
    /// Addresses derived past the last issued one, and the run of unused
    /// issued addresses that raises `coffer_deposit_address_gap_exceeded`.
    pub gap_limit: u32,
}

impl Default for BitcoinSettings {
    fn default() -> Self {
        let indexer = BitcoinWatchConfig::default();
        Self {
            network: BitcoinNetwork::Regtest,
            rpc_user: Some("coffer".into()),
            rpc_password: Some(Secret::from(INSECURE_DEVNET_BITCOIN_RPC_PASSWORD)),
            cookie_file: None,
            confirmations: indexer.confirmations,
            gap_limit: indexer.gap_limit,
        }
    }
}

/// Real money only under mainnet's rules (and never with the public devnet
/// secrets that other networks allow).
const NEEDS_MAINNET: &str = "names mainnet, which needs network = \"mainnet\"";

impl ChainKeys for BitcoinSettings {
    const CHAIN: Chain = Chain::Bitcoin;
    const DEVNET_RPC_URL: &'static str = "http://127.0.0.1:18334";
    const MAX_REORG_DEPTH: u64 = 10_000;

    fn watch_defaults() -> WatchConfig {
        BitcoinWatchConfig::default().watch
    }

    fn validate(section: &ChainSettings<Self>, network: Network, at: &mut Section<'_>) {
        let btc = &section.chain;
        let mainnet = network == Network::Mainnet;
        // The deposit keys follow the network, enabled or not.
        match (mainnet, btc.network == BitcoinNetwork::Bitcoin) {
            (true, false) => at.bad("network", "must be `bitcoin` on mainnet"),
            (false, true) => at.bad("network", NEEDS_MAINNET),
            _ => {}
        }
        if !section.enabled {
            return;
        }
        at.ranges(&[
            ("confirmations", btc.confirmations, 1, 10_000),
            ("gap_limit", u64::from(btc.gap_limit), 1, 100_000),
        ]);
        if let Some(path) = &btc.cookie_file {
            at.readable_file("cookie_file", path);
        }
        if btc.rpc_user.is_some() != btc.rpc_password.is_some() {
            at.bad(
                "rpc_password",
                "rpc_user and rpc_password must be set together",
            );
        }
        if mainnet {
            let devnet_password = btc
                .rpc_password
                .as_ref()
                .is_some_and(|p| p.expose() == INSECURE_DEVNET_BITCOIN_RPC_PASSWORD);
            if btc.cookie_file.is_none() && devnet_password {
                at.bad(
                    "rpc_password",
                    "the devnet password is refused on mainnet (or set chains.bitcoin.cookie_file)",
                );
            }
            if btc.confirmations < 2 {
                at.bad(
                    "confirmations",
                    "must be at least 2 on mainnet: one confirmation is reorged away routinely",
                );
            }
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct EthereumSettings {
    /// The chain id the node must report (`eth_chainId`) at start. Unset: 1
    /// on mainnet; on other networks any chain but mainnet.
    pub chain_id: Option<u64>,
    /// Credit deposits once the node's `finalized` tag covers them.
    pub use_finalized_tag: bool,
    /// Confirmations (the tip counts as one) that make a block final when
    /// the tag is off or the node serves none.
    pub confirmations: u64,
    /// Allow-listed ERC-20 contracts; transfers of any other token are ignored.
    pub tokens: Vec<TokenSettings>,
}

impl Default for EthereumSettings {
    fn default() -> Self {
        let indexer = EthereumWatchConfig::default();
        Self {
            chain_id: None,
            use_finalized_tag: indexer.use_finalized_tag,
            confirmations: indexer.confirmations,
            tokens: Vec::new(),
        }
    }
}

/// An allow-listed token: its contract, the asset code it credits, and the
/// decimals its amounts carry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub contract: String,
    pub asset: String,
    pub decimals: u8,
}

impl ChainKeys for EthereumSettings {
    const CHAIN: Chain = Chain::Ethereum;
    const DEVNET_RPC_URL: &'static str = "http://127.0.0.1:8545";
    const MAX_REORG_DEPTH: u64 = 10_000;

    fn watch_defaults() -> WatchConfig {
        EthereumWatchConfig::default().watch
    }

    fn validate(section: &ChainSettings<Self>, network: Network, at: &mut Section<'_>) {
        let eth = &section.chain;
        let mainnet = network == Network::Mainnet;
        if !mainnet && eth.chain_id == Some(ETHEREUM_MAINNET_CHAIN_ID) {
            at.bad("chain_id", NEEDS_MAINNET);
        }
        if !section.enabled {
            return;
        }
        at.ranges(&[("confirmations", eth.confirmations, 1, 10_000)]);
        if eth.chain_id == Some(0) {
            at.bad("chain_id", "must be at least 1");
        }
        let tokens = eth
            .tokens
            .iter()
            .map(|t| (t.contract.as_str(), t.asset.as_str(), t.decimals));
        check_tokens(at, "contract", tokens, |contract| {
            contract
                .parse::<alloy_primitives::Address>()
                .map_err(|err| format!("not an address: {err}"))
        });
        if mainnet {
            if !eth.use_finalized_tag {
                at.bad(
                    "use_finalized_tag",
                    "must be true on mainnet: credit only what the chain finalized",
                );
            }
            if let Some(id) = eth.chain_id
                && id != ETHEREUM_MAINNET_CHAIN_ID
            {
                at.bad(
                    "chain_id",
                    format!("is {id}, but Ethereum mainnet is {ETHEREUM_MAINNET_CHAIN_ID}"),
                );
            }
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SolanaSettings {
    /// The cluster's genesis hash (base58), checked against the node's
    /// `getGenesisHash` at start. Unset: mainnet-beta's on mainnet; on other
    /// networks any cluster but mainnet-beta (a fresh local validator has a
    /// genesis of its own).
    pub genesis_hash: Option<String>,
    /// Allow-listed SPL Token mints; transfers of any other mint are ignored.
    pub tokens: Vec<SplTokenSettings>,
}

/// An allow-listed SPL mint, the asset code it credits, and its decimals.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplTokenSettings {
    pub mint: String,
    pub asset: String,
    pub decimals: u8,
}

impl ChainKeys for SolanaSettings {
    const CHAIN: Chain = Chain::Solana;
    const DEVNET_RPC_URL: &'static str = "http://127.0.0.1:8899";
    const MAX_REORG_DEPTH: u64 = 100_000;

    fn watch_defaults() -> WatchConfig {
        SolanaWatchConfig::default().watch
    }

    fn validate(section: &ChainSettings<Self>, network: Network, at: &mut Section<'_>) {
        let sol = &section.chain;
        let mainnet = network == Network::Mainnet;
        let genesis = sol.genesis_hash.as_deref();
        if !mainnet && genesis == Some(SOLANA_MAINNET_GENESIS_HASH) {
            at.bad("genesis_hash", NEEDS_MAINNET);
        }
        if !section.enabled {
            return;
        }
        if let Some(hash) = genesis
            && let Err(err) = hash.parse::<solana_pubkey::Pubkey>()
        {
            at.bad("genesis_hash", format!("not a base58 hash: {err}"));
        }
        let tokens = sol
            .tokens
            .iter()
            .map(|t| (t.mint.as_str(), t.asset.as_str(), t.decimals));
        check_tokens(at, "mint", tokens, |mint| {
            mint.parse::<solana_pubkey::Pubkey>()
                .map_err(|err| format!("not a base58 public key: {err}"))
        });
        if mainnet
            && let Some(hash) = genesis
            && hash != SOLANA_MAINNET_GENESIS_HASH
        {
            at.bad(
                "genesis_hash",
                format!("is not mainnet-beta's ({SOLANA_MAINNET_GENESIS_HASH})"),
            );
        }
    }
}

/// A chain's allow-listed tokens, as `(id, asset, decimals)`: each id
/// parses and is listed once, each asset code is the ledger's format and no
/// native asset's, and decimals fit the ledger's amounts.
fn check_tokens<'a, K: Eq + Hash>(
    at: &mut Section<'_>,
    id_key: &str,
    tokens: impl Iterator<Item = (&'a str, &'a str, u8)>,
    parse: impl Fn(&str) -> Result<K, String>,
) {
    let mut seen = HashSet::new();
    for (i, (id, asset, decimals)) in tokens.enumerate() {
        let key = |field: &str| format!("tokens[{i}].{field}");
        match parse(id).map(|id| seen.insert(id)) {
            Ok(true) => {}
            Ok(false) => at.bad(&key(id_key), "is listed twice"),
            Err(why) => at.bad(&key(id_key), why),
        }
        let well_formed = (2..=16).contains(&asset.len())
            && asset
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !well_formed {
            at.bad(
                &key("asset"),
                "must be 2 to 16 upper-case letters or digits",
            );
        } else if ["BTC", "ETH", "SOL"].contains(&asset) {
            at.bad(&key("asset"), "names a native asset");
        }
        if decimals > 38 {
            at.bad(&key("decimals"), "must be 0 to 38");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chain's section names the shared keys alike.
    #[test]
    fn every_chain_has_the_shared_keys() {
        fn keys<C: ChainKeys>() -> Vec<String> {
            let value = Value::serialize(ChainSettings::<C>::default()).expect("serialize");
            value.into_dict().expect("a table").into_keys().collect()
        }
        for keys in [
            keys::<BitcoinSettings>(),
            keys::<EthereumSettings>(),
            keys::<SolanaSettings>(),
        ] {
            for shared in [
                "enabled",
                "rpc_url",
                "poll_interval_ms",
                "timeout_ms",
                "start_height",
                "max_reorg_depth",
                "batch_blocks",
                "fetch_concurrency",
            ] {
                assert!(keys.iter().any(|k| k == shared), "{shared} in {keys:?}");
            }
            for (old, _) in RENAMED {
                assert!(!keys.iter().any(|k| k == old), "{old} in {keys:?}");
            }
        }
    }
}
