//! The latest head each chain's watcher observed, in `chain_heads`, for
//! operators and for anything that needs the tip without asking the node.

use chains::ChainHead;
use sqlx::PgPool;

use crate::Result;

/// Upserts the latest head observed for `chain`.
pub async fn record_head(pool: &PgPool, chain: chains::Chain, head: &ChainHead) -> Result<()> {
    let height = i64::try_from(head.height).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO chain_heads (chain, height, block_hash, observed_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (chain) DO UPDATE
         SET height = EXCLUDED.height, block_hash = EXCLUDED.block_hash, observed_at = EXCLUDED.observed_at",
    )
    .bind(chain.as_str())
    .bind(height)
    .bind(head.hash.as_deref())
    .execute(pool)
    .await?;
    Ok(())
}

/// The head last recorded for `chain`, if any.
pub async fn recorded_head(pool: &PgPool, chain: chains::Chain) -> Result<Option<ChainHead>> {
    let row: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT height, block_hash FROM chain_heads WHERE chain = $1")
            .bind(chain.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(height, hash)| ChainHead {
        height: u64::try_from(height).unwrap_or(0),
        hash,
    }))
}
