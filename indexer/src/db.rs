//! Connecting to PostgreSQL and applying migrations.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::Result;

/// Every migration in the repository's `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Connects, retrying with exponential backoff (capped at 30 s) for as long
/// as the database refuses, logging each failure. Returns `None` if `cancel`
/// fires first.
pub async fn connect_with_retry(
    options: PgConnectOptions,
    settings: &PoolSettings,
    cancel: &CancellationToken,
) -> Option<PgPool> {
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    );
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    let pool_options = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout);
    let connect = || pool_options.clone().connect_with(options.clone());
    let attempt = connect.retry(backoff).notify(|err: &sqlx::Error, delay| {
        tracing::warn!(
            database = %target,
            error = %err,
            retry_in_ms = delay.as_millis() as u64,
            "PostgreSQL is not reachable yet; retrying"
        );
    });
    tokio::select! {
        pool = attempt => {
            let pool = pool.ok()?;
            tracing::info!(database = %target, "connected to PostgreSQL");
            Some(pool)
        }
        () = cancel.cancelled() => None,
    }
}

/// Applies every pending migration. Safe to run concurrently from several
/// processes: sqlx serializes them with an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
