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

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U64, U256};
use alloy::rpc::client::{BatchRequest, Waiter};
use chains::HeadSource;
use chains::devnet::{Anvil, TestToken};
use futures::StreamExt;
use indexer::deposits::DepositStore;
use indexer::deposits::ethereum::{EthereumWatchConfig, EthereumWatcher, Token};
use indexer::devnet::TestDb;
use indexer::devnet::bench::{self, TimedWatcher};
use indexer::ledger::{Asset, Ledger};
use serde_json::json;
use serde_json::value::RawValue;

const BATCH: u64 = 25;
const CONCURRENCY: usize = 4;
const ADDRESSES: usize = 500;

fn main() {
    let blocks = bench::env("COFFER_BENCH_BLOCKS", 300);
    let transfers = bench::env("COFFER_BENCH_TRANSFERS", 40);
    let watched_every = bench::env("COFFER_BENCH_WATCHED_EVERY", 4).max(1);
    bench::runtime().block_on(run(blocks, transfers, watched_every));
}

async fn run(blocks: u64, transfers: u64, watched_every: u64) {
    let anvil = bench::node("anvil", Anvil::spawn().await);
    let db = bench::database().await;
    let addresses: Vec<Address> =
        bench::watched_addresses(&db, chains::Chain::Ethereum, ADDRESSES).await;
    let from = Anvil::DEV_ACCOUNT;
    let token = anvil
        .deploy_minted_token(6, U256::from(u64::MAX))
        .await
        .expect("token");
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
    let ranges = bench::batches(first, last, BATCH);
    let fetch = futures::stream::iter(ranges)
        .map(|(start, end)| {
            let rpc = rpc.clone();
            async move {
                let mut batch = rpc.new_batch();
                let mut waiters: Vec<Waiter<Box<RawValue>>> = (start..=end)
                    .map(|n| batch.add_call("eth_getBlockByNumber", &(U64::from(n), true)))
                    .collect::<Result<_, _>>()
                    .expect("request");
                let filter = json!({
                    "fromBlock": U64::from(start), "toBlock": U64::from(end),
                    "address": [token], "topics": [chains::ethereum::TRANSFER_TOPIC],
                });
                waiters.push(batch.add_call("eth_getLogs", &(filter,)).expect("request"));
                discard(batch, waiters).await;
                let mut batch = rpc.new_batch();
                let waiters = (start..=end)
                    .map(|n| batch.add_call("eth_getBlockReceipts", &(U64::from(n),)))
                    .collect::<Result<_, _>>()
                    .expect("request");
                discard(batch, waiters).await;
            }
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<()>>();
    bench::rate_of(first, last, fetch).await
}

/// Sends `batch` and reads every answer, dropping it.
async fn discard(batch: BatchRequest<'_>, waiters: Vec<Waiter<Box<RawValue>>>) {
    batch.send().await.expect("batch");
    for waiter in waiters {
        drop(waiter.await.expect("response"));
    }
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
    let elapsed = TimedWatcher::spawn(watcher).finish_at(last).await;
    let credited = bench::count_deposits(db, "status = 'credited'").await;
    let pending = bench::count_deposits(db, "status = 'pending'").await;
    println!(
        "    watcher stored {credited} credited and {pending} pending deposits in {:.2}s",
        elapsed.as_secs_f64()
    );
    assert_eq!(
        (credited + pending) as u64,
        deposits,
        "every transfer to a watched address is one deposit"
    );
    bench::rate(first, last, elapsed)
}
