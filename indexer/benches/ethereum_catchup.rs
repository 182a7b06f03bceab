//! Ethereum catch-up: the deposit watcher against a bare client making the
//! same RPC calls, in one run on the same anvil
//! (`cargo bench -p indexer --bench ethereum_catchup`).
//!
//! Pre-mines `COFFER_BENCH_BLOCKS` blocks (default 300), each holding
//! `COFFER_BENCH_TRANSFERS` ETH transfers (default 40) plus one token
//! transaction paying 10 recipients. Every `COFFER_BENCH_WATCHED_EVERY`-th
//! recipient (default 4) is a watched deposit address, the others are not,
//! as on a real chain where most transfers are someone else's; set it to 1
//! for the worst case where every transfer is a deposit. Then it measures
//!
//! (a) the reference: the same batched requests the watcher sends
//!     (`eth_getBlockByNumber` with transactions for each block plus one
//!     `eth_getLogs` per batch, then `eth_getBlockReceipts` per block), at
//!     the same batch size and concurrency, responses read and discarded;
//! (b) the watcher indexing the same blocks into a fresh database, every
//!     deposit credited (the blocks are final), until its cursor passes the
//!     last of them;
//!
//! and prints both rates in blocks/s and the ratio b/a.

// Rates and ratios are measurements, not amounts of money.
#![allow(clippy::float_arithmetic)]

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U64, U256};
use chains::HeadSource;
use chains::devnet::{Anvil, TestToken};
use futures::StreamExt;
use indexer::deposits::DepositStore;
use indexer::deposits::ethereum::{EthereumWatchConfig, EthereumWatcher, Token};
use indexer::devnet::TestDb;
use indexer::ledger::{Asset, Ledger};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const BATCH: u64 = 25;
const CONCURRENCY: usize = 4;
const ADDRESSES: usize = 500;

fn main() {
    let runtime = support::runtime();
    runtime.block_on(run(
        support::env("COFFER_BENCH_BLOCKS", 300),
        support::env("COFFER_BENCH_TRANSFERS", 40),
        support::env("COFFER_BENCH_WATCHED_EVERY", 4).max(1),
    ));
}

async fn run(blocks: u64, transfers: u64, watched_every: u64) {
    let anvil = Anvil::spawn()
        .await
        .expect("anvil (run ./scripts/devnet install)");
    let db = TestDb::new()
        .await
        .expect("bench database (is the devnet PostgreSQL up?)");
    let addresses = support::watched_addresses(&db, chains::Chain::Ethereum, ADDRESSES)
        .await
        .iter()
        .map(|a| a.parse::<Address>().expect("address"))
        .collect::<Vec<_>>();
    let from = Anvil::DEV_ACCOUNT;
    let token = anvil.deploy_test_token(6).await.expect("token");
    anvil
        .send(
            from,
            token.address,
            U256::ZERO,
            &TestToken::mint(from, U256::from(u64::MAX)),
            None,
        )
        .await
        .expect("mint");
    anvil.mine(1).await.expect("mine");
    let first = anvil.client().head().await.expect("head").height + 1;

    let setup = Instant::now();
    anvil
        .request("evm_setAutomine", json!([false]))
        .await
        .expect("automine off");
    let mut next: u64 = 0;
    let mut deposits: u64 = 0;
    let mut recipient = |next: u64| {
        if next.is_multiple_of(watched_every) {
            deposits += 1;
            addresses[(next / watched_every) as usize % addresses.len()]
        } else {
            Address::from_word(alloy::primitives::keccak256(next.to_be_bytes()))
        }
    };
    for _ in 0..blocks {
        for _ in 0..transfers {
            let to = recipient(next);
            next += 1;
            anvil
                .send(from, to, U256::from(next), &[], None)
                .await
                .expect("eth");
        }
        let recipients: Vec<Address> = (0..10)
            .map(|_| {
                next += 1;
                recipient(next)
            })
            .collect();
        anvil
            .send(
                from,
                token.address,
                U256::ZERO,
                &TestToken::transfer_each(&recipients, U256::from(3)),
                Some(1_000_000),
            )
            .await
            .expect("token");
        anvil.mine(1).await.expect("mine");
    }
    // anvil finalizes latest - 64: push every bench block below it.
    anvil.mine(65).await.expect("mine");
    let last = first + blocks - 1;
    println!(
        "ethereum catch-up benchmark: {blocks} blocks x ({transfers} ETH transfers + 1 token tx paying 10), \
         {deposits} of them to {ADDRESSES} watched addresses, batch {BATCH}, concurrency {CONCURRENCY} (setup {:.1}s)",
        setup.elapsed().as_secs_f64()
    );

    // (a) The bare client, twice around the watcher; the mean counts.
    let reference_before = reference(&anvil, token.address, first, last).await;
    let watcher = watcher_rate(&anvil, &db, token.address, first, last, deposits).await;
    let reference_after = reference(&anvil, token.address, first, last).await;
    let reference = (reference_before + reference_after) / 2.0;
    println!(
        "(a) bare RPC client:  {reference:8.1} blocks/s (before {reference_before:.1}, after {reference_after:.1})"
    );
    println!("(b) deposit watcher:  {watcher:8.1} blocks/s into PostgreSQL");
    println!("ratio b/a = {:.2}", watcher / reference);
}

