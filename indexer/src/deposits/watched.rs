//! New entries of one chain's watched set, read by derivation index. Issuance takes the chain's counter row lock until it commits, so
//! addresses become visible in index order: reading every index at or above
//! the next one expected never skips an address.

use chains::Chain;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Result;

/// Tracks how far a watcher has read the issued addresses; the watcher
/// keeps the set itself in whatever form it matches fastest.
#[derive(Debug)]
pub struct WatchedAddresses {
    chain: Chain,
    next_index: i64,
}

impl WatchedAddresses {
    pub fn new(chain: Chain) -> Self {
        Self {
            chain,
            next_index: 0,
        }
    }

    /// Loads addresses issued since the last refresh and returns them as
    /// (address, owner, derivation index).
    pub async fn refresh(&mut self, pool: &PgPool) -> Result<Vec<(String, Uuid, u32)>> {
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
        let mut added = Vec::with_capacity(rows.len());
        for (address, user, index) in rows {
            self.next_index = self.next_index.max(index + 1);
            // Issuance keeps indexes below 2^31 (hardened space starts there).
            added.push((address, user, u32::try_from(index).unwrap_or(u32::MAX)));
        }
        Ok(added)
    }

    /// The next derivation index expected: one past the highest issued.
    pub fn next_index(&self) -> u32 {
        u32::try_from(self.next_index).unwrap_or(u32::MAX)
    }
}
