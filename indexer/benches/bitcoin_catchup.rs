//! Bitcoin catch-up: the deposit watcher against bare raw-block fetching, in
//! one run on the same btcd (`cargo bench -p indexer --bench bitcoin_catchup`).
//!
//! Pre-mines `COFFER_BENCH_BLOCKS` blocks (default 100) of
//! `COFFER_BENCH_TXS` transactions each (default 300), every one paying a
//! single output; every `COFFER_BENCH_WATCHED_EVERY`-th (default 50) pays
//! one of 100,000 watched deposit addresses, as on a real chain where few
//! outputs are the custodian's (set it to 1 for every output). Then it
//! measures
//!
//! (a) the reference: `getblockhash` + `getblock <hash> 0` and decoding with
//!     the `bitcoin` crate, results discarded, over the same connections,
//!     batch size and concurrency as the watcher;
//! (b) the watcher indexing the same blocks into a fresh database with the
//!     100,000 watched scripts, timed from its first committed batch to its
//!     last (its start-up, mostly loading the watched set, is printed
//!     apart), against the reference over the same blocks;
//!
//! prints both rates in blocks/s and the ratio b/a, and the watched set's
//! memory per script, measured by a counting allocator on a set of one
//! million issued scripts.

// Rates and ratios are measurements, not amounts of money.
#![allow(clippy::float_arithmetic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bitcoin::bip32::{ChildNumber, Xpub};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Address, Amount, CompressedPublicKey, Network, OutPoint};
use chains::HeadSource;
use chains::devnet::Btcd;
use futures::StreamExt;
use indexer::deposits::DepositStore;
use indexer::deposits::bitcoin::{BitcoinWatchConfig, BitcoinWatcher, WatchedScripts};
use indexer::devnet::TestDb;
use indexer::devnet::bench::{self, TimedWatcher};
use indexer::ledger::Ledger;
use uuid::Uuid;

const WATCHED: u32 = 100_000;
const BATCH: u64 = 10;
const CONCURRENCY: usize = 2;

/// Counts live heap bytes, for the watched set's footprint.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let blocks = bench::env("COFFER_BENCH_BLOCKS", 100);
    let txs = bench::env("COFFER_BENCH_TXS", 300);
    let watched_every = bench::env("COFFER_BENCH_WATCHED_EVERY", 50).max(1);
    bench::runtime().block_on(run(blocks, txs, watched_every));
    memory_per_script();
}

/// P2WPKH addresses `<account>/0/i` for `indexes`, with one shared context.
fn derive(account: &Xpub, indexes: std::ops::Range<u32>) -> Vec<Address> {
    let secp = Secp256k1::verification_only();
    let external = account
        .derive_pub(&secp, &[ChildNumber::Normal { index: 0 }])
        .expect("external chain");
    indexes
        .map(|i| {
            let key = external
                .derive_pub(&secp, &[ChildNumber::Normal { index: i }])
                .expect("child");
            Address::p2wpkh(&CompressedPublicKey(key.public_key), Network::Regtest)
        })
        .collect()
}

async fn run(blocks: u64, txs: u64, watched_every: u64) {
    let node = bench::node("btcd", Btcd::spawn().await);
    let db = bench::database().await;
    let keys = indexer::devnet::deposits::deposit_keys();
    let account = keys.bitcoin_account_xpub();

    let setup = Instant::now();
    let watched = derive(&account, 0..WATCHED);
    issue(&db, &watched).await;
    // Segwit activates after three 144-block windows; the first `blocks`
    // coinbases fund one fan-out each.
    node.generate(432.max(blocks as u32 + 101))
        .await
        .expect("mine");
    let mut funding = Vec::new();
    for height in 1..=blocks {
        let (outpoint, value) = node.coinbase_output(height).await.expect("coinbase");
        let piece = Amount::from_sat((value.to_sat() - 100_000) / txs);
        let outputs: Vec<(Address, Amount)> =
            (0..txs).map(|_| (Btcd::mining_address(), piece)).collect();
        let txid = node.pay(outpoint, value, &outputs).await.expect("fan-out");
        funding.push((txid, piece));
    }
    node.generate(1).await.expect("mine");
    let first = node.client().head().await.expect("head").height + 1;
    let unwatched = derive(&account, WATCHED..WATCHED + 1_000);
    let mut deposits = 0u64;
    let mut n = 0u64;
    for (txid, piece) in &funding {
        let mut payments = Vec::with_capacity(txs as usize);
        for vout in 0..txs {
            n += 1;
            let to = if n.is_multiple_of(watched_every) {
                deposits += 1;
                watched[(n / watched_every) as usize % watched.len()].clone()
            } else {
                unwatched[n as usize % unwatched.len()].clone()
            };
            let input = OutPoint {
                txid: *txid,
                vout: vout as u32,
            };
            payments.push(
                Btcd::sign_payment(input, *piece, &[(to, *piece - Amount::from_sat(10_000))])
                    .expect("sign"),
            );
        }
        let client = node.client();
        futures::stream::iter(payments)
            .for_each_concurrent(chains::bitcoin::CONNECTIONS, |tx| async move {
                client.send_raw_transaction(&tx).await.expect("payment");
            })
            .await;
        node.generate(1).await.expect("mine");
    }
    let last = first + blocks - 1;
    println!(
        "bitcoin catch-up benchmark: {blocks} blocks x {txs} transactions, {deposits} paying one of {WATCHED} \
         watched scripts, batch {BATCH}, concurrency {CONCURRENCY} x {} connections (setup {:.1}s)",
        chains::bitcoin::CONNECTIONS,
        setup.elapsed().as_secs_f64()
    );

    let (timed_from, watcher) = watcher_rate(&node, &db, account, first, last, deposits).await;
    let reference_before = reference(&node, timed_from, last).await;
    let reference_after = reference(&node, timed_from, last).await;
    let reference = (reference_before + reference_after) / 2.0;
    println!(
        "(a) raw getblock + decode: {reference:8.1} blocks/s (blocks {timed_from}..={last}, two runs: {reference_before:.1}, {reference_after:.1})"
    );
    println!("(b) deposit watcher:       {watcher:8.1} blocks/s into PostgreSQL");
    println!("ratio b/a = {:.2}", watcher / reference);
}

