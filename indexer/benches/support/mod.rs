//! What the catch-up benchmarks share: settings from the environment, the
//! runtime they run on, and watched deposit addresses issued the way the
//! API issues them.

use std::sync::Arc;

use chains::Chain;
use indexer::devnet::TestDb;
use indexer::wallets::Wallets;
use signer::{DepositKeys, HdSeed, INSECURE_DEVNET_MNEMONIC, SeedPhrase};
use uuid::Uuid;

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
pub fn deposit_keys() -> DepositKeys {
    let seed =
        HdSeed::from_phrase(&SeedPhrase::from_words(INSECURE_DEVNET_MNEMONIC), "").expect("seed");
    DepositKeys::new(seed, signer::BitcoinNetwork::Regtest).expect("keys")
}

/// `count` users with one `chain` deposit address each, as text.
#[allow(dead_code)]
pub async fn watched_addresses(db: &TestDb, chain: Chain, count: usize) -> Vec<String> {
    let wallets = Wallets::new(db.pool().clone(), Arc::new(deposit_keys()));
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let user = Uuid::new_v4();
        sqlx::query("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'bench')")
            .bind(user)
            .bind(format!("bench{i}@example.com"))
            .execute(db.pool())
            .await
            .expect("user");
        let wallet = wallets.create(user, chain).await.expect("wallet");
        out.push(wallets.new_address(&wallet).await.expect("address").address);
    }
    out
}
