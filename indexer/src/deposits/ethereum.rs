//! Ethereum deposits: native ETH from successful top-level transactions and
//! `Transfer` events of allow-listed ERC-20 contracts, final at the node's
//! `finalized` tag (or a configured depth). A transfer from one of Coffer's
//! own addresses (a deposit address, the hot wallet) is Coffer moving its
//! own funds, a gas top-up or a sweep, and never a deposit.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::Arc;

use alloy_primitives::{Address, B256};
use chains::ethereum::{Block, EthereumClient};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::watcher::{DepositSource, WatchConfig, WatchedSet, Watcher, final_at_depth};
use super::{DepositStore, IssuedSince, ObservedBlock, ObservedDeposit};
use crate::ledger::Amount;
use crate::metrics::DEPOSITS_OWN_TRANSFERS_SKIPPED;
use crate::{Error, Result};

const CHAIN: chains::Chain = chains::Chain::Ethereum;

/// An allow-listed ERC-20 contract and the asset code it credits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub contract: Address,
    pub asset: String,
}

#[derive(Clone, Debug)]
pub struct EthereumWatchConfig {
    pub watch: WatchConfig,
    /// Credit at the node's `finalized` tag when it serves one.
    pub use_finalized_tag: bool,
    /// Confirmations that make a block final where the tag is not used or
    /// not served (the tip counts as one).
    pub confirmations: u64,
    pub tokens: Vec<Token>,
    /// Coffer's addresses that are not deposit addresses (the hot wallet):
    /// what they send, like what a deposit address sends, is never a
    /// deposit.
    pub own_senders: Vec<Address>,
}

/// The daemon's defaults too (`api::config` starts from these).
impl Default for EthereumWatchConfig {
    fn default() -> Self {
        Self {
            watch: WatchConfig {
                batch_blocks: 25,
                ..WatchConfig::default()
            },
            use_finalized_tag: true,
            confirmations: 12,
            tokens: Vec::new(),
            own_senders: Vec::new(),
        }
    }
}

/// The Ethereum deposit watcher.
pub type EthereumWatcher = Watcher<EthereumSource>;

impl Watcher<EthereumSource> {
    pub fn new(client: EthereumClient, store: DepositStore, config: EthereumWatchConfig) -> Self {
        let source = EthereumSource {
            token_assets: Arc::new(
                config
                    .tokens
                    .iter()
                    .map(|t| (t.contract, t.asset.clone()))
                    .collect(),
            ),
            token_contracts: config.tokens.iter().map(|t| t.contract).collect(),
            own_senders: Arc::new(config.own_senders.iter().copied().collect()),
            client,
            use_finalized_tag: config.use_finalized_tag,
            confirmations: config.confirmations,
        };
        Watcher::with_source(source, store, config.watch)
    }
}

/// Watched addresses by parsed address, with owner and stored text.
pub type Owners = HashMap<Address, (Uuid, String)>;

impl WatchedSet<EthereumSource> for Owners {
    fn watch(&mut self, _: &mut EthereumSource, issued: &IssuedSince) -> Result<()> {
        for (text, user) in issued.owners() {
            match text.parse::<Address>() {
                Ok(address) => {
                    self.insert(address, (user, text));
                }
                Err(err) => {
                    tracing::error!(address = %text, error = %err, "watched Ethereum address does not parse; skipped")
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct EthereumSource {
    client: EthereumClient,
    use_finalized_tag: bool,
    confirmations: u64,
    token_assets: Arc<HashMap<Address, String>>,
    token_contracts: Arc<[Address]>,
    own_senders: Arc<HashSet<Address>>,
}

impl DepositSource for EthereumSource {
    type Node = EthereumClient;
    type Watched = Owners;

    fn node(&self) -> &EthereumClient {
        &self.client
    }

    /// The `finalized` tag, or the configured depth where the tag is off or
    /// not served.
    async fn final_height(&self, tip: u64) -> chains::Result<Option<u64>> {
        if self.use_finalized_tag
            && let Some(head) = self.client.finalized().await?
        {
            return Ok(Some(head.height));
        }
        Ok(final_at_depth(tip, self.confirmations))
    }

    async fn block_hashes(&self, heights: &[u64]) -> chains::Result<Vec<Option<String>>> {
        Ok(self
            .client
            .block_hashes(heights)
            .await?
            .into_iter()
            .map(|h| h.map(|h| hex(&h)))
            .collect())
    }

    fn fetch(
        &self,
        range: RangeInclusive<u64>,
        watched: Arc<Owners>,
    ) -> impl Future<Output = Result<Vec<ObservedBlock>>> + Send + 'static {
        let client = self.client.clone();
        let tokens = Arc::clone(&self.token_contracts);
        let token_assets = Arc::clone(&self.token_assets);
        let own_senders = Arc::clone(&self.own_senders);
        async move {
            let wanted = |a: &Address| watched.contains_key(a);
            let blocks = client.blocks(range, &tokens, &wanted).await?;
            observe(&blocks, &watched, &own_senders, &token_assets)
        }
    }
}

fn observe(
    blocks: &[Block],
    watched: &Owners,
    own_senders: &HashSet<Address>,
    token_assets: &HashMap<Address, String>,
) -> Result<Vec<ObservedBlock>> {
    blocks
        .iter()
        .map(|block| {
            let deposits = block
                .transfers
                .iter()
                .filter_map(|t| {
                    let (user_id, address) = watched.get(&t.to)?;
                    if watched.contains_key(&t.from) || own_senders.contains(&t.from) {
                        metrics::counter!(DEPOSITS_OWN_TRANSFERS_SKIPPED, "chain" => CHAIN.as_str())
                            .increment(1);
                        tracing::debug!(
                            chain = CHAIN.as_str(), height = block.number, tx = %t.tx_hash,
                            from = %t.from, to = %address,
                            "a transfer between Coffer's own addresses; not a deposit"
                        );
                        return None;
                    }
                    let asset = match t.token {
                        None => "ETH".to_owned(),
                        Some(token) => token_assets.get(&token)?.clone(),
                    };
                    let position = match t.log_index {
                        None => Ok(-1),
                        Some(i) => {
                            i64::try_from(i).map_err(|_| Error::Corrupt(format!("log index {i}")))
                        }
                    };
                    Some(position.map(|position| ObservedDeposit {
                        tx_id: hex(&t.tx_hash),
                        position,
                        address: address.clone(),
                        user_id: *user_id,
                        asset,
                        amount: Amount::from_u256(t.amount),
                    }))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(ObservedBlock {
                height: block.number,
                hash: hex(&block.hash),
                parent_hash: hex(&block.parent_hash),
                time: i64::try_from(block.timestamp)
                    .ok()
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0)),
                deposits,
                utxos: Default::default(),
            })
        })
        .collect()
}

fn hex(hash: &B256) -> String {
    format!("{hash:#x}")
}
