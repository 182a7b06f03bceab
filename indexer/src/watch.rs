//! The watch loop of one chain. For now it follows the node's tip: it polls
//! the head, exports it as a metric and records it in `chain_heads`. Deposit
//! matching and reorg handling build on this loop.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chains::{ChainHead, HeadSource};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::metrics::{CHAIN_RPC_ERRORS, CHAIN_TIP_HEIGHT, CHAIN_UP};

/// Follows one chain's tip until cancelled.
#[derive(Debug)]
pub struct TipFollower<C> {
    client: C,
    pool: PgPool,
    poll_interval: Duration,
}

impl<C: HeadSource> TipFollower<C> {
    pub fn new(client: C, pool: PgPool, poll_interval: Duration) -> Self {
        Self {
            client,
            pool,
            poll_interval,
        }
    }

    /// Runs until `cancel` fires. Node failures are logged, counted and
    /// retried with backoff; they never end the loop.
    pub async fn run(self, cancel: CancellationToken) {
        let chain = self.client.chain();
        let labels = [("chain", chain.as_str())];
        let retry_backoff = || {
            ExponentialBuilder::default()
                .with_min_delay(self.poll_interval)
                .with_max_delay(Duration::from_secs(30))
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut backoff = retry_backoff();
        let mut last: Option<ChainHead> = None;
        tracing::info!(%chain, "watcher started");
        loop {
            let delay = match self.client.head().await {
                Ok(head) => {
                    metrics::gauge!(CHAIN_UP, &labels).set(1.0);
                    metrics::gauge!(CHAIN_TIP_HEIGHT, &labels).set(head.height as f64);
                    if last.as_ref() != Some(&head) {
                        match record_head(&self.pool, chain, &head).await {
                            Ok(()) => {
                                tracing::debug!(%chain, height = head.height, "new tip");
                                last = Some(head);
                            }
                            Err(err) => {
                                tracing::warn!(%chain, error = %err, "could not record the chain head")
                            }
                        }
                    }
                    backoff = retry_backoff();
                    self.poll_interval
                }
                Err(err) => {
                    metrics::gauge!(CHAIN_UP, &labels).set(0.0);
                    metrics::counter!(CHAIN_RPC_ERRORS, "chain" => chain.as_str(), "kind" => err.kind()).increment(1);
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(%chain, error = %err, retry_in_ms = delay.as_millis() as u64, "chain node call failed");
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => break,
            }
        }
        tracing::info!(%chain, "watcher stopped");
    }
}

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