/// One user holding every watched address, inserted in bulk.
async fn issue(db: &TestDb, addresses: &[Address]) {
    let user = Uuid::new_v4();
    let wallet = Uuid::new_v4();
    let pool = db.pool();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash) VALUES ($1, 'bench@example.com', 'bench')",
    )
    .bind(user)
    .execute(pool)
    .await
    .expect("user");
    sqlx::query("INSERT INTO wallets (id, user_id, chain) VALUES ($1, $2, 'bitcoin')")
        .bind(wallet)
        .bind(user)
        .execute(pool)
        .await
        .expect("wallet");
    let texts: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let indexes: Vec<i64> = (0..addresses.len() as i64).collect();
    sqlx::query(
        "WITH issued AS (
             INSERT INTO deposit_addresses (chain, address, wallet_id, derivation_index, derivation_path)
             SELECT 'bitcoin', a, $3, i, 'm/84''/1''/0''/0/' || i FROM unnest($1::text[], $2::bigint[]) AS u(a, i)
         )
         INSERT INTO watched_addresses (chain, address, user_id) SELECT 'bitcoin', a, $4 FROM unnest($1::text[]) AS u(a)",
    )
    .bind(&texts)
    .bind(&indexes)
    .bind(wallet)
    .bind(user)
    .execute(pool)
    .await
    .expect("addresses");
    sqlx::query("UPDATE address_counters SET next_index = $1 WHERE chain = 'bitcoin'")
        .bind(addresses.len() as i64)
        .execute(pool)
        .await
        .expect("counter");
}

/// Blocks/s of fetching and decoding the raw blocks, nothing more.
async fn reference(node: &Btcd, first: u64, last: u64) -> f64 {
    let client = node.client().clone();
    let ranges = bench::batches(first, last, BATCH);
    let fetch = futures::stream::iter(ranges)
        .map(|(start, end)| {
            let client = client.clone();
            let range = start..=end;
            async move {
                tokio::spawn(async move { client.blocks(range).await.expect("blocks").len() }).await
            }
        })
        .buffered(CONCURRENCY)
        .for_each(|fetched| async move {
            let _blocks = fetched.expect("fetch task");
        });
    bench::rate_of(first, last, fetch).await
}

/// The first block timed and the watcher's blocks/s from there to `last`.
async fn watcher_rate(
    node: &Btcd,
    db: &TestDb,
    account: Xpub,
    first: u64,
    last: u64,
    deposits: u64,
) -> (u64, f64) {
    let mut config = BitcoinWatchConfig {
        confirmations: 1,
        ..BitcoinWatchConfig::default()
    };
    config.watch.start_height = Some(first);
    config.watch.batch_blocks = BATCH;
    config.watch.fetch_concurrency = CONCURRENCY;
    config.watch.poll_interval = Duration::from_millis(20);
    let store = DepositStore::new(
        Ledger::new(db.pool().clone()),
        chains::Chain::Bitcoin,
        config.watch.max_reorg_depth,
    );
    let watcher = BitcoinWatcher::new(
        node.client().clone(),
        account,
        Network::Regtest,
        store,
        config,
    );
    let mut timed = TimedWatcher::spawn(watcher);
    let first_batch = timed.first_batch().await.unwrap_or(first);
    let startup = timed.elapsed();
    let after_first_batch = Instant::now();
    timed.reach(last).await;
    let elapsed = after_first_batch.elapsed();
    timed.stop().await;
    let stored = bench::count_deposits(db, "true").await;
    println!(
        "    watcher: start-up and first batch (to block {first_batch}) {:.2}s, then blocks {}..={last} in {:.2}s; {stored} deposits",
        startup.as_secs_f64(),
        first_batch + 1,
        elapsed.as_secs_f64()
    );
    assert_eq!(
        stored as u64, deposits,
        "every payment to a watched script is one deposit"
    );
    (first_batch + 1, bench::rate(first_batch + 1, last, elapsed))
}

/// Heap bytes per script of a set of one million issued P2WPKH scripts.
fn memory_per_script() {
    const SCRIPTS: u32 = 1_000_000;
    let before = LIVE.load(Ordering::Relaxed);
    let mut set = WatchedScripts::default();
    let owner = Uuid::new_v4();
    for i in 0..SCRIPTS {
        let mut program = [0u8; 20];
        program[..4].copy_from_slice(&i.to_le_bytes());
        program[4..8].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
        set.insert_program(program, i, Some(owner));
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "watched set: {} scripts in {:.1} MiB, {:.1} bytes per script",
        set.len(),
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / f64::from(SCRIPTS)
    );
}
