//! Deposits: the chain-independent half of every deposit watcher.
//!
//! A chain's [`DepositSource`](watcher::DepositSource) turns node blocks
//! into [`ObservedBlock`]s; the [`Watcher`](watcher::Watcher) drives it,
//! keeps the watched set read from the database, and hands each batch to
//! the [`DepositStore`] (the write model, `store`), which commits it as ONE
//! transaction (block hashes, deposit rows, their ledger entries and the
//! cursor), credits deposits once their block is final, and unwinds
//! deposits above a reorg's common ancestor with reversal entries. Each
//! entry's reference names its deposit and transition
//! (`deposit:<id>:credit`) and references are unique, so replaying any step
//! cannot post twice. Clients read deposits through [`views`] (the read
//! model, `view`), never through the store.

pub mod bitcoin;
pub mod ethereum;
mod prefetch;
#[cfg(feature = "devnet")]
pub mod scripted;
pub mod solana;
mod source;
mod store;
mod view;
mod walk_back;
mod watched;
pub mod watcher;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use store::utxos::{CustodyTotals, custody_totals};
pub use store::{Applied, DepositStore, Unwound};
pub use view::{DepositView, views};
pub use watched::{IssuedAddress, IssuedSince, WatchedAddresses};

use crate::ledger::Amount;
use crate::{Error, Result};

/// A block reduced to what the store needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedBlock {
    /// Block height (Solana: slot).
    pub height: u64,
    pub hash: String,
    pub parent_hash: String,
    pub time: Option<DateTime<Utc>>,
    pub deposits: Vec<ObservedDeposit>,
    /// Bitcoin only: what the block did to the custody UTXO set.
    pub utxos: UtxoChanges,
}

/// A block's changes to the Bitcoin custody UTXO set: outputs paying
/// Coffer's scripts, and inputs that may spend recorded ones (the store
/// keeps those that do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UtxoChanges {
    pub created: Vec<CustodyOutput>,
    pub spent: Vec<SpentOutput>,
}

impl UtxoChanges {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.spent.is_empty()
    }
}

/// An output paying one of Coffer's Bitcoin scripts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustodyOutput {
    pub tx_id: String,
    pub vout: u32,
    pub value_sat: u64,
    pub address: String,
    pub keychain: signer::bitcoin::Keychain,
    /// Its derivation index on `keychain`.
    pub index: u32,
    /// Credited to a user as a deposit (false: change, or an output of
    /// Coffer's own transaction).
    pub deposit: bool,
}

/// An input signed by one of Coffer's keys: `tx_id:vout` spent by input
/// `vin` of `spent_by`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpentOutput {
    pub tx_id: String,
    pub vout: u32,
    pub spent_by: String,
    pub vin: u32,
}

/// Value that arrived at a watched address in an [`ObservedBlock`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedDeposit {
    pub tx_id: String,
    /// Output, log or instruction index; -1 for a transaction's own value.
    pub position: i64,
    pub address: String,
    pub user_id: Uuid,
    pub asset: String,
    pub amount: Amount,
}

/// Where a watcher stands: the last block it indexed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub height: u64,
    pub hash: String,
}

impl Cursor {
    /// From a `(height, block_hash)` row.
    fn from_row((height, hash): (i64, String)) -> Result<Self> {
        Ok(Self {
            height: to_u64(height)?,
            hash,
        })
    }
}

fn to_i64(height: u64) -> Result<i64> {
    i64::try_from(height).map_err(|_| Error::Corrupt(format!("height {height} out of range")))
}

fn to_u64(height: i64) -> Result<u64> {
    u64::try_from(height).map_err(|_| Error::Corrupt(format!("stored height {height}")))
}
