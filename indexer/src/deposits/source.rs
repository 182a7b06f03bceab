//! What a chain contributes to the watch loop: reading its node and
//! matching its blocks against the watched set. A source reads no
//! database: the [`Watcher`](super::watcher::Watcher) reads the watched set
//! and hands it over, so every chain's source is a node client plus
//! matching, and a scripted chain can stand in for one.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use chains::{Chain, ChainHead, HeadSource};
use uuid::Uuid;

use super::{Cursor, IssuedSince, ObservedBlock};
use crate::Result;

/// What a chain contributes to the watch loop.
pub trait DepositSource: Send + Sync + 'static {
    /// The node client read; it names the chain and, unless the source
    /// says otherwise, reports the tip.
    type Node: HeadSource;

    /// The watched set in the form this chain matches fastest. The engine
    /// keeps it, adds newly issued addresses through [`WatchedSet`], and
    /// hands every fetch the set as it is when the fetch starts.
    type Watched: WatchedSet<Self>;

    fn node(&self) -> &Self::Node;

    fn chain(&self) -> Chain {
        self.node().chain()
    }

    /// The node's tip, with its hash.
    fn head(&self) -> impl Future<Output = chains::Result<ChainHead>> + Send {
        self.node().head()
    }

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

    /// How many unused addresses past the last used one this chain's
    /// wallets scan (Bitcoin's gap limit), where that matters: the engine
    /// raises the gap alarm beyond it. `None`: not tracked.
    fn gap_limit(&self) -> Option<u32> {
        None
    }

    /// Fetches `range` and matches it against `watched`. The future owns
    /// what it needs, so it can run on its own task.
    fn fetch(
        &self,
        range: RangeInclusive<u64>,
        watched: Arc<Self::Watched>,
    ) -> impl Future<Output = Result<Vec<ObservedBlock>>> + Send + 'static;
}

/// A source's matching form of the watched set, and how it takes newly
/// issued addresses; `S` is the source, at hand for sets that need
/// something of it (Bitcoin derives its lookahead from the account key).
pub trait WatchedSet<S: ?Sized>: Clone + Default + Send + Sync + 'static {
    /// Adds the addresses issued since the last call. The engine calls it
    /// at the start of a step when addresses were issued, and once before
    /// the first fetch even when none were.
    fn watch(&mut self, source: &mut S, issued: &IssuedSince) -> Result<()>;
}

/// Owner by address as issued: the set of chains that match an address by
/// its text (Solana, the scripted chain).
impl<S: ?Sized> WatchedSet<S> for HashMap<String, Uuid> {
    fn watch(&mut self, _: &mut S, issued: &IssuedSince) -> Result<()> {
        self.extend(issued.owners());
        Ok(())
    }
}

/// The highest height with `confirmations` blocks on it (the tip counting
/// as one; at least one): final by depth. `None` while the chain is shorter.
pub fn final_at_depth(tip: u64, confirmations: u64) -> Option<u64> {
    (tip + 1).checked_sub(confirmations.max(1))
}