/// Blocks/s of the watcher's request pattern with nothing done with the answers.
async fn reference(anvil: &Anvil, token: Address, first: u64, last: u64) -> f64 {
    let rpc = anvil.client().rpc().clone();
    let ranges: Vec<(u64, u64)> = (first..=last)
        .step_by(BATCH as usize)
        .map(|start| (start, (start + BATCH - 1).min(last)))
        .collect();
    let started = Instant::now();
    futures::stream::iter(ranges)
        .map(|(start, end)| {
            let rpc = rpc.clone();
            async move {
                let mut batch = rpc.new_batch();
                let mut waiters = Vec::new();
                for n in start..=end {
                    waiters.push(
                        batch
                            .add_call::<_, Box<serde_json::value::RawValue>>(
                                "eth_getBlockByNumber",
                                &(U64::from(n), true),
                            )
                            .expect("request"),
                    );
                }
                let filter = json!({
                    "fromBlock": U64::from(start), "toBlock": U64::from(end),
                    "address": [token], "topics": [chains::ethereum::TRANSFER_TOPIC],
                });
                waiters.push(batch.add_call("eth_getLogs", &(filter,)).expect("request"));
                batch.send().await.expect("batch");
                for waiter in waiters {
                    drop(waiter.await.expect("response"));
                }
                let mut batch = rpc.new_batch();
                let mut waiters = Vec::new();
                for n in start..=end {
                    waiters.push(
                        batch
                            .add_call::<_, Box<serde_json::value::RawValue>>(
                                "eth_getBlockReceipts",
                                &(U64::from(n),),
                            )
                            .expect("request"),
                    );
                }
                batch.send().await.expect("batch");
                for waiter in waiters {
                    drop(waiter.await.expect("response"));
                }
            }
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    (last - first + 1) as f64 / started.elapsed().as_secs_f64()
}

async fn watcher_rate(
    anvil: &Anvil,
    db: &TestDb,
    token: Address,
    first: u64,
    last: u64,
    deposits: u64,
) -> f64 {
    let ledger = Ledger::new(db.pool().clone());
    ledger
        .register_asset(&Asset {
            code: "TUSD".into(),
            chain: chains::Chain::Ethereum,
            decimals: 6,
            contract: Some(token.to_checksum(None)),
        })
        .await
        .expect("asset");
    let mut config = EthereumWatchConfig {
        tokens: vec![Token {
            contract: token,
            asset: "TUSD".into(),
        }],
        ..EthereumWatchConfig::default()
    };
    config.watch.start_height = Some(first);
    config.watch.batch_blocks = BATCH;
    config.watch.fetch_concurrency = CONCURRENCY;
    config.watch.poll_interval = Duration::from_millis(20);
    let store = DepositStore::new(
        ledger,
        chains::Chain::Ethereum,
        config.watch.max_reorg_depth,
    );
    let watcher = EthereumWatcher::new(anvil.client().clone(), store, config);
    let mut progress = watcher.progress();
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(watcher.run(cancel.clone()));
    progress
        .wait_for(|height| height.is_some_and(|h| h >= last))
        .await
        .expect("watcher reaches the last bench block");
    let elapsed = started.elapsed();
    cancel.cancel();
    task.await.expect("watcher");
    let credited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deposits WHERE status = 'credited'")
            .fetch_one(db.pool())
            .await
            .expect("count");
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM deposits WHERE status = 'pending'")
        .fetch_one(db.pool())
        .await
        .expect("count");
    println!(
        "    watcher stored {credited} credited and {pending} pending deposits in {:.2}s",
        elapsed.as_secs_f64()
    );
    assert_eq!(
        (credited + pending) as u64,
        deposits,
        "every transfer to a watched address is one deposit"
    );
    (last - first + 1) as f64 / elapsed.as_secs_f64()
}
