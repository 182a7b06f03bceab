//! Solana deposits: the net lamport increase of a watched address, and the
//! net increase of an allow-listed mint in a token account the watched
//! address owned before and after the transaction (or that was created in
//! it already owned by it), in successful transactions it did not sign;
//! pending at `confirmed`, available at `finalized`. Heights are slots;
//! skipped slots simply have no block.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use chains::solana::{Block, SolanaClient};
use chains::{Chain, ChainHead};
use chrono::{DateTime, Utc};
use solana_commitment_config::CommitmentConfig;
use uuid::Uuid;

use super::watcher::{DepositSource, WatchConfig, Watcher};
use super::{Cursor, DepositStore, ObservedBlock, ObservedDeposit};
use crate::Result;
use crate::ledger::Amount;
use crate::metrics::DEPOSIT_OWNER_HANDOVERS;

const CHAIN: Chain = Chain::Solana;

/// An allow-listed SPL mint and the asset code it credits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplToken {
    pub mint: String,
    pub asset: String,
}

#[derive(Clone, Debug)]
pub struct SolanaWatchConfig {
    /// Heights are slots: `start_height` is the first slot, a batch spans
    /// `batch_blocks` slots, and a fork deeper than `max_reorg_depth` slots
    /// halts the watcher.
    pub watch: WatchConfig,
    pub tokens: Vec<SplToken>,
}

/// The daemon's defaults too (`api::config` starts from these).
impl Default for SolanaWatchConfig {
    fn default() -> Self {
        Self {
            watch: WatchConfig {
                max_reorg_depth: 150,
                poll_interval: Duration::from_millis(400),
                ..WatchConfig::default()
            },
            tokens: Vec::new(),
        }
    }
}

/// The Solana deposit watcher.
pub type SolanaWatcher = Watcher<SolanaSource>;

impl Watcher<SolanaSource> {
    pub fn new(client: SolanaClient, store: DepositStore, config: SolanaWatchConfig) -> Self {
        let source = SolanaSource {
            client,
            mints: config.tokens.iter().map(|t| t.mint.clone()).collect(),
            mint_assets: Arc::new(
                config
                    .tokens
                    .iter()
                    .map(|t| (t.mint.clone(), t.asset.clone()))
                    .collect(),
            ),
        };
        Watcher::with_source(source, store, config.watch)
    }
}

#[derive(Debug)]
pub struct SolanaSource {
    client: SolanaClient,
    mints: Arc<[String]>,
    mint_assets: Arc<HashMap<String, String>>,
}

impl DepositSource for SolanaSource {
    type Node = SolanaClient;
    /// Owner by watched address.
    type Watched = HashMap<String, Uuid>;

    fn node(&self) -> &SolanaClient {
        &self.client
    }

    /// The `confirmed` tip, with its hash (the client's plain head has none).
    async fn head(&self) -> chains::Result<ChainHead> {
        self.client.confirmed_head().await
    }

    async fn final_height(&self, _tip: u64) -> chains::Result<Option<u64>> {
        Ok(Some(self.client.slot(CommitmentConfig::finalized()).await?))
    }

    async fn block_hashes(&self, heights: &[u64]) -> chains::Result<Vec<Option<String>>> {
        self.client
            .block_hashes(heights, CommitmentConfig::confirmed())
            .await
    }

    async fn anchor(&self, height: u64) -> chains::Result<Option<Cursor>> {
        Ok(self
            .client
            .block_at_or_below(height)
            .await?
            .map(|(height, hash)| Cursor { height, hash }))
    }

    async fn final_block_hash(&self, height: u64) -> chains::Result<Option<String>> {
        Ok(self
            .client
            .block_hashes(&[height], CommitmentConfig::finalized())
            .await?
            .into_iter()
            .next()
            .flatten())
    }

    fn fetch(
        &self,
        range: RangeInclusive<u64>,
        watched: Arc<Self::Watched>,
    ) -> impl Future<Output = Result<Vec<ObservedBlock>>> + Send + 'static {
        let client = self.client.clone();
        let mints = Arc::clone(&self.mints);
        let mint_assets = Arc::clone(&self.mint_assets);
        async move {
            let wanted = |owner: &str| watched.contains_key(owner);
            let blocks = client.blocks(range, &mints, &wanted).await?;
            Ok(blocks
                .iter()
                .map(|block| observe(block, &watched, &mint_assets))
                .collect())
        }
    }
}

fn observe(
    block: &Block,
    watched: &HashMap<String, Uuid>,
    mint_assets: &HashMap<String, String>,
) -> ObservedBlock {
    for change in &block.owner_changes {
        tracing::warn!(
            chain = CHAIN.as_str(), slot = block.slot, signature = %change.signature,
            token_account = %change.account, previous_owner = ?change.previous_owner,
            owner = %change.owner, mint = %change.mint, amount = change.amount,
            "a token account was handed to a deposit address; its balance is not a deposit"
        );
        metrics::counter!(DEPOSIT_OWNER_HANDOVERS, "chain" => CHAIN.as_str()).increment(1);
    }
    let deposits = block
        .transfers
        .iter()
        .filter_map(|t| {
            let user_id = *watched.get(&t.owner)?;
            let asset = match &t.mint {
                None => "SOL".to_owned(),
                Some(mint) => mint_assets.get(mint)?.clone(),
            };
            Some(ObservedDeposit {
                tx_id: t.signature.clone(),
                position: i64::from(t.position),
                address: t.owner.clone(),
                user_id,
                asset,
                amount: Amount::from_u64(t.amount),
            })
        })
        .collect();
    ObservedBlock {
        height: block.slot,
        hash: block.blockhash.clone(),
        parent_hash: block.previous_blockhash.clone(),
        time: block
            .time
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0)),
        deposits,
        utxos: Default::default(),
    }
}
