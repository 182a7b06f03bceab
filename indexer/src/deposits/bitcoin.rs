//! Bitcoin deposits: outputs paying a watched P2WPKH script, pending at one
//! confirmation, available at the configured depth.
//!
//! The watched set is watch-only: issued addresses come from
//! `deposit_addresses` (the watcher reads them), and the next `gap_limit` addresses past the last
//! issued one are derived here from the BIP84 account xpub, so a deposit to
//! an address handed out while a fetch was in flight is still matched. A
//! match on a derived address nobody has been issued is logged at error
//! level and counted (`coffer_deposits_unassigned_total`), never credited.
//!
//! Each block also yields its changes to the custody UTXO set
//! ([`UtxoChanges`]): every output paying an issued deposit address or a
//! change address (BIP84's internal chain, derived to `gap_limit` past the
//! last change index used), and every input whose witness key is one of
//! those scripts' keys. A transaction with such an input is Coffer's own:
//! its outputs to Coffer's scripts are custody, never deposits. The store
//! keeps the inputs that spend a recorded output and ignores the rest.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use bitcoin::bip32::Xpub;
use bitcoin::hashes::{Hash, hash160};
use bitcoin::{Address, Block, BlockHash, Network, Transaction};
use chains::Chain;
use chains::bitcoin::BitcoinClient;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::watcher::{DepositSource, WatchConfig, WatchedSet, Watcher, final_at_depth};
use super::{
    CustodyOutput, DepositStore, IssuedSince, ObservedBlock, ObservedDeposit, SpentOutput,
    UtxoChanges,
};
use crate::ledger::Amount;
use crate::metrics::{DEPOSITS_OWN_TRANSFERS_SKIPPED, DEPOSITS_UNASSIGNED};
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
            change_derived_to: 0,
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
/// The owner slot of a change address (BIP84's internal chain).
const CHANGE: u32 = u32::MAX - 1;

