//! A chain driven by a script, for tests of the watch loop without a node
//! (feature `devnet`). A [`ScriptedChain`] is a cloneable handle over one
//! in-memory chain; each watcher reads it through a [`ScriptedSource`] of
//! its own while the test extends it, reorganises it, holds its tip back,
//! prunes its history or makes it answer garbage. Payments name an address;
//! as on a real chain, the source matches them against the watched set its
//! watcher read from its database (crediting the address's owner) and
//! ignores the rest, so two databases set up alike index one script alike.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};

use chains::{Chain, ChainHead, HeadSource};
use uuid::Uuid;

use super::watcher::{DepositSource, WatchConfig, Watcher, final_at_depth};
use super::{Cursor, DepositStore, ObservedBlock, ObservedDeposit};
use crate::Result;
use crate::ledger::Amount;

/// A payment to an address, for a block the script adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub address: String,
    pub asset: String,
    pub amount: Amount,
    /// `None`: a new transaction. `Some`: that transaction again, as when a
    /// reorg's new branch re-includes it ([`ScriptedChain::payments`]
    /// returns them so).
    pub tx_id: Option<String>,
}

impl Payment {
    /// A new transaction paying `amount` of `asset` to `address`.
    pub fn new(address: &str, asset: &str, amount: u64) -> Self {
        Self {
            address: address.to_owned(),
            asset: asset.to_owned(),
            amount: Amount::from_u64(amount),
            tx_id: None,
        }
    }
}

/// One in-memory chain and the faults it is told to show; clones share it.
#[derive(Clone, Debug)]
pub struct ScriptedChain {
    chain: Chain,
    state: Arc<Mutex<State>>,
}

/// One watcher's reader of a [`ScriptedChain`].
#[derive(Debug)]
pub struct ScriptedSource {
    script: ScriptedChain,
}

#[derive(Debug)]
struct State {
    /// The block at each height, from a genesis block at 0.
    blocks: Vec<Block>,
    /// Bumped by every reorg, so the blocks of each branch hash apart.
    branch: u64,
    next_tx: u64,
    /// Blocks that make a block final (the tip counts as one).
    confirmations: u64,
    /// The tip the node admits to, when below its real one.
    behind: Option<u64>,
    /// Fetches of blocks below this answer `HistoryUnavailable`.
    pruned_below: u64,
    /// Calls still to answer `Malformed`.
    malformed: u64,
    fetches: u64,
}

#[derive(Clone, Debug)]
struct Block {
    hash: String,
    /// Each with its transaction id.
    payments: Vec<Payment>,
}

