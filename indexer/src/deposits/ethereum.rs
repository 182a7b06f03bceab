//! The Ethereum deposit watcher: follows the node from the cursor to the
//! tip in pipelined batches, hands matched transfers to the
//! [`DepositStore`], credits what the `finalized` tag (or the configured
//! depth) covers, and walks back on reorgs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256};
use backon::{BackoffBuilder, ExponentialBuilder};
use chains::ethereum::{Block, EthereumClient};
use chains::{Chain, ChainHead, HeadSource};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Applied, Cursor, DepositStore, ObservedBlock, ObservedDeposit, WatchedAddresses};
use crate::ledger::Amount;
use crate::metrics::{
    CHAIN_FINALIZED_HEIGHT, CHAIN_INDEXED_HEIGHT, CHAIN_RPC_ERRORS, CHAIN_TIP_HEIGHT, CHAIN_UP,
    REORG_DEPTH, REORGS, WATCHER_HALTED,
};
use crate::{Error, Result};

const CHAIN: Chain = Chain::Ethereum;

/// An allow-listed ERC-20 contract and the asset code it credits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub contract: Address,
    pub asset: String,
}

#[derive(Clone, Debug)]
pub struct EthereumWatchConfig {
    /// First block to index on a new install; `None` starts at the tip.
    pub start_height: Option<u64>,
    /// Credit at the node's `finalized` tag when it serves one.
    pub use_finalized_tag: bool,
    /// Confirmations that make a block final where the tag is not used or
    /// not served (the tip counts as one).
    pub confirmations: u64,
    /// A reorg deeper than this halts the watcher.
    pub max_reorg_depth: u64,
    /// Blocks per batched request and per database transaction.
    pub batch_blocks: u64,
    /// Batches fetched ahead while earlier ones are written.
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub tokens: Vec<Token>,
}

impl Default for EthereumWatchConfig {
    fn default() -> Self {
        Self {
            start_height: None,
            use_finalized_tag: true,
            confirmations: 12,
            max_reorg_depth: 64,
            batch_blocks: 25,
            concurrency: 4,
            poll_interval: Duration::from_secs(2),
            tokens: Vec::new(),
        }
    }
}

/// Why a step did not complete.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// A reorg deeper than allowed: stop and alert, never continue.
    #[error("{0}")]
    Halt(String),
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<chains::Error> for StepError {
    fn from(err: chains::Error) -> Self {
        StepError::Failed(Error::Chain(err))
    }
}

enum Step {
    /// More to do: step again at once.
    Busy,
    /// At the tip: wait for the next poll.
    Idle,
}

/// Addresses being watched, keyed for matching.
#[derive(Debug, Default)]
struct Watched {
    owners: HashMap<Address, (Uuid, String)>,
}

#[derive(Debug)]
pub struct EthereumWatcher {
    client: EthereumClient,
    store: DepositStore,
    config: EthereumWatchConfig,
    addresses: WatchedAddresses,
    watched: Arc<Watched>,
    token_assets: HashMap<Address, String>,
    token_contracts: Vec<Address>,
    progress: watch::Sender<Option<u64>>,
    halted: watch::Sender<Option<String>>,
    recorded_tip: Option<ChainHead>,
}

impl EthereumWatcher {
    pub fn new(client: EthereumClient, store: DepositStore, config: EthereumWatchConfig) -> Self {
        let token_assets = config
            .tokens
            .iter()
            .map(|t| (t.contract, t.asset.clone()))
            .collect();
        let token_contracts = config.tokens.iter().map(|t| t.contract).collect();
        Self {
            client,
            store,
            config,
            addresses: WatchedAddresses::new(CHAIN),
            watched: Arc::default(),
            token_assets,
            token_contracts,
            progress: watch::channel(None).0,
            halted: watch::channel(None).0,
            recorded_tip: None,
        }
    }

    /// The height of the last block committed, after every commit.
    pub fn progress(&self) -> watch::Receiver<Option<u64>> {
        self.progress.subscribe()
    }

    /// Why the watcher halted, once it has.
    pub fn halted(&self) -> watch::Receiver<Option<String>> {
        self.halted.subscribe()
    }

