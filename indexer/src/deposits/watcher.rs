//! The chain-independent watch loop: follow the node from the cursor to the
//! tip in pipelined batches, hand each batch to the [`DepositStore`], credit
//! what has become final, and walk back on reorgs. A [`DepositSource`]
//! supplies the chain-specific parts.

use std::ops::RangeInclusive;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chains::{Chain, ChainHead};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Applied, Cursor, DepositStore, ObservedBlock};
use crate::metrics::{
    CHAIN_FINALIZED_HEIGHT, CHAIN_INDEXED_HEIGHT, CHAIN_RPC_ERRORS, CHAIN_TIP_HEIGHT, CHAIN_UP,
    REORG_DEPTH, REORGS, WATCHER_HALTED,
};
use crate::{Error, Result};

/// What a chain contributes to the watch loop.
pub trait DepositSource: Send + Sync + 'static {
    fn chain(&self) -> Chain;

    /// The node's tip, with its hash.
    fn head(&self) -> impl Future<Output = chains::Result<ChainHead>> + Send;

    /// The highest final height given the tip, if any block is final yet.
    fn final_height(&self, tip: u64) -> impl Future<Output = chains::Result<Option<u64>>> + Send;

    /// The node's block hash at each height (`None` above its tip).
    fn block_hashes(
        &self,
        heights: &[u64],
    ) -> impl Future<Output = chains::Result<Vec<Option<String>>>> + Send;

    /// The node's block hash at one height.
    fn block_hash(
        &self,
        height: u64,
    ) -> impl Future<Output = chains::Result<Option<String>>> + Send {
        async move {
            Ok(self
                .block_hashes(&[height])
                .await?
                .into_iter()
                .next()
                .flatten())
        }
    }

    /// The block a new watcher starts after: the one at `height`, or on
    /// chains with empty heights (Solana's skipped slots) the last one below.
    fn anchor(&self, height: u64) -> impl Future<Output = chains::Result<Option<Cursor>>> + Send {
        async move {
            Ok(self
                .block_hash(height)
                .await?
                .map(|hash| Cursor { height, hash }))
        }
    }

    /// The final chain's block hash at `height`, checked before deposits
    /// at or below it are credited. Where the node's view is one chain
    /// (Bitcoin, Ethereum) it is the block hash; Solana asks at `finalized`.
    fn final_block_hash(
        &self,
        height: u64,
    ) -> impl Future<Output = chains::Result<Option<String>>> + Send {
        self.block_hash(height)
    }

    /// Brings the watched set up to date; called at the start of each step.
    fn refresh_watched(&mut self, pool: &PgPool) -> impl Future<Output = Result<()>> + Send;

    /// Fetches `range` and matches it against the watched set as it is now.
    /// The future owns what it needs, so it can run on its own task.
    fn fetch(
        &self,
        range: RangeInclusive<u64>,
    ) -> impl Future<Output = Result<Vec<ObservedBlock>>> + Send + 'static;
}

/// Loop settings shared by every chain.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// First block to index on a new install; `None` starts at the tip.
    pub start_height: Option<u64>,
    /// A reorg deeper than this halts the watcher.
    pub max_reorg_depth: u64,
    /// Blocks per fetch; a transaction writes one or more fetches.
    pub batch_blocks: u64,
    /// Batches fetched ahead while earlier ones are written.
    pub concurrency: usize,
    /// Finished batches held per fetch in flight. A store that falls
    /// behind writes every batch waiting in one transaction, paying a
    /// transaction's fixed costs (its commit's WAL flush above all) once.
    pub fetch_ahead: usize,
    pub poll_interval: Duration,
}

/// The default [`WatchConfig::fetch_ahead`].
pub const FETCH_AHEAD: usize = 4;

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
pub struct Watcher<S> {
    source: S,
    store: DepositStore,
    config: WatchConfig,
    progress: watch::Sender<Option<u64>>,
    halted: watch::Sender<Option<String>>,
    recorded_tip: Option<ChainHead>,
    /// Heights scanned past the cursor without a block (skipped slots), so
    /// a long run of them is not fetched again.
    scanned_to: Option<u64>,
}

