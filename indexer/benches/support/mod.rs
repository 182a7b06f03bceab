//! What the catch-up benchmarks share: settings from the environment, the
//! runtime they run on, and watched deposit addresses issued the way the
//! API issues them.

use std::sync::Arc;

use chains::Chain;
use indexer::devnet::TestDb;
use signer::DepositKeys;

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

/// The devnet seed's deposit keys.
#[allow(dead_code)]
pub fn deposit_keys() -> Arc<DepositKeys> {
    indexer::devnet::deposits::deposit_keys()
}

/// `count` users with one `chain` deposit address each, as text, issued
/// from HD index 0 in order.
#[allow(dead_code)]
pub async fn watched_addresses(db: &TestDb, chain: Chain, count: usize) -> Vec<String> {
    indexer::devnet::deposits::users_with_addresses(db.pool(), chain, count)
        .await
        .into_iter()
        .map(|(_, address)| address)
        .collect()
}
