//! A Solana block seen at `confirmed` that never becomes final, on real
//! validators. One validator's ledger is copied; the validator then confirms
//! a deposit and is killed before finalizing it. A validator resumed from
//! the copy forks before that block, as the cluster does when it abandons a
//! fork.
//!
//! Also the watch loop's cases that need a fork (`indexer::devnet::cases`,
//! on [`ForkingValidator`]): reorgs ending as indexing from scratch, and one
//! too deep that halts.
//!
//! Its own test binary: it runs validators of its own, one after the other
//! (each test holds `VALIDATORS`), and each keeps about a core busy, so it
//! must not overlap the validator that the `it` binary's Solana tests share.

use std::time::Duration;

use chains::Chain;
use chains::devnet::SolanaValidator;
use chains::devnet::solana_tx::{Keypair, system_transfer};
use chains::solana::SolanaClient;
use indexer::deposits::DepositStore;
use indexer::deposits::solana::{SolanaWatchConfig, SolanaWatcher};
use indexer::devnet::TestDb;
use indexer::devnet::deposits::*;
use indexer::devnet::solana::{ForkingValidator, VALIDATORS};
use indexer::ledger::Ledger;
use indexer::suite;
use solana_commitment_config::CommitmentConfig;
use solana_pubkey::Pubkey;

const SOL: Chain = Chain::Solana;
const LAMPORTS: u64 = 1_000_000_000;

fn watcher(client: &SolanaClient, db: &TestDb, start_slot: u64) -> SolanaWatcher {
    let mut config = SolanaWatchConfig::default();
    config.watch.start_height = Some(start_slot);
    config.watch.batch_blocks = 8;
    config.watch.fetch_concurrency = 2;
    config.watch.poll_interval = Duration::from_millis(100);
    let store = DepositStore::new(
        Ledger::new(db.pool().clone()),
        SOL,
        config.watch.max_reorg_depth,
    );
    SolanaWatcher::new(client.clone(), store, config)
}

async fn slot(client: &SolanaClient, commitment: CommitmentConfig) -> u64 {
    client.slot(commitment).await.expect("slot")
}

/// (status, slot, block hash) of every deposit, oldest first.
async fn deposits(db: &TestDb) -> Vec<(String, i64, String)> {
    sqlx::query_as(
        "SELECT status::text, block_height, block_hash FROM deposits WHERE chain = 'solana' ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .expect("deposits")
}

/// (available, pending) of `address` in SOL.
async fn sol_balance(db: &TestDb, address: &str) -> (String, String) {
    address_balance(db.pool(), SOL, address, "SOL").await
}

#[tokio::test]
async fn a_deposit_in_a_confirmed_block_that_never_becomes_final_is_removed() {
    init_logs();
    let _one_at_a_time = VALIDATORS.lock().await;
    let first = SolanaValidator::spawn()
        .await
        .expect("solana-test-validator");
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses(db.pool(), SOL, 1).await;
    let address = users[0].1.clone();
    let alice: Pubkey = address.parse().expect("pubkey");
    let payer = Keypair::from_seed([0x71; 32]);
    first
        .airdrop(&payer.pubkey(), 10 * LAMPORTS)
        .await
        .expect("airdrop");
    let start = slot(first.client(), CommitmentConfig::confirmed()).await + 1;
    let running = Running::spawn(watcher(first.client(), &db, start));

    // Both chains share every block up to the copy; the payer's airdrop is
    // among them.
    let copy = first.copy_ledger().await.expect("copy the ledger");
    let fork_point = copy.confirmed_slot;
    let (_, ok) = first
        .send(
            &[system_transfer(&payer.pubkey(), &alice, 2 * LAMPORTS)],
            &[&payer],
        )
        .await
        .expect("deposit");
    assert!(ok);
    eventually("the deposit pending", Duration::from_secs(30), || async {
        sol_balance(&db, &address).await == ("0".into(), "2000000000".into())
    })
    .await;
    running.stop().await;
    let finalized = slot(first.client(), CommitmentConfig::finalized()).await;
    drop(first);
    let seen = deposits(&db).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (_, deposit_slot, deposit_block) = seen[0].clone();
    let deposit_slot = u64::try_from(deposit_slot).expect("slot");
    assert!(
        finalized <= fork_point && fork_point < deposit_slot,
        "the killed node had finalized slot {finalized}, the fork point is {fork_point} \
         and the deposit is in slot {deposit_slot}: the deposit's block must be the only \
         thing the node confirmed past the fork point and never finalized"
    );

    let second = SolanaValidator::resume(copy)
        .await
        .expect("resume the copied ledger");
    let running = Running::spawn(watcher(second.client(), &db, start));
    eventually("the deposit's removal", Duration::from_secs(60), || async {
        deposits(&db).await.first().map(|d| d.0.clone()) == Some("orphaned".into())
    })
    .await;
    assert_eq!(
        sol_balance(&db, &address).await,
        ("0".into(), "0".into()),
        "nothing pending or available once the block is gone"
    );
    // The resumed node's final chain passes the deposit's slot without its block.
    eventually(
        "the resumed node to finalize past the deposit's slot",
        Duration::from_secs(90),
        || async { slot(second.client(), CommitmentConfig::finalized()).await > deposit_slot },
    )
    .await;
    let final_block = second
        .client()
        .block_hashes(&[deposit_slot], CommitmentConfig::finalized())
        .await
        .expect("final block");
    assert_ne!(final_block, vec![Some(deposit_block)]);

    // The watcher carries on along the new chain: a deposit there is credited.
    let (_, ok) = second
        .send(
            &[system_transfer(&payer.pubkey(), &alice, LAMPORTS)],
            &[&payer],
        )
        .await
        .expect("deposit on the new chain");
    assert!(ok);
    eventually(
        "the new chain's deposit credited",
        Duration::from_secs(90),
        || async { sol_balance(&db, &address).await == ("1000000000".into(), "0".into()) },
    )
    .await;
    running.stop().await;
    let statuses: Vec<String> = deposits(&db).await.into_iter().map(|d| d.0).collect();
    assert_eq!(statuses, ["orphaned", "credited"]);
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}

// The watch loop's cases that need a fork, on validators that fork.
suite!(ForkingValidator =>
    reorgs_of_every_depth_match_indexing_from_scratch,
    a_reorg_deeper_than_the_limit_halts_the_watcher,
);
