//! Bitcoin deposits: outputs paying a watched P2WPKH script, pending at one
//! confirmation, available at the configured depth.
//!
//! The watched set is watch-only: issued addresses come from
//! `deposit_addresses` (the watcher reads them), and the next `gap_limit` addresses past the last
//! issued one are derived here from the BIP84 account xpub, so a deposit to
//! an address handed out while a fetch was in flight is still matched. A
//! match on a derived address nobody has been issued is logged at error
//! level and counted (`coffer_deposits_unassigned_total`), never credited.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use bitcoin::bip32::Xpub;
use bitcoin::{Address, Block, BlockHash, Network};
use chains::Chain;
use chains::bitcoin::BitcoinClient;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::watcher::{DepositSource, WatchConfig, WatchedSet, Watcher, final_at_depth};
use super::{DepositStore, IssuedSince, ObservedBlock, ObservedDeposit};
use crate::ledger::Amount;
use crate::metrics::DEPOSITS_UNASSIGNED;
use crate::{Error, Result};

const CHAIN: Chain = Chain::Bitcoin;

#[derive(Clone, Debug)]
pub struct BitcoinWatchConfig {
    pub watch: WatchConfig,
    /// Confirmations (the block itself counts as one) that make a deposit
    /// available.
    pub confirmations: u64,
    /// Addresses derived past the last issued one, and the longest run of
    /// issued addresses without a deposit before the alarm
    /// (`coffer_deposit_address_gap_exceeded`).
    pub gap_limit: u32,
}

/// The daemon's defaults too (`api::config` starts from these).
impl Default for BitcoinWatchConfig {
    fn default() -> Self {
        Self {
            watch: WatchConfig {
                max_reorg_depth: 24,
                fetch_concurrency: 2,
                ..WatchConfig::default()
            },
            confirmations: 6,
            gap_limit: 20,
        }
    }
}

/// The Bitcoin deposit watcher.
pub type BitcoinWatcher = Watcher<BitcoinSource>;

impl Watcher<BitcoinSource> {
    pub fn new(
        client: BitcoinClient,
        account: Xpub,
        network: Network,
        store: DepositStore,
        config: BitcoinWatchConfig,
    ) -> Self {
        let source = BitcoinSource {
            client,
            account,
            network,
            confirmations: config.confirmations,
            gap_limit: config.gap_limit,
            derived_to: 0,
        };
        Watcher::with_source(source, store, config.watch)
    }
}

/// Watched scripts, compact enough for millions: the 20-byte P2WPKH
/// program maps to its derivation index and its owner's slot in a table
/// of distinct owners (28 bytes of payload per script).
#[derive(Clone, Debug, Default)]
pub struct WatchedScripts {
    programs: HashMap<[u8; 20], (u32, u32)>,
    owners: Vec<Uuid>,
    owner_slots: HashMap<Uuid, u32>,
}

/// The owner slot of a derived address nobody has been issued.
const UNISSUED: u32 = u32::MAX;

impl WatchedScripts {
    /// Adds the P2WPKH `address` at derivation `index`, owned by `owner`
    /// once issued. Other script types are refused.
    pub fn insert(&mut self, address: &Address, index: u32, owner: Option<Uuid>) -> bool {
        let Some(program) = p2wpkh_program(address.script_pubkey().as_bytes()) else {
            return false;
        };
        self.insert_program(program, index, owner);
        true
    }

    /// Adds a P2WPKH witness program (the key hash) directly.
    pub fn insert_program(&mut self, program: [u8; 20], index: u32, owner: Option<Uuid>) {
        let slot = match owner {
            None => UNISSUED,
            Some(owner) => *self.owner_slots.entry(owner).or_insert_with(|| {
                self.owners.push(owner);
                u32::try_from(self.owners.len() - 1).unwrap_or(UNISSUED)
            }),
        };
        self.programs.insert(program, (index, slot));
    }

    /// The derivation index and owner (if issued) of an output script.
    pub fn lookup(&self, script: &[u8]) -> Option<(u32, Option<Uuid>)> {
        let (index, slot) = *self.programs.get(&p2wpkh_program(script)?)?;
        Some((index, self.owners.get(slot as usize).copied()))
    }

    pub fn len(&self) -> usize {
        self.programs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }
}

/// `OP_0 <20 bytes>`: the witness program of a P2WPKH output.
fn p2wpkh_program(script: &[u8]) -> Option<[u8; 20]> {
    match script {
        [0x00, 0x14, program @ ..] => program.try_into().ok(),
        _ => None,
    }
}