    /// Runs until `cancel` fires, or until a reorg deeper than the limit
    /// halts it. Node and database failures are logged, counted and retried
    /// with backoff. Cancellation lands between steps, so a commit in
    /// flight finishes first.
    pub async fn run(mut self, cancel: CancellationToken) {
        let labels = [("chain", CHAIN.as_str())];
        metrics::gauge!(WATCHER_HALTED, &labels).set(0.0);
        let poll = self.config.poll_interval;
        let new_backoff = || {
            ExponentialBuilder::default()
                .with_min_delay(poll.min(Duration::from_millis(500)))
                .with_max_delay(Duration::from_secs(30))
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut backoff = new_backoff();
        tracing::info!(chain = %CHAIN, "deposit watcher started");
        while !cancel.is_cancelled() {
            let delay = match self.step().await {
                Ok(Step::Busy) => {
                    backoff = new_backoff();
                    continue;
                }
                Ok(Step::Idle) => {
                    backoff = new_backoff();
                    poll
                }
                Err(StepError::Halt(reason)) => {
                    metrics::gauge!(WATCHER_HALTED, &labels).set(1.0);
                    tracing::error!(chain = %CHAIN, %reason, "deposit watcher halted; an operator must investigate");
                    self.halted.send_replace(Some(reason));
                    cancel.clone().cancelled_owned().await;
                    break;
                }
                Err(StepError::Failed(err)) => {
                    let kind = match &err {
                        Error::Chain(e) => {
                            metrics::gauge!(CHAIN_UP, &labels).set(0.0);
                            e.kind()
                        }
                        _ => "database",
                    };
                    metrics::counter!(CHAIN_RPC_ERRORS, "chain" => CHAIN.as_str(), "kind" => kind)
                        .increment(1);
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(chain = %CHAIN, error = %err, retry_in_ms = delay.as_millis() as u64, "deposit watcher step failed");
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.clone().cancelled_owned() => break,
            }
        }
        tracing::info!(chain = %CHAIN, "deposit watcher stopped");
    }

    async fn step(&mut self) -> Result<Step, StepError> {
        let labels = [("chain", CHAIN.as_str())];
        let tip = self.client.head().await?;
        metrics::gauge!(CHAIN_UP, &labels).set(1.0);
        metrics::gauge!(CHAIN_TIP_HEIGHT, &labels).set(tip.height as f64);
        if self.recorded_tip.as_ref() != Some(&tip) {
            crate::watch::record_head(self.store.pool(), CHAIN, &tip).await?;
            self.recorded_tip = Some(tip.clone());
        }
        let final_height = self.final_height(tip.height).await?;
        if let Some(height) = final_height {
            metrics::gauge!(CHAIN_FINALIZED_HEIGHT, &labels).set(height as f64);
        }
        self.refresh_watched().await?;

        let cursor = match self.store.cursor().await? {
            Some(cursor) => cursor,
            None => self.init_cursor(tip.height).await?,
        };
        metrics::gauge!(CHAIN_INDEXED_HEIGHT, &labels).set(cursor.height as f64);
        if tip.height <= cursor.height {
            let canonical = if tip.height == cursor.height {
                tip.hash.clone()
            } else {
                self.client
                    .block_hashes(&[cursor.height])
                    .await?
                    .first()
                    .copied()
                    .flatten()
                    .map(|h| hex(&h))
            };
            if canonical.as_deref() != Some(cursor.hash.as_str()) {
                self.unwind_reorg(&cursor).await?;
                return Ok(Step::Busy);
            }
            if let Some(height) = final_height {
                self.store.confirm(height).await?;
            }
            return Ok(Step::Idle);
        }

        // Catch up in batches, fetching ahead while the store writes.
        let batch = self.config.batch_blocks.max(1);
        let batches_per_step = (self.config.concurrency.max(1) as u64) * 8;
        let end = tip
            .height
            .min(cursor.height.saturating_add(batch * batches_per_step));
        let ranges: Vec<_> = (cursor.height + 1..=end)
            .step_by(usize::try_from(batch).unwrap_or(usize::MAX))
            .map(|start| start..=(start + batch - 1).min(end))
            .collect();
        let client = self.client.clone();
        let watched = Arc::clone(&self.watched);
        let tokens = self.token_contracts.clone();
        let mut fetched = futures::stream::iter(ranges)
            .map(|range| {
                let client = client.clone();
                let watched = Arc::clone(&watched);
                let tokens = tokens.clone();
                // Spawned, so fetches progress while the store writes.
                let fetch = tokio::spawn(async move {
                    let wanted = move |a: &Address| watched.owners.contains_key(a);
                    client.blocks(range, &tokens, &wanted).await
                });
                let abort = fetch.abort_handle();
                AbortOnDrop(abort, fetch)
            })
            .buffered(self.config.concurrency.max(1));
        while let Some(blocks) = fetched.try_next().await? {
            let observed = self.observe(&blocks)?;
            match self.store.apply(&observed, final_height).await? {
                Applied::Advanced { .. } => {
                    let last = observed.last().map(|b| b.height);
                    if let Some(height) = last {
                        metrics::gauge!(CHAIN_INDEXED_HEIGHT, &labels).set(height as f64);
                    }
                    self.progress.send_replace(last);
                }
                Applied::ParentMismatch { height, .. } => {
                    drop(fetched);
                    let cursor = self
                        .store
                        .cursor()
                        .await?
                        .ok_or_else(|| Error::Corrupt("cursor vanished".into()))?;
                    tracing::warn!(chain = %CHAIN, height, "block does not extend the indexed chain");
                    self.unwind_reorg(&cursor).await?;
                    return Ok(Step::Busy);
                }
            }
        }
        if let Some(height) = final_height {
            self.store.confirm(height).await?;
        }
        Ok(Step::Busy)
    }

    /// The highest final block: the `finalized` tag, or the configured
    /// depth where the tag is off or not served.
    async fn final_height(&self, tip: u64) -> Result<Option<u64>, StepError> {
        if self.config.use_finalized_tag
            && let Some(head) = self.client.finalized().await?
        {
            return Ok(Some(head.height));
        }
        Ok((tip + 1).checked_sub(self.config.confirmations.max(1)))
    }

    async fn refresh_watched(&mut self) -> Result<()> {
        let added = self.addresses.refresh(self.store.pool()).await?;
        if added.is_empty() {
            return Ok(());
        }
        let mut next = Watched {
            owners: self.watched.owners.clone(),
        };
        for (text, user) in added {
            match text.parse::<Address>() {
                Ok(address) => {
                    next.owners.insert(address, (user, text));
                }
                Err(err) => {
                    tracing::error!(address = %text, error = %err, "watched Ethereum address does not parse; skipped")
                }
            }
        }
        self.watched = Arc::new(next);
        Ok(())
    }

    async fn init_cursor(&self, tip: u64) -> Result<Cursor, StepError> {
        let start = self.config.start_height.unwrap_or(tip).max(1);
        let parent = start - 1;
        let hash = self
            .client
            .block_hashes(&[parent])
            .await?
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| {
                StepError::Failed(Error::InvalidRequest(format!(
                    "start height {start} is above the node's tip {tip}"
                )))
            })?;
        let cursor = self
            .store
            .init_cursor(&Cursor {
                height: parent,
                hash: hex(&hash),
            })
            .await?;
        tracing::info!(chain = %CHAIN, from = cursor.height + 1, "deposit watcher starts indexing");
        Ok(cursor)
    }

    fn observe(&self, blocks: &[Block]) -> Result<Vec<ObservedBlock>> {
        blocks
            .iter()
            .map(|block| {
                let deposits = block
                    .transfers
                    .iter()
                    .filter_map(|t| {
                        let (user_id, address) = self.watched.owners.get(&t.to)?;
                        let asset = match t.token {
                            None => "ETH".to_owned(),
                            Some(token) => self.token_assets.get(&token)?.clone(),
                        };
                        let position = match t.log_index {
                            None => Ok(-1),
                            Some(i) => i64::try_from(i)
                                .map_err(|_| Error::Corrupt(format!("log index {i}"))),
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
                })
            })
            .collect()
    }

    /// Walks back from `cursor` to the newest indexed block the node still
    /// has, and unwinds everything above it. Deeper than allowed: halt.
    async fn unwind_reorg(&self, cursor: &Cursor) -> Result<(), StepError> {
        let limit = self.config.max_reorg_depth;
        // Everything kept, so a reorg just past the limit is still measured.
        let mut recent = self.store.recent_blocks(self.store.keep_blocks).await?;
        if recent.first().map(|b| b.height) != Some(cursor.height) {
            recent.insert(0, cursor.clone());
        }
        let heights: Vec<u64> = recent.iter().map(|b| b.height).collect();
        let canonical = self.client.block_hashes(&heights).await?;
        let ancestor = recent
            .iter()
            .zip(&canonical)
            .find(|(stored, hash)| hash.map(|h| hex(&h)).as_deref() == Some(stored.hash.as_str()))
            .map(|(stored, _)| stored.clone());
        let Some(ancestor) = ancestor else {
            return Err(StepError::Halt(format!(
                "reorg at height {} reaches below the {} indexed blocks kept, beyond max_reorg_depth {limit}",
                cursor.height,
                recent.len()
            )));
        };
        let depth = cursor.height - ancestor.height;
        if depth == 0 {
            // The node moved during the fetch; the stored chain still holds.
            return Ok(());
        }
        if depth > limit {
            return Err(StepError::Halt(format!(
                "reorg of depth {depth} at height {} exceeds max_reorg_depth {limit}",
                cursor.height
            )));
        }
        let unwound = self.store.rewind(&ancestor).await?;
        metrics::counter!(REORGS, "chain" => CHAIN.as_str()).increment(1);
        metrics::histogram!(REORG_DEPTH, "chain" => CHAIN.as_str()).record(depth as f64);
        tracing::warn!(
            chain = %CHAIN, depth, ancestor = ancestor.height,
            pending_unwound = unwound.pending, credited_unwound = unwound.credited,
            "reorg: unwound to the common ancestor"
        );
        self.progress.send_replace(Some(ancestor.height));
        Ok(())
    }
}

/// A spawned fetch that is aborted if the step stops waiting for it (a
/// reorg, an error, or cancellation).
struct AbortOnDrop<T>(tokio::task::AbortHandle, tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<chains::Result<T>> {
    type Output = Result<T, StepError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.1)
            .poll(cx)
            .map(|joined| match joined {
                Ok(result) => result.map_err(StepError::from),
                Err(err) => Err(StepError::Failed(Error::Corrupt(format!(
                    "fetch task: {err}"
                )))),
            })
    }
}

fn hex(hash: &B256) -> String {
    format!("{hash:#x}")
}