impl<S: DepositSource> Watcher<S> {
    pub fn with_source(source: S, store: DepositStore, config: WatchConfig) -> Self {
        Self {
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
        self.source.refresh_watched(self.store.pool()).await?;

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
        let batches_per_step = (self.config.concurrency.max(1) as u64) * 32;
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
        let mut fetched = self.prefetch(ranges);
        while let Some(first) = fetched.receiver.recv().await {
            // Batches that finished while the last one was written go into
            // one transaction: fewer commits when the store is behind.
            let mut observed = first?;
            received += 1;
            let mut failed = None;
            for _ in 1..self.config.concurrency.max(1) * self.config.fetch_ahead.max(1) {
                match fetched.receiver.try_recv() {
                    Ok(Ok(more)) => {
                        observed.extend(more);
                        received += 1;
                    }
                    Ok(Err(err)) => {
                        failed = Some(err);
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

    /// Fetches `ranges` on their own tasks, `concurrency` at a time, and
    /// hands them over in order. Fetching runs ahead of the store by up to
    /// `concurrency * fetch_ahead` finished batches, so neither waits on the
    /// other while both have work; dropping the receiver stops it all.
    fn prefetch(&self, ranges: Vec<RangeInclusive<u64>>) -> Prefetched {
        let concurrency = self.config.concurrency.max(1);
        // Created here, while `source` is at hand; they start when polled.
        let fetches: Vec<_> = ranges
            .into_iter()
            .map(|range| self.source.fetch(range))
            .collect();
        let (sender, receiver) = mpsc::channel(concurrency * self.config.fetch_ahead.max(1));
        let producer = async move {
            let mut waiting = fetches.into_iter();
            let mut in_flight = FuturesOrdered::new();
            // Each on its own task, so decoding uses every core.
            for fetch in waiting.by_ref().take(concurrency) {
                in_flight.push_back(spawn_aborting(fetch));
            }
            while let Some(batch) = in_flight.next().await {
                if let Some(fetch) = waiting.next() {
                    in_flight.push_back(spawn_aborting(fetch));
                }
                let failed = batch.is_err();
                if sender.send(batch).await.is_err() || failed {
                    break;
                }
            }
        };
        Prefetched {
            receiver,
            _producer: spawn_aborting(producer),
        }
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

/// The indexed blocks the walk back compares, newest first: the kept
/// `recent` blocks (newest first) under the cursor, without those above the
/// node's `tip` (the node has nothing there yet, which proves nothing).
fn walk_back_candidates(cursor: &Cursor, mut recent: Vec<Cursor>, tip: u64) -> Vec<Cursor> {
    if recent.first().map(|b| b.height) != Some(cursor.height) {
        recent.insert(0, cursor.clone());
    }
    recent.retain(|b| b.height <= tip);
    recent
}

/// The common ancestor of a reorg: the newest of `recent` (newest first)
/// whose hash is the node's at its height, where `canonical[i]` is the
/// node's hash at `recent[i].height` (`None`: no block there). `None` when
/// the node holds none of them.
fn common_ancestor<'a>(recent: &'a [Cursor], canonical: &[Option<String>]) -> Option<&'a Cursor> {
    recent
        .iter()
        .zip(canonical)
        .find(|(stored, hash)| hash.as_deref() == Some(stored.hash.as_str()))
        .map(|(stored, _)| stored)
}

/// Batches fetched ahead, in order; dropping it aborts the fetching.
struct Prefetched {
    receiver: mpsc::Receiver<Result<Vec<ObservedBlock>, StepError>>,
    _producer: AbortOnDrop<()>,
}

/// Runs `future` on its own task until it finishes or the handle is dropped.
fn spawn_aborting<F>(future: F) -> AbortOnDrop<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = tokio::spawn(future);
    AbortOnDrop(task.abort_handle(), task)
}

/// A spawned fetch that is aborted if the step stops waiting for it (a
/// reorg, an error, or cancellation).
struct AbortOnDrop<T>(tokio::task::AbortHandle, tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<Result<T>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn block(height: u64, branch: &str) -> Cursor {
        Cursor {
            height,
            hash: format!("{branch}{height}"),
        }
    }

    /// Indexed blocks `from..=to` of branch `a`, newest first.
    fn indexed(from: u64, to: u64) -> Vec<Cursor> {
        (from..=to).rev().map(|h| block(h, "a")).collect()
    }

    /// A node on branch `a` up to `fork`, branch `b` above it, with blocks
    /// up to `tip`: its hash at each of `recent`'s heights.
    fn node(recent: &[Cursor], fork: u64, tip: u64) -> Vec<Option<String>> {
        recent
            .iter()
            .map(|b| match b.height {
                h if h > tip => None,
                h if h > fork => Some(format!("b{h}")),
                h => Some(format!("a{h}")),
            })
            .collect()
    }

    #[test]
    fn the_ancestor_of_a_reorg_of_every_depth_is_the_fork_point() {
        let cursor = block(120, "a");
        for depth in 0..=20 {
            let recent = walk_back_candidates(&cursor, indexed(100, 120), 120);
            let canonical = node(&recent, 120 - depth, 120);
            assert_eq!(
                common_ancestor(&recent, &canonical),
                Some(&block(120 - depth, "a")),
                "depth {depth}"
            );
        }
    }

    #[test]
    fn a_reorg_below_every_kept_block_has_no_ancestor() {
        let cursor = block(120, "a");
        let recent = walk_back_candidates(&cursor, indexed(100, 120), 120);
        assert_eq!(common_ancestor(&recent, &node(&recent, 99, 120)), None);
        assert_eq!(common_ancestor(&[], &[]), None);
        // A node that answers no height at all holds none of them either.
        assert_eq!(common_ancestor(&recent, &vec![None; recent.len()]), None);
    }

    #[test]
    fn a_node_behind_the_cursor_is_compared_only_at_or_below_its_tip() {
        let cursor = block(120, "a");
        let recent = walk_back_candidates(&cursor, indexed(100, 120), 110);
        assert_eq!(recent.first(), Some(&block(110, "a")), "nothing above 110");
        assert_eq!(recent.len(), 11);
        // Holding the prefix: the newest block it has is the ancestor.
        assert_eq!(
            common_ancestor(&recent, &node(&recent, 110, 110)),
            Some(&block(110, "a"))
        );
        // Forked below its tip: the fork point.
        assert_eq!(
            common_ancestor(&recent, &node(&recent, 104, 110)),
            Some(&block(104, "a"))
        );
        // A tip below every kept block leaves nothing to compare.
        let recent = walk_back_candidates(&cursor, indexed(100, 120), 99);
        assert!(recent.is_empty());
    }

    #[test]
    fn the_cursor_heads_the_candidates_once() {
        let cursor = block(120, "a");
        // Missing from the kept blocks (a new install's anchor): added.
        let recent = walk_back_candidates(&cursor, Vec::new(), 120);
        assert_eq!(recent, vec![cursor.clone()]);
        let recent = walk_back_candidates(&cursor, indexed(100, 119), 200);
        assert_eq!(recent.first(), Some(&cursor));
        assert_eq!(recent.len(), 21);
        // Already the newest kept block: not twice.
        let recent = walk_back_candidates(&cursor, indexed(100, 120), 200);
        assert_eq!(recent.len(), 21);
    }

    #[test]
    fn heights_without_a_block_are_passed_over() {
        // Solana: skipped slots are never indexed, and the node has no
        // block at a height the other branch skipped.
        let cursor = block(120, "a");
        let kept: Vec<Cursor> = [120, 118, 115, 111, 110]
            .into_iter()
            .map(|h| block(h, "a"))
            .collect();
        let recent = walk_back_candidates(&cursor, kept, 120);
        let canonical = vec![
            Some("b120".to_owned()),
            None,
            Some("b115".to_owned()),
            None,
            Some("a110".to_owned()),
        ];
        assert_eq!(common_ancestor(&recent, &canonical), Some(&block(110, "a")));
    }

    proptest::proptest! {
        /// Against a model: the ancestor is the newest kept block at or
        /// below both the fork point and the node's tip.
        #[test]
        fn the_ancestor_is_the_newest_kept_block_below_the_fork_and_the_tip(
            heights in proptest::collection::btree_set(0u64..200, 1..60),
            fork in 0u64..220,
            tip in 0u64..220,
        ) {
            let kept: Vec<Cursor> = heights.iter().rev().map(|&h| block(h, "a")).collect();
            let cursor = kept[0].clone();
            let recent = walk_back_candidates(&cursor, kept.clone(), tip);
            let canonical = node(&recent, fork, tip);
            let expected = kept.iter().find(|b| b.height <= fork.min(tip));
            proptest::prop_assert_eq!(common_ancestor(&recent, &canonical), expected);
        }
    }

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
