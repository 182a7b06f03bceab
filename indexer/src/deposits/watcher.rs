//! The chain-independent watch loop: bring the watched set up to date from
//! the database, follow the node from the cursor to the tip in pipelined
//! batches (`prefetch`), hand each batch to the [`DepositStore`], credit
//! what has become final, and walk back on reorgs (`walk_back`). A
//! [`DepositSource`] supplies the chain-specific parts: it reads the node
//! and matches, nothing more.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chains::ChainHead;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use super::source::{DepositSource, WatchedSet, final_at_depth};

use super::prefetch::prefetch;
use super::walk_back::{common_ancestor, walk_back_candidates};
use super::{Applied, Cursor, DepositStore, WatchedAddresses};
use crate::metrics::{
    CHAIN_FINALIZED_HEIGHT, CHAIN_INDEXED_HEIGHT, CHAIN_RPC_ERRORS, CHAIN_TIP_HEIGHT, CHAIN_UP,
    REORG_DEPTH, REORGS, WATCHER_HALTED,
};
use crate::{Error, Result};

/// Loop settings shared by every chain, under the same names on each (a
/// Solana "block" is a slot). Each chain's config embeds it as `watch`.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// First block to index on a new install; `None` starts at the tip.
    pub start_height: Option<u64>,
    /// A reorg deeper than this halts the watcher.
    pub max_reorg_depth: u64,
    /// Blocks per fetch; a transaction writes one or more fetches.
    pub batch_blocks: u64,
    /// Batches fetched ahead while earlier ones are written.
    pub fetch_concurrency: usize,
    /// Finished batches held per fetch in flight. A store that falls
    /// behind writes every batch waiting in one transaction, paying a
    /// transaction's fixed costs (its commit's WAL flush above all) once.
    pub fetch_ahead: usize,
    pub poll_interval: Duration,
}

/// The default [`WatchConfig::fetch_ahead`].
pub const FETCH_AHEAD: usize = 4;

/// What the chains' defaults share; each chain's `Default` names only what
/// differs from it.
impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            start_height: None,
            max_reorg_depth: 64,
            batch_blocks: 10,
            fetch_concurrency: 4,
            fetch_ahead: FETCH_AHEAD,
            poll_interval: Duration::from_secs(1),
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
    Failed(Error),
}

impl From<Error> for StepError {
    fn from(err: Error) -> Self {
        match err {
            // Retrying the same node cannot bring pruned blocks back, and
            // indexing past them would lose deposits: stop and alert.
            Error::Chain(chain @ chains::Error::HistoryUnavailable { .. }) => {
                StepError::Halt(format!(
                    "{chain}; point the chain's rpc_url at a node that still has them (or an archive node), then restart"
                ))
            }
            other => StepError::Failed(other),
        }
    }
}

impl From<chains::Error> for StepError {
    fn from(err: chains::Error) -> Self {
        StepError::from(Error::Chain(err))
    }
}

enum Step {
    /// More to do: step again at once.
    Busy,
    /// At the tip: wait for the next poll.
    Idle,
}

#[derive(Debug)]
pub struct Watcher<S: DepositSource> {
    source: S,
    store: DepositStore,
    config: WatchConfig,
    progress: watch::Sender<Option<u64>>,
    halted: watch::Sender<Option<String>>,
    recorded_tip: Option<ChainHead>,
    /// How far the issued addresses have been read.
    addresses: WatchedAddresses,
    /// The source's matching form of them; each fetch holds the set it
    /// started with, so an update copies it only while a fetch runs.
    watched: Arc<S::Watched>,
    /// Heights scanned past the cursor without a block (skipped slots), so
    /// a long run of them is not fetched again.
    scanned_to: Option<u64>,
}

