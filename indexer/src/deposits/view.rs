//! The read model: deposits as clients see them (the gRPC history), read
//! straight from the tables the [`DepositStore`](super::DepositStore)
//! writes. Nothing here writes; a query a screen needs belongs here, not in
//! the store.

use std::collections::HashMap;

use chains::Chain;
use sqlx::PgPool;

use super::to_u64;
use crate::Result;

/// A deposit as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositView {
    pub id: i64,
    pub chain: Chain,
    pub tx_id: String,
    pub position: i64,
    pub block_height: u64,
    pub block_hash: String,
    /// `pending`, `credited` or `orphaned`.
    pub status: String,
    /// Blocks from the deposit's block to the watcher's indexed tip,
    /// counting both; 0 once orphaned.
    pub confirmations: u64,
}

/// The deposits with these ids, by id; unknown ids are left out.
pub async fn views(pool: &PgPool, ids: &[i64]) -> Result<HashMap<i64, DepositView>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    type Row = (i64, String, String, i64, i64, String, String, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT d.id, d.chain, d.tx_id, d.position, d.block_height, d.block_hash, d.status::text, c.height
         FROM deposits d LEFT JOIN chain_cursors c ON c.chain = d.chain WHERE d.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(
            |(id, chain, tx_id, position, block_height, block_hash, status, tip)| {
                let confirmations = match (status.as_str(), tip) {
                    ("orphaned", _) | (_, None) => 0,
                    (_, Some(tip)) => u64::try_from(tip - block_height + 1).unwrap_or(0),
                };
                Ok((
                    id,
                    DepositView {
                        id,
                        chain: chain.parse()?,
                        tx_id,
                        position,
                        block_height: to_u64(block_height)?,
                        block_hash,
                        status,
                        confirmations,
                    },
                ))
            },
        )
        .collect()
}
