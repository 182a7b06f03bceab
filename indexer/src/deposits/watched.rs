//! The watched set of one chain, kept in memory and refreshed by derivation
//! index. Issuance takes the chain's counter row lock until it commits, so
//! addresses become visible in index order: reading every index at or above
//! the next one expected never skips an address.

use std::collections::HashMap;

use chains::Chain;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Result;

#[derive(Debug)]
pub struct WatchedAddresses {
    chain: Chain,
    next_index: i64,
    owners: HashMap<String, Uuid>,
}

impl WatchedAddresses {
    pub fn new(chain: Chain) -> Self {
        Self {
            chain,
            next_index: 0,
            owners: HashMap::new(),
        }
    }

    /// Loads addresses issued since the last refresh and returns them.
    pub async fn refresh(&mut self, pool: &PgPool) -> Result<Vec<(String, Uuid)>> {
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
            self.owners.insert(address.clone(), user);
            added.push((address, user));
        }
        Ok(added)
    }

    pub fn owner(&self, address: &str) -> Option<Uuid> {
        self.owners.get(address).copied()
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}
