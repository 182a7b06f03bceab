//! The watched set as the database holds it: the engine's side of address
//! matching. The [`Watcher`](super::watcher::Watcher) reads new entries
//! here once per step and hands them to its source, which keeps the set in
//! whatever form it matches fastest; sources read nodes only.
//!
//! Entries are read by derivation index. Issuance takes the chain's counter
//! row lock until it commits, so addresses become visible in index order:
//! reading every index at or above the next one expected never skips an
//! address. Bitcoin change addresses are watched from index 0 to the gap
//! limit past the highest one the custody UTXO set holds.

use chains::Chain;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Result;
use crate::metrics::{ADDRESS_GAP, ADDRESS_GAP_EXCEEDED};

/// An address issued for deposits, with its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedAddress {
    pub address: String,
    pub user_id: Uuid,
    /// Its derivation index.
    pub index: u32,
}

/// What the engine hands a source: the addresses issued since the last
/// read, in derivation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuedSince {
    pub added: Vec<IssuedAddress>,
    /// One past the highest derivation index issued so far.
    pub next_index: u32,
    /// Bitcoin: one past the highest change (internal-chain) index in the
    /// custody UTXO set; 0 on other chains.
    pub next_change_index: u32,
}

impl IssuedSince {
    /// The added addresses with their owners, for sets keyed by address text.
    pub fn owners(&self) -> impl Iterator<Item = (String, Uuid)> + '_ {
        self.added.iter().map(|a| (a.address.clone(), a.user_id))
    }
}

/// Tracks how far a watcher has read the issued addresses.
#[derive(Debug)]
pub struct WatchedAddresses {
    chain: Chain,
    next_index: i64,
    next_change_index: u32,
    /// Whether a read has been handed out yet: the first one is, even empty,
    /// so a source can set up what it watches before any address exists.
    read: bool,
}

impl WatchedAddresses {
    pub fn new(chain: Chain) -> Self {
        Self {
            chain,
            next_index: 0,
            next_change_index: 0,
            read: false,
        }
    }

    /// Loads addresses issued since the last refresh. `None`: nothing new
    /// since the last read that returned something (the first always does).
    pub async fn refresh(&mut self, pool: &PgPool) -> Result<Option<IssuedSince>> {
        let rows: Vec<(String, Uuid, i64)> = sqlx::query_as(
            "SELECT d.address, w.user_id, d.derivation_index
             FROM deposit_addresses d JOIN watched_addresses w ON w.chain = d.chain AND w.address = d.address
             WHERE d.chain = $1 AND d.derivation_index >= $2
             ORDER BY d.derivation_index",
        )
        .bind(self.chain.as_str())
        .bind(self.next_index)
        .fetch_all(pool)
        .await?;
        let next_change_index = if self.chain == Chain::Bitcoin {
            let next: Option<i64> = sqlx::query_scalar(
                "SELECT max(derivation_index) + 1 FROM bitcoin_utxos WHERE keychain = 'internal'",
            )
            .fetch_one(pool)
            .await?;
            next.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
        } else {
            0
        };
        if rows.is_empty() && self.read && next_change_index <= self.next_change_index {
            return Ok(None);
        }
        self.read = true;
        self.next_change_index = self.next_change_index.max(next_change_index);
        let mut added = Vec::with_capacity(rows.len());
        for (address, user_id, index) in rows {
            self.next_index = self.next_index.max(index + 1);
            added.push(IssuedAddress {
                address,
                user_id,
                // Issuance keeps indexes below 2^31 (hardened space starts there).
                index: u32::try_from(index).unwrap_or(u32::MAX),
            });
        }
        Ok(Some(IssuedSince {
            added,
            next_index: self.next_index(),
            next_change_index: self.next_change_index,
        }))
    }

    /// The next derivation index expected: one past the highest issued.
    pub fn next_index(&self) -> u32 {
        u32::try_from(self.next_index).unwrap_or(u32::MAX)
    }

    /// Sets the address-gap gauges: the run of issued addresses past the
    /// last one that received a deposit, against `gap_limit` (how far the
    /// chain's wallets scan past the last used address). Logged when over.
    pub async fn check_gap(&self, pool: &PgPool, gap_limit: u32) -> Result<()> {
        let chain = self.chain.as_str();
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT max(a.derivation_index) FROM deposit_addresses a
             WHERE a.chain = $1 AND EXISTS (
                 SELECT 1 FROM deposits d WHERE d.chain = $1 AND d.address = a.address AND d.status <> 'orphaned')",
        )
        .bind(chain)
        .fetch_one(pool)
        .await?;
        let highest_used = used.and_then(|u| u32::try_from(u).ok());
        let unused_run = self
            .next_index()
            .saturating_sub(highest_used.map_or(0, |u| u + 1));
        metrics::gauge!(ADDRESS_GAP, "chain" => chain).set(f64::from(unused_run));
        let exceeded = unused_run > gap_limit;
        metrics::gauge!(ADDRESS_GAP_EXCEEDED, "chain" => chain).set(if exceeded {
            1.0
        } else {
            0.0
        });
        if exceeded {
            tracing::warn!(
                chain,
                unused_run,
                gap_limit,
                "issued deposit addresses run past the gap limit without a deposit; \
                 wallets restored from the seed with this gap limit would not see later ones"
            );
        }
        Ok(())
    }
}