/// Whose a watched script is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptOwner {
    /// An issued deposit address.
    User(Uuid),
    /// A deposit address derived ahead of issuance, handed to nobody yet.
    Unissued,
    /// A change address: Coffer's own.
    Change,
}

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

    /// Adds the change address at internal-chain `index`.
    pub fn insert_change(&mut self, address: &Address, index: u32) -> bool {
        let Some(program) = p2wpkh_program(address.script_pubkey().as_bytes()) else {
            return false;
        };
        self.programs.insert(program, (index, CHANGE));
        true
    }

    /// The derivation index and owner of an output script.
    pub fn lookup(&self, script: &[u8]) -> Option<(u32, ScriptOwner)> {
        self.lookup_program(&p2wpkh_program(script)?)
    }

    fn lookup_program(&self, program: &[u8; 20]) -> Option<(u32, ScriptOwner)> {
        let (index, slot) = *self.programs.get(program)?;
        let owner = match slot {
            UNISSUED => ScriptOwner::Unissued,
            CHANGE => ScriptOwner::Change,
            slot => self
                .owners
                .get(slot as usize)
                .map_or(ScriptOwner::Unissued, |owner| ScriptOwner::User(*owner)),
        };
        Some((index, owner))
    }

    /// Whether `input`'s witness is a P2WPKH spend by the key of a watched
    /// script (issued, derived ahead or change): a DER signature with its
    /// sighash byte, then a compressed key whose hash is watched. (A P2WSH
    /// witness whose script happened to be those 33 bytes would pass too;
    /// it can spend no custody output, so the store records nothing.)
    fn signed_by_watched_key(&self, witness: &bitcoin::Witness) -> bool {
        if witness.len() != 2 {
            return false;
        }
        let (Some(signature), Some(key)) = (witness.nth(0), witness.nth(1)) else {
            return false;
        };
        signature.first() == Some(&0x30)
            && (9..=73).contains(&signature.len())
            && key.len() == 33
            && matches!(key.first(), Some(0x02 | 0x03))
            && self
                .programs
                .contains_key(&hash160::Hash::hash(key).to_byte_array())
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
    /// Internal-chain (change) indexes below this are watched.
    change_derived_to: u32,
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
        let change_to = issued.next_change_index.saturating_add(source.gap_limit);
        for index in source.change_derived_to..change_to {
            let address =
                signer::bitcoin::p2wpkh_address(&source.account, source.network, true, index)
                    .map_err(|e| Error::Corrupt(format!("derive bitcoin change {index}: {e}")))?;
            self.insert_change(&address, index);
        }
        source.change_derived_to = source.change_derived_to.max(change_to);
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

/// The deposits in one block and its changes to the custody UTXO set.
/// Coinbase outputs are skipped: they cannot be spent for 100 blocks, and
/// no customer pays through a coinbase. Zero-value outputs are no custody:
/// nothing can spend them economically (as deposits the store refuses
/// them).
pub fn observe(
    height: u64,
    hash: &BlockHash,
    block: &Block,
    watched: &WatchedScripts,
    network: Network,
) -> ObservedBlock {
    let mut deposits = Vec::new();
    let mut utxos = UtxoChanges::default();
    for tx in block.txdata.iter().filter(|tx| !tx.is_coinbase()) {
        let mut txid = None;
        let own = tx
            .input
            .iter()
            .any(|input| watched.signed_by_watched_key(&input.witness));
        if own {
            let spender = *txid.get_or_insert_with(|| tx.compute_txid());
            utxos
                .spent
                .extend(own_spends(tx, &spender.to_string(), watched));
        }
        for (vout, output) in tx.output.iter().enumerate() {
            let Some((index, owner)) = watched.lookup(output.script_pubkey.as_bytes()) else {
                continue;
            };
            let txid = *txid.get_or_insert_with(|| tx.compute_txid());
            let address = Address::from_script(&output.script_pubkey, network)
                .map(|a| a.to_string())
                .unwrap_or_default();
            let value = output.value.to_sat();
            let keychain = match owner {
                ScriptOwner::Change => signer::bitcoin::Keychain::Internal,
                _ => signer::bitcoin::Keychain::External,
            };
            let user_id = match owner {
                ScriptOwner::User(user_id) => Some(user_id),
                ScriptOwner::Change => None,
                ScriptOwner::Unissued => {
                    metrics::counter!(DEPOSITS_UNASSIGNED, "chain" => CHAIN.as_str()).increment(1);
                    tracing::error!(
                        chain = %CHAIN, %txid, vout, index, %address, height, own,
                        "payment to a derived deposit address that was never issued; not credited"
                    );
                    continue;
                }
            };
            if owner == ScriptOwner::Change && !own {
                tracing::warn!(
                    chain = %CHAIN, %txid, vout, index, %address, height, value,
                    "an outside payment to a change address; kept in custody, credited to nobody"
                );
            }
            let deposit = match user_id {
                Some(user_id) if !own => {
                    deposits.push(ObservedDeposit {
                        tx_id: txid.to_string(),
                        position: vout as i64,
                        address: address.clone(),
                        user_id,
                        asset: "BTC".into(),
                        amount: Amount::from_u64(value),
                    });
                    true
                }
                Some(_) => {
                    metrics::counter!(DEPOSITS_OWN_TRANSFERS_SKIPPED, "chain" => CHAIN.as_str())
                        .increment(1);
                    false
                }
                None => false,
            };
            if value > 0 {
                utxos.created.push(CustodyOutput {
                    tx_id: txid.to_string(),
                    vout: vout as u32,
                    value_sat: value,
                    address,
                    keychain,
                    index,
                    deposit,
                });
            }
        }
    }
    ObservedBlock {
        height,
        hash: hash.to_string(),
        parent_hash: block.header.prev_blockhash.to_string(),
        time: DateTime::<Utc>::from_timestamp(i64::from(block.header.time), 0),
        deposits,
        utxos,
    }
}

/// The inputs of `tx` signed by a watched key: the spends of custody
/// outputs it may make.
fn own_spends<'a>(
    tx: &'a Transaction,
    spender: &'a str,
    watched: &'a WatchedScripts,
) -> impl Iterator<Item = SpentOutput> + 'a {
    tx.input
        .iter()
        .enumerate()
        .filter(|(_, input)| watched.signed_by_watched_key(&input.witness))
        .map(move |(vin, input)| SpentOutput {
            tx_id: input.previous_output.txid.to_string(),
            vout: input.previous_output.vout,
            spent_by: spender.to_owned(),
            vin: vin as u32,
        })
}

#[cfg(test)]
mod tests {
    use bitcoin::absolute::LockTime;
    use bitcoin::block::{Header, Version as BlockVersion};
    use bitcoin::transaction::Version;
    use bitcoin::{
        Amount as Sats, CompactTarget, OutPoint, ScriptBuf, Sequence, TxIn, TxMerkleNode, TxOut,
        Txid, Witness,
    };
    use signer::bitcoin::{CustodyInput, Keychain, MAX_REPLACEABLE_SEQUENCE};
    use signer::{DepositKeys, HdSeed, INSECURE_DEVNET_MNEMONIC, SeedPhrase};

    use super::*;

    const NET: Network = Network::Regtest;

    fn keys() -> DepositKeys {
        let seed = HdSeed::from_phrase(&SeedPhrase::from_words(INSECURE_DEVNET_MNEMONIC), "")
            .expect("seed");
        DepositKeys::new(seed, NET).expect("keys")
    }