impl ScriptedChain {
    /// A chain holding only its genesis block, final at one confirmation.
    pub fn new(chain: Chain) -> Self {
        let state = State {
            blocks: vec![Block {
                hash: block_hash(0, 0),
                payments: Vec::new(),
            }],
            branch: 0,
            next_tx: 0,
            confirmations: 1,
            behind: None,
            pruned_below: 0,
            malformed: 0,
            fetches: 0,
        };
        Self {
            chain,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A watcher reading this chain for `store`'s database.
    pub fn watcher(&self, store: DepositStore, config: WatchConfig) -> Watcher<ScriptedSource> {
        let source = ScriptedSource {
            script: self.clone(),
        };
        Watcher::with_source(source, store, config)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The real tip, whatever the node admits to.
    pub fn tip(&self) -> Cursor {
        self.state().tip()
    }

    /// The block at `height` on the current branch.
    pub fn block(&self, height: u64) -> Option<Cursor> {
        let state = self.state();
        let block = state.blocks.get(usize::try_from(height).ok()?)?;
        Some(Cursor {
            height,
            hash: block.hash.clone(),
        })
    }

    /// The payments of the block at `height` on the current branch, with
    /// their transaction ids: pushed again, they re-include those
    /// transactions.
    pub fn payments(&self, height: u64) -> Vec<Payment> {
        let state = self.state();
        usize::try_from(height)
            .ok()
            .and_then(|h| state.blocks.get(h))
            .map(|b| b.payments.clone())
            .unwrap_or_default()
    }

    /// Adds `blocks` empty blocks; returns the new tip.
    pub fn extend(&self, blocks: u64) -> Cursor {
        let mut state = self.state();
        for _ in 0..blocks {
            state.push(Vec::new());
        }
        state.tip()
    }

    /// Adds one block carrying `payments` (one transaction each); returns it.
    pub fn push(&self, payments: Vec<Payment>) -> Cursor {
        let mut state = self.state();
        state.push(payments);
        state.tip()
    }

    /// Replaces the top `depth` blocks with as many empty ones of a new
    /// branch: the height stays, every hash above the fork point changes.
    pub fn reorg(&self, depth: u64) -> Cursor {
        self.reorg_with(depth, (0..depth).map(|_| Vec::new()).collect())
    }

    /// Replaces the top `depth` blocks with `blocks` of a new branch (any
    /// number, each a list of payments); returns the new tip.
    pub fn reorg_with(&self, depth: u64, blocks: Vec<Vec<Payment>>) -> Cursor {
        let mut state = self.state();
        let depth = usize::try_from(depth).unwrap_or(usize::MAX);
        // Genesis stays: every branch shares it.
        let keep = state.blocks.len().saturating_sub(depth).max(1);
        state.blocks.truncate(keep);
        state.branch += 1;
        for payments in blocks {
            state.push(payments);
        }
        state.tip()
    }

    /// The node admits only to `height` as its tip (restarting, a lagging
    /// replica) until [`Self::caught_up`]; it has nothing above it.
    pub fn behind(&self, height: u64) {
        self.state().behind = Some(height);
    }

    pub fn caught_up(&self) {
        self.state().behind = None;
    }

    /// Fetches of blocks below `height` answer `HistoryUnavailable`, as a
    /// node that pruned them does.
    pub fn prune_below(&self, height: u64) {
        self.state().pruned_below = height;
    }

    /// The next `calls` calls of any kind answer `Malformed`.
    pub fn malformed(&self, calls: u64) {
        self.state().malformed = calls;
    }

    /// Calls still to answer `Malformed`.
    pub fn malformed_left(&self) -> u64 {
        self.state().malformed
    }

    /// Confirmations (the tip counting as one) that make a block final.
    pub fn set_confirmations(&self, confirmations: u64) {
        self.state().confirmations = confirmations.max(1);
    }

    /// Fetch calls made so far.
    pub fn fetches(&self) -> u64 {
        self.state().fetches
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A test that panicked while holding it has failed already.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn block_hash(height: u64, branch: u64) -> String {
    format!("scripted:{height}:{branch}")
}

impl State {
    fn height(&self) -> u64 {
        self.blocks.len() as u64 - 1
    }

    fn hash(&self, height: u64) -> String {
        self.blocks[height as usize].hash.clone()
    }

    fn tip(&self) -> Cursor {
        let height = self.height();
        Cursor {
            height,
            hash: self.hash(height),
        }
    }

    /// The tip the node admits to.
    fn visible_tip(&self) -> u64 {
        self.behind.map_or(self.height(), |b| b.min(self.height()))
    }

    fn push(&mut self, payments: Vec<Payment>) {
        let height = self.height() + 1;
        let payments = payments
            .into_iter()
            .map(|mut p| {
                if p.tx_id.is_none() {
                    self.next_tx += 1;
                    p.tx_id = Some(format!("tx{}", self.next_tx));
                }
                p
            })
            .collect();
        self.blocks.push(Block {
            hash: block_hash(height, self.branch),
            payments,
        });
    }

    /// Uses up one scripted `Malformed` answer, if any are left.
    fn answer(&mut self, chain: Chain, method: &'static str) -> chains::Result<()> {
        if self.malformed == 0 {
            return Ok(());
        }
        self.malformed -= 1;
        Err(chains::Error::Malformed {
            chain,
            method,
            detail: "scripted garbage".into(),
        })
    }

    /// The block at `height` if the node admits to it.
    fn visible(&self, height: u64) -> Option<&Block> {
        if height > self.visible_tip() {
            return None;
        }
        self.blocks.get(usize::try_from(height).ok()?)
    }

    fn fetch(
        &mut self,
        chain: Chain,
        range: RangeInclusive<u64>,
        owners: &HashMap<String, Uuid>,
    ) -> chains::Result<Vec<ObservedBlock>> {
        self.fetches += 1;
        self.answer(chain, "fetch")?;
        if *range.start() < self.pruned_below {
            return Err(chains::Error::HistoryUnavailable {
                chain,
                detail: format!(
                    "block {} pruned; first available block: {}",
                    range.start(),
                    self.pruned_below
                ),
            });
        }
        range
            .map(|height| {
                let block = self
                    .visible(height)
                    .ok_or_else(|| chains::Error::Inconsistent {
                        chain,
                        detail: format!("block {height} vanished"),
                    })?;
                let deposits = block
                    .payments
                    .iter()
                    .filter_map(|p| {
                        Some(ObservedDeposit {
                            tx_id: p.tx_id.clone()?,
                            position: 0,
                            address: p.address.clone(),
                            user_id: *owners.get(&p.address)?,
                            asset: p.asset.clone(),
                            amount: p.amount,
                        })
                    })
                    .collect();
                Ok(ObservedBlock {
                    height,
                    hash: block.hash.clone(),
                    // Genesis has no parent; the watcher never fetches it.
                    parent_hash: height
                        .checked_sub(1)
                        .map_or_else(String::new, |h| self.hash(h)),
                    time: None,
                    deposits,
                    utxos: Default::default(),
                })
            })
            .collect()
    }
}

impl HeadSource for ScriptedChain {
    fn chain(&self) -> Chain {
        self.chain
    }

    async fn head(&self) -> chains::Result<ChainHead> {
        let mut state = self.state();
        state.answer(self.chain, "head")?;
        let height = state.visible_tip();
        Ok(ChainHead {
            height,
            hash: Some(state.hash(height)),
        })
    }
}

impl DepositSource for ScriptedSource {
    type Node = ScriptedChain;
    /// Owner by watched address.
    type Watched = HashMap<String, Uuid>;

    fn node(&self) -> &ScriptedChain {
        &self.script
    }

    async fn final_height(&self, tip: u64) -> chains::Result<Option<u64>> {
        let mut state = self.script.state();
        state.answer(self.script.chain, "final_height")?;
        Ok(final_at_depth(tip, state.confirmations))
    }

    async fn block_hashes(&self, heights: &[u64]) -> chains::Result<Vec<Option<String>>> {
        let mut state = self.script.state();
        state.answer(self.script.chain, "block_hashes")?;
        Ok(heights
            .iter()
            .map(|&h| state.visible(h).map(|b| b.hash.clone()))
            .collect())
    }

    fn fetch(
        &self,
        range: RangeInclusive<u64>,
        owners: Arc<Self::Watched>,
    ) -> impl Future<Output = Result<Vec<ObservedBlock>>> + Send + 'static {
        let (chain, state) = (self.script.chain, Arc::clone(&self.script.state));
        async move { Ok(lock(&state).fetch(chain, range, &owners)?) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source over `script`, without a database.
    fn source(script: &ScriptedChain) -> ScriptedSource {
        ScriptedSource {
            script: script.clone(),
        }
    }

    /// A watched set that knows `alice`'s address.
    fn alice() -> Arc<HashMap<String, Uuid>> {
        Arc::new(HashMap::from([("alice".to_owned(), Uuid::nil())]))
    }

    #[tokio::test]
    async fn a_reorg_changes_every_hash_above_the_fork_point_and_nothing_below() {
        let script = ScriptedChain::new(Chain::Ethereum);
        script.extend(5);
        script.push(vec![
            Payment::new("alice", "ETH", 5),
            Payment::new("bob", "ETH", 6),
        ]);
        let before: Vec<_> = (0..=6).map(|h| script.block(h)).collect();
        let paid = script.payments(6);
        let tip = script.reorg(2);
        assert_eq!(tip.height, 6);
        for h in 0..=4 {
            assert_eq!(script.block(h), before[h as usize], "height {h}");
        }
        for h in 5..=6 {
            assert_ne!(script.block(h), before[h as usize], "height {h}");
        }
        assert!(script.payments(6).is_empty(), "the new branch pays nothing");
        let source = source(&script);
        let blocks = source.fetch(5..=6, alice()).await.expect("fetch");
        let block4 = before[4].clone().expect("block 4");
        assert_eq!(blocks[0].parent_hash, block4.hash);
        assert_eq!(blocks[1].parent_hash, blocks[0].hash);

        // Re-included: the same transaction in a block of a new branch;
        // only the watched address's payment is a deposit.
        script.reorg_with(1, vec![paid.clone()]);
        let blocks = source.fetch(6..=6, alice()).await.expect("fetch");
        let old6 = before[6].clone().expect("block 6");
        assert_ne!(blocks[0].hash, old6.hash);
        assert_eq!(blocks[0].deposits.len(), 1);
        assert_eq!(Some(blocks[0].deposits[0].tx_id.clone()), paid[0].tx_id);
    }

    #[tokio::test]
    async fn a_node_behind_pruned_or_garbled_answers_as_a_node_would() {
        let script = ScriptedChain::new(Chain::Ethereum);
        let source = source(&script);
        script.extend(10);
        script.behind(7);
        assert_eq!(source.head().await.expect("head").height, 7);
        assert_eq!(source.block_hash(8).await.expect("hash"), None);
        assert!(matches!(
            source.fetch(6..=8, alice()).await,
            Err(crate::Error::Chain(chains::Error::Inconsistent { .. }))
        ));
        script.caught_up();
        script.prune_below(4);
        assert!(matches!(
            source.fetch(3..=5, alice()).await,
            Err(crate::Error::Chain(
                chains::Error::HistoryUnavailable { .. }
            ))
        ));
        assert_eq!(source.fetch(4..=5, alice()).await.expect("fetch").len(), 2);
        script.malformed(2);
        assert!(matches!(
            source.head().await,
            Err(chains::Error::Malformed { .. })
        ));
        assert!(source.final_height(10).await.is_err());
        assert_eq!(script.malformed_left(), 0);
        assert_eq!(source.final_height(10).await.expect("final"), Some(10));
        script.set_confirmations(3);
        assert_eq!(source.final_height(10).await.expect("final"), Some(8));
    }
}