#[derive(Debug)]
pub struct BitcoinSource {
    client: BitcoinClient,
    account: Xpub,
    network: Network,
    confirmations: u64,
    gap_limit: u32,
    /// Indexes below this are derived into the watched set.
    derived_to: u32,
}

/// Issued addresses come from the database; only the lookahead past the
/// last issued one is derived here.
impl WatchedSet<BitcoinSource> for WatchedScripts {
    fn watch(&mut self, source: &mut BitcoinSource, issued: &IssuedSince) -> Result<()> {
        for added in &issued.added {
            let address = added
                .address
                .parse::<Address<_>>()
                .ok()
                .and_then(|a| a.require_network(source.network).ok());
            match address {
                Some(address) if self.insert(&address, added.index, Some(added.user_id)) => {}
                _ => {
                    tracing::error!(address = %added.address, "issued Bitcoin address is not P2WPKH on this network; not watched")
                }
            }
        }
        let issued_to = issued.next_index;
        let wanted_to = issued_to.saturating_add(source.gap_limit);
        for index in source.derived_to.max(issued_to)..wanted_to {
            let address =
                signer::bitcoin::p2wpkh_address(&source.account, source.network, false, index)
                    .map_err(|e| Error::Corrupt(format!("derive bitcoin address {index}: {e}")))?;
            self.insert(&address, index, None);
        }
        source.derived_to = source.derived_to.max(wanted_to);
        Ok(())
    }
}

impl DepositSource for BitcoinSource {
    type Node = BitcoinClient;
    type Watched = WatchedScripts;

    fn node(&self) -> &BitcoinClient {
        &self.client
    }

    async fn final_height(&self, tip: u64) -> chains::Result<Option<u64>> {
        Ok(final_at_depth(tip, self.confirmations))
    }

    async fn block_hashes(&self, heights: &[u64]) -> chains::Result<Vec<Option<String>>> {
        let tip = self.client.block_count().await?;
        let mut hashes = Vec::with_capacity(heights.len());
        for &height in heights {
            hashes.push(if height > tip {
                None
            } else {
                Some(self.client.block_hash(height).await?.to_string())
            });
        }
        Ok(hashes)
    }

    fn gap_limit(&self) -> Option<u32> {
        Some(self.gap_limit)
    }

    fn fetch(
        &self,
        range: RangeInclusive<u64>,
        watched: Arc<WatchedScripts>,
    ) -> impl Future<Output = Result<Vec<ObservedBlock>>> + Send + 'static {
        let client = self.client.clone();
        let network = self.network;
        async move {
            let first = *range.start();
            let blocks = client.blocks(range).await?;
            Ok(blocks
                .iter()
                .zip(first..)
                .map(|((hash, block), height)| observe(height, hash, block, &watched, network))
                .collect())
        }
    }
}

/// The deposits in one block. Coinbase outputs are skipped: they cannot be
/// spent for 100 blocks, and no customer pays through a coinbase.
pub fn observe(
    height: u64,
    hash: &BlockHash,
    block: &Block,
    watched: &WatchedScripts,
    network: Network,
) -> ObservedBlock {
    let mut deposits = Vec::new();
    for tx in block.txdata.iter().filter(|tx| !tx.is_coinbase()) {
        let mut txid = None;
        for (vout, output) in tx.output.iter().enumerate() {
            let Some((index, owner)) = watched.lookup(output.script_pubkey.as_bytes()) else {
                continue;
            };
            let txid = *txid.get_or_insert_with(|| tx.compute_txid());
            let address = Address::from_script(&output.script_pubkey, network)
                .map(|a| a.to_string())
                .unwrap_or_default();
            let Some(user_id) = owner else {
                metrics::counter!(DEPOSITS_UNASSIGNED, "chain" => CHAIN.as_str()).increment(1);
                tracing::error!(
                    chain = %CHAIN, %txid, vout, index, %address, height,
                    "payment to a derived deposit address that was never issued; not credited"
                );
                continue;
            };
            deposits.push(ObservedDeposit {
                tx_id: txid.to_string(),
                position: vout as i64,
                address,
                user_id,
                asset: "BTC".into(),
                amount: Amount::from_u64(output.value.to_sat()),
            });
        }
    }
    ObservedBlock {
        height,
        hash: hash.to_string(),
        parent_hash: block.header.prev_blockhash.to_string(),
        time: DateTime::<Utc>::from_timestamp(i64::from(block.header.time), 0),
        deposits,
    }
}