impl<S: DepositSource> Watcher<S> {
    pub fn with_source(source: S, store: DepositStore, config: WatchConfig) -> Self {
        Self {
            addresses: WatchedAddresses::new(source.chain()),
            watched: Arc::default(),
            source,
            store,
            config,
            progress: watch::channel(None).0,
            halted: watch::channel(None).0,
            recorded_tip: None,
            scanned_to: None,
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
        let chain = self.source.chain();
        let labels = [("chain", chain.as_str())];
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
        tracing::info!(%chain, "deposit watcher started");
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
                    tracing::error!(%chain, %reason, "deposit watcher halted; an operator must investigate");
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
                    metrics::counter!(CHAIN_RPC_ERRORS, "chain" => chain.as_str(), "kind" => kind)
                        .increment(1);
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(%chain, error = %err, retry_in_ms = delay.as_millis() as u64, "deposit watcher step failed");
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.clone().cancelled_owned() => break,
            }
        }
        tracing::info!(%chain, "deposit watcher stopped");
    }

    async fn step(&mut self) -> Result<Step, StepError> {
        let chain = self.source.chain();
        let labels = [("chain", chain.as_str())];
        let tip = self.source.head().await?;
        metrics::gauge!(CHAIN_UP, &labels).set(1.0);
        metrics::gauge!(CHAIN_TIP_HEIGHT, &labels).set(tip.height as f64);
        if self.recorded_tip.as_ref() != Some(&tip) {
            crate::chain_heads::record_head(self.store.pool(), chain, &tip).await?;
            self.recorded_tip = Some(tip.clone());
        }
        let final_height = self.source.final_height(tip.height).await?;
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
            let holds = if tip.height == cursor.height {
                tip.hash.as_deref() == Some(cursor.hash.as_str())
            } else {
                self.holds_indexed_prefix(&tip).await?
            };
            if !holds {
                self.unwind_reorg(&cursor, tip.height).await?;
                return Ok(Step::Busy);
            }
            self.confirm(final_height).await?;
            return Ok(Step::Idle);
        }

        // Catch up in batches, fetching ahead while the store writes.
        let batch = self.config.batch_blocks.max(1);
        let batches_per_step = (self.config.fetch_concurrency.max(1) as u64) * 32;
        let from = cursor.height.max(self.scanned_to.unwrap_or(0)) + 1;
        if from > tip.height {
            self.confirm(final_height).await?;
            return Ok(Step::Idle);
        }
        let end = tip
            .height
            .min(from.saturating_add(batch * batches_per_step - 1));
        let ranges: Vec<_> = (from..=end)
            .step_by(usize::try_from(batch).unwrap_or(usize::MAX))
            .map(|start| start..=(start + batch - 1).min(end))
            .collect();
        let expected = ranges.len();
        let mut received = 0;
        // Created here, while `source` is at hand; they start when polled.
        let fetches = ranges
            .into_iter()
            .map(|range| self.source.fetch(range, Arc::clone(&self.watched)))
            .collect();
        let mut fetched = prefetch(
            fetches,
            self.config.fetch_concurrency,
            self.config.fetch_ahead,
        );
        while let Some(first) = fetched.receiver.recv().await {
            // Batches that finished while the last one was written go into
            // one transaction: fewer commits when the store is behind.
            let mut observed = first?;
            received += 1;
            let mut failed = None;
            for _ in 1..self.config.fetch_concurrency.max(1) * self.config.fetch_ahead.max(1) {
                match fetched.receiver.try_recv() {
                    Ok(Ok(more)) => {
                        observed.extend(more);
                        received += 1;
                    }
                    Ok(Err(err)) => {
                        failed = Some(StepError::from(err));
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !observed.is_empty() {
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
                        tracing::warn!(%chain, height, "block does not extend the indexed chain");
                        self.scanned_to = None;
                        self.unwind_reorg(&cursor, tip.height).await?;
                        return Ok(Step::Busy);
                    }
                }
            }
            if let Some(err) = failed {
                return Err(err);
            }
        }
        if received < expected {
            // Only a fetch task that died can end the channel early; the
            // heights it did not hand over must not count as scanned.
            return Err(StepError::Failed(Error::Corrupt(format!(
                "fetching stopped after {received} of {expected} batches"
            ))));
        }
        self.scanned_to = Some(end);
        self.confirm(final_height).await?;
        Ok(Step::Busy)
    }

    /// Reads the addresses issued since the last step and hands them to
    /// the source; the first step always does, before any fetch.
    async fn refresh_watched(&mut self) -> Result<()> {
        let pool = self.store.pool();
        let Some(issued) = self.addresses.refresh(pool).await? else {
            return Ok(());
        };
        Arc::make_mut(&mut self.watched).watch(&mut self.source, &issued)?;
        if let Some(gap_limit) = self.source.gap_limit() {
            self.addresses.check_gap(pool, gap_limit).await?;
        }
        Ok(())
    }

    /// Credits deposits up to `final_height` once the final chain is known
    /// to hold the indexed block there; otherwise waits (a fork the node
    /// left shows up as a reorg).
    async fn confirm(&self, final_height: Option<u64>) -> Result<(), StepError> {
        let Some(final_height) = final_height else {
            return Ok(());
        };
        let Some(block) = self.store.indexed_at_or_below(final_height).await? else {
            return Ok(());
        };
        let final_hash = self.source.final_block_hash(block.height).await?;
        if final_hash.as_deref() != Some(block.hash.as_str()) {
            tracing::warn!(
                chain = %self.source.chain(), height = block.height,
                "the final chain does not hold the indexed block yet; not crediting"
            );
            return Ok(());
        }
        self.store.confirm(block.height).await?;
        Ok(())
    }

    async fn init_cursor(&self, tip: u64) -> Result<Cursor, StepError> {
        let start = self.config.start_height.unwrap_or(tip).max(1);
        let anchor = self.source.anchor(start - 1).await?.ok_or_else(|| {
            StepError::Failed(Error::InvalidRequest(format!(
                "start height {start} is above the node's tip {tip}"
            )))
        })?;
        let cursor = self.store.init_cursor(&anchor).await?;
        tracing::info!(chain = %self.source.chain(), from = cursor.height + 1, "deposit watcher starts indexing");
        Ok(cursor)
    }

    /// Whether a node whose tip is below the cursor is only behind (restarting,
    /// or a lagging replica): it holds the block indexed at or below its tip.
    /// Heights above its tip say nothing yet, so they are not compared.
    async fn holds_indexed_prefix(&self, tip: &ChainHead) -> Result<bool, StepError> {
        let Some(block) = self.store.indexed_at_or_below(tip.height).await? else {
            // Nothing that low is kept to compare with: wait for the node.
            return Ok(true);
        };
        let hash = if block.height == tip.height {
            tip.hash.clone()
        } else {
            self.source.block_hash(block.height).await?
        };
        let holds = hash.as_deref() == Some(block.hash.as_str());
        if holds {
            tracing::debug!(
                chain = %self.source.chain(), tip = tip.height,
                "the node is behind the indexed chain; waiting for it"
            );
        }
        Ok(holds)
    }

    /// Walks back from `cursor` to the newest indexed block the node still
    /// has at or below its tip, and unwinds everything above it. Deeper than
    /// allowed: halt.
    async fn unwind_reorg(&mut self, cursor: &Cursor, tip: u64) -> Result<(), StepError> {
        let chain = self.source.chain();
        let limit = self.config.max_reorg_depth;
        // Everything kept, so a reorg just past the limit is still measured.
        let kept = self.store.recent_blocks(self.store.keep_blocks).await?;
        let recent = walk_back_candidates(cursor, kept, tip);
        let heights: Vec<u64> = recent.iter().map(|b| b.height).collect();
        let canonical = self.source.block_hashes(&heights).await?;
        let Some(ancestor) = common_ancestor(&recent, &canonical).cloned() else {
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
        self.scanned_to = None;
        metrics::counter!(REORGS, "chain" => chain.as_str()).increment(1);
        metrics::histogram!(REORG_DEPTH, "chain" => chain.as_str()).record(depth as f64);
        tracing::warn!(
            %chain, depth, ancestor = ancestor.height,
            pending_unwound = unwound.pending, credited_unwound = unwound.credited,
            "reorg: unwound to the common ancestor"
        );
        self.progress.send_replace(Some(ancestor.height));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chains::Chain;

    use super::*;

    #[test]
    fn pruned_history_halts_while_other_node_failures_are_retried() {
        let pruned = chains::Error::HistoryUnavailable {
            chain: Chain::Solana,
            detail: "Block 10 cleaned up".into(),
        };
        match StepError::from(pruned) {
            StepError::Halt(reason) => assert!(reason.contains("rpc_url"), "{reason}"),
            StepError::Failed(err) => panic!("retried: {err}"),
        }
        let down = chains::Error::Inconsistent {
            chain: Chain::Solana,
            detail: "moved".into(),
        };
        assert!(matches!(StepError::from(down), StepError::Failed(_)));
    }
}
