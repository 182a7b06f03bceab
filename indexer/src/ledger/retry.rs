//! Retrying what PostgreSQL aborted: a serialization failure or a deadlock
//! means the transaction did nothing and may simply run again, never that
//! the request was wrong.

use std::time::Duration;

use sqlx::{Postgres, Transaction};

use super::Ledger;
use super::validation::map_db_error;
use crate::Result;

/// Attempts per operation, and rounds per account resolution.
pub(super) const MAX_ATTEMPTS: u32 = 8;

/// Runs `attempt` again while it fails with a transient error, backing off a
/// little longer each time.
pub(crate) async fn retry_transient<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(err) if err.is_transient() && tries < MAX_ATTEMPTS => {
                tracing::debug!(error = %err, tries, "retrying ledger transaction");
                tokio::time::sleep(Duration::from_millis(u64::from(tries) * 5)).await;
            }
            other => return other,
        }
    }
}

/// A transaction a body owns while it runs and hands back to be committed:
/// owned rather than borrowed, so the body's future has no higher-ranked
/// lifetime and stays provably `Send`.
pub(crate) type Tx = Transaction<'static, Postgres>;

impl Ledger {
    /// Runs `body` in a transaction and commits the transaction it returns,
    /// all again on a transient failure. A commit that fails a deferred
    /// ledger check maps to the error callers act on.
    pub(crate) async fn transaction<T, F, Fut>(&self, body: F) -> Result<T>
    where
        F: Fn(Tx) -> Fut,
        Fut: Future<Output = Result<(Tx, T)>>,
    {
        retry_transient(|| async {
            let tx = self.pool.begin().await?;
            let (tx, done) = body(tx).await?;
            tx.commit().await.map_err(|e| map_db_error(e, None))?;
            Ok(done)
        })
        .await
    }
}