    fn script(keys: &DepositKeys, change: bool, index: u32) -> ScriptBuf {
        signer::bitcoin::p2wpkh_address(&keys.bitcoin_account_xpub(), NET, change, index)
            .expect("address")
            .script_pubkey()
    }

    fn outside_input(n: u8) -> TxIn {
        TxIn {
            previous_output: OutPoint {
                txid: Txid::from_byte_array([n; 32]),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            // An outside wallet's P2WPKH spend: a signature-shaped item and
            // a key no watched script hashes to.
            witness: Witness::from_slice(&[vec![0x30; 71], vec![0x02; 33]]),
        }
    }

    fn tx(input: Vec<TxIn>, output: Vec<(ScriptBuf, u64)>) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input,
            output: output
                .into_iter()
                .map(|(script_pubkey, sat)| TxOut {
                    value: Sats::from_sat(sat),
                    script_pubkey,
                })
                .collect(),
        }
    }

    fn block(txdata: Vec<Transaction>) -> Block {
        Block {
            header: Header {
                version: BlockVersion::TWO,
                prev_blockhash: BlockHash::all_zeros(),
                merkle_root: TxMerkleNode::all_zeros(),
                time: 1_700_000_000,
                bits: CompactTarget::from_consensus(0x207f_ffff),
                nonce: 0,
            },
            txdata,
        }
    }

    #[test]
    fn own_spends_change_and_deposits_are_told_apart() {
        let keys = keys();
        let alice = Uuid::from_u128(1);
        let mut watched = WatchedScripts::default();
        let issued = |index| Address::from_script(&script(&keys, false, index), NET).expect("a");
        watched.insert(&issued(0), 0, Some(alice));
        watched.insert(&issued(1), 1, None);
        for index in 0..3 {
            let change = Address::from_script(&script(&keys, true, index), NET).expect("a");
            watched.insert_change(&change, index);
        }
        let coinbase = Transaction {
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                ..outside_input(0)
            }],
            ..tx(vec![], vec![(script(&keys, false, 0), 5_000_000_000)])
        };
        // An outside payment: to alice, to a change address, a zero-value
        // output to alice, and to an address derived but never issued.
        let outside = tx(
            vec![outside_input(7)],
            vec![
                (script(&keys, false, 0), 40_000),
                (script(&keys, true, 2), 5_000),
                (script(&keys, false, 0), 0),
                (script(&keys, false, 1), 9_000),
                (ScriptBuf::new_op_return([1u8; 4]), 0),
            ],
        );
        // Coffer's own spend of alice's earlier coin, signed by the signer,
        // paying alice's address again and change.
        let unsigned = tx(
            vec![TxIn {
                sequence: MAX_REPLACEABLE_SEQUENCE,
                witness: Witness::new(),
                ..outside_input(9)
            }],
            vec![
                (script(&keys, false, 0), 30_000),
                (script(&keys, true, 0), 60_000),
            ],
        );
        let own = keys
            .sign_bitcoin(
                unsigned,
                &[CustodyInput {
                    keychain: Keychain::External,
                    index: 0,
                    value: Sats::from_sat(100_000),
                }],
            )
            .expect("sign")
            .tx;
        let block = block(vec![coinbase, outside.clone(), own.clone()]);
        let observed = observe(7, &block.block_hash(), &block, &watched, NET);

        let (outside_id, own_id) = (
            outside.compute_txid().to_string(),
            own.compute_txid().to_string(),
        );
        let deposits: Vec<(String, i64)> = observed
            .deposits
            .iter()
            .map(|d| (d.tx_id.clone(), d.position))
            .collect();
        assert_eq!(
            deposits,
            vec![(outside_id.clone(), 0), (outside_id.clone(), 2)],
            "alice's payments from outside (the zero one for the store to refuse), never Coffer's own"
        );
        let created: Vec<(String, u32, u64, Keychain, bool)> = observed
            .utxos
            .created
            .iter()
            .map(|o| (o.tx_id.clone(), o.vout, o.value_sat, o.keychain, o.deposit))
            .collect();
        assert_eq!(
            created,
            vec![
                (outside_id.clone(), 0, 40_000, Keychain::External, true),
                (outside_id, 1, 5_000, Keychain::Internal, false),
                (own_id.clone(), 0, 30_000, Keychain::External, false),
                (own_id.clone(), 1, 60_000, Keychain::Internal, false),
            ],
            "no zero-value, never-issued or coinbase output is custody"
        );
        assert_eq!(
            observed.utxos.spent,
            vec![SpentOutput {
                tx_id: Txid::from_byte_array([9; 32]).to_string(),
                vout: 0,
                spent_by: own_id,
                vin: 0,
            }],
            "only the input a Coffer key signed"
        );
    }
}
