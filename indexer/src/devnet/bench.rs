//! What the benchmarks share: settings from the environment, the runtime
//! they run on, watched deposit addresses issued the way the API issues
//! them, the batches a reference fetches, and a watcher timed from its
//! start. Only setup and timing plumbing lives here; what each benchmark
//! measures stays in its own file.

use std::fmt::Debug;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chains::Chain;
use chains::devnet::{DevnetError, INSTALL_COMMAND};
use tokio::sync::watch;

use super::TestDb;
use super::deposits::Running;
use crate::deposits::watcher::{DepositSource, Watcher};

/// `name` from the environment as a number, or `default`.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Two worker threads, like the daemon on the machines it targets.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A fresh, migrated database on the devnet PostgreSQL.
pub async fn database() -> TestDb {
    TestDb::new()
        .await
        .expect("bench database (is the devnet PostgreSQL up?)")
}

/// The node a benchmark runs on, or a panic that says how to install it.
pub fn node<T>(name: &str, spawned: Result<T, DevnetError>) -> T {
    spawned.unwrap_or_else(|e| panic!("{name} (run {INSTALL_COMMAND}): {e:?}"))
}

/// How many deposits `db` holds where `condition` (SQL) holds.
pub async fn count_deposits(db: &TestDb, condition: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM deposits WHERE {condition}"))
        .fetch_one(db.pool())
        .await
        .expect("count")
}

/// `count` users with one `chain` deposit address each, issued from HD
/// index 0 in order, parsed as `A`.
pub async fn watched_addresses<A>(db: &TestDb, chain: Chain, count: usize) -> Vec<A>
where
    A: FromStr<Err: Debug>,
{
    super::deposits::users_with_addresses(db.pool(), chain, count)
        .await
        .iter()
        .map(|(_, address)| address.parse().expect("address"))
        .collect()
}

/// `first..=last` cut into batches of `batch` heights, the last one short.
pub fn batches(first: u64, last: u64, batch: u64) -> Vec<(u64, u64)> {
    (first..=last)
        .step_by(batch as usize)
        .map(|start| (start, (start + batch - 1).min(last)))
        .collect()
}

/// Heights per second for `first..=last` done in `elapsed`.
// Rates are measurements, not amounts of money.
#[allow(clippy::float_arithmetic)]
pub fn rate(first: u64, last: u64, elapsed: Duration) -> f64 {
    (last + 1 - first) as f64 / elapsed.as_secs_f64()
}

/// Heights per second for `first..=last` done by `work`, timed from its
/// first poll to its end.
pub async fn rate_of(first: u64, last: u64, work: impl Future) -> f64 {
    let started = Instant::now();
    work.await;
    rate(first, last, started.elapsed())
}

/// A watcher on its own task, timed from the moment it was spawned.
#[derive(Debug)]
pub struct TimedWatcher {
    progress: watch::Receiver<Option<u64>>,
    started: Instant,
    running: Running,
}

impl TimedWatcher {
    pub fn spawn<S: DepositSource>(watcher: Watcher<S>) -> Self {
        let progress = watcher.progress();
        let started = Instant::now();
        let running = Running::spawn(watcher);
        Self {
            progress,
            started,
            running,
        }
    }

    /// Waits for the watcher's first commit; the height it committed to.
    pub async fn first_batch(&mut self) -> Option<u64> {
        *self
            .progress
            .wait_for(Option::is_some)
            .await
            .expect("a first batch")
    }

    /// Waits until the watcher's cursor is at `last` or past it.
    pub async fn reach(&mut self, last: u64) {
        self.progress
            .wait_for(|height| height.is_some_and(|h| h >= last))
            .await
            .expect("watcher reaches the last bench block");
    }

    /// Time since the watcher was spawned.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until the cursor is at `last` or past it, then stops the
    /// watcher: the time from its spawn to `last`.
    pub async fn finish_at(mut self, last: u64) -> Duration {
        self.reach(last).await;
        let elapsed = self.elapsed();
        self.stop().await;
        elapsed
    }

    /// Cancels the watcher and waits for its task to end.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}
