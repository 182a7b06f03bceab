//! Solana catch-up: the deposit watcher against bare block fetching, in one
//! run on the same solana-test-validator
//! (`cargo bench -p indexer --bench solana_catchup`).
//!
//! Sends `COFFER_BENCH_TXS` transactions (default 4,000, about 250 slots) of 8 SOL transfers
//! each; in every `COFFER_BENCH_WATCHED_EVERY`-th transaction (default 4)
//! one transfer pays a watched deposit address, the rest pay others, as on
//! a real chain where few transfers are the custodian's (1 puts a deposit
//! in every transaction). Then over the slots they landed in it measures
//!
//! (a) the reference: `getBlocks` and `getBlock` (`jsonParsed`, full
//!     transactions) for every produced slot, with the watcher's batch size
//!     and concurrency (`COFFER_BENCH_BATCH`, `COFFER_BENCH_CONCURRENCY`,
//!     by default the watcher's defaults), over the same HTTP path, answers
//!     read and discarded;
//! (b) the deposit watcher indexing the same slots into PostgreSQL, from
//!     its start to its cursor passing the last slot;
//!
//! in `COFFER_BENCH_ROUNDS` rounds (default 7), each (b) on a fresh
//! database, and prints both rates in slots/s, each round's ratio b/a
//! against the mean of the references either side of it, and their
//! median, after checking that the watcher stored exactly one deposit per
//! watched transfer.

// Rates and ratios are measurements, not amounts of money.
#![allow(clippy::float_arithmetic)]

use std::time::{Duration, Instant};

use chains::devnet::SolanaValidator;
use chains::devnet::solana_tx::{Keypair, system_transfer};
use futures::StreamExt;
use indexer::deposits::DepositStore;
use indexer::deposits::solana::{SolanaWatchConfig, SolanaWatcher};
use indexer::devnet::TestDb;
use indexer::devnet::bench::{self, TimedWatcher};
use indexer::ledger::Ledger;
use solana_commitment_config::CommitmentConfig;
use solana_pubkey::Pubkey;

const ADDRESSES: usize = 200;
const TRANSFERS_PER_TX: u64 = 8;

fn main() {
    let runtime = bench::runtime();
    let defaults = SolanaWatchConfig::default();
    runtime.block_on(run(
        bench::env("COFFER_BENCH_TXS", 4_000),
        bench::env("COFFER_BENCH_WATCHED_EVERY", 4).max(1),
        Fetching {
            batch: bench::env("COFFER_BENCH_BATCH", defaults.watch.batch_blocks).max(1),
            concurrency: bench::env(
                "COFFER_BENCH_CONCURRENCY",
                defaults.watch.fetch_concurrency as u64,
            )
            .max(1) as usize,
        },
    ));
}

/// The watcher's catch-up settings, which the reference fetches with too.
#[derive(Clone, Copy)]
struct Fetching {
    batch: u64,
    concurrency: usize,
}

async fn run(txs: u64, watched_every: u64, fetching: Fetching) {
    let Fetching { batch, concurrency } = fetching;
    let validator = bench::node("solana-test-validator", SolanaValidator::spawn().await);
    let db = bench::database().await;
    let watched: Vec<Pubkey> =
        bench::watched_addresses(&db, chains::Chain::Solana, ADDRESSES).await;
    let payers: Vec<Keypair> = (0..16u8)
        .map(|i| Keypair::from_seed([0x80 + i; 32]))
        .collect();
    for payer in &payers {
        validator
            .airdrop(&payer.pubkey(), 1_000_000_000_000)
            .await
            .expect("airdrop");
    }
    let client = validator.client();
    let first = client
        .slot(CommitmentConfig::confirmed())
        .await
        .expect("slot")
        + 1;
    let setup = Instant::now();
    let sent = futures::stream::iter(0..txs)
        .map(|n| {
            let payer = &payers[(n % payers.len() as u64) as usize];
            let validator = &validator;
            let watched = &watched;
            async move {
                let instructions: Vec<_> = (0..TRANSFERS_PER_TX)
                    .map(|k| {
                        let to = if k == 0 && n.is_multiple_of(watched_every) {
                            watched[(n / watched_every) as usize % watched.len()]
                        } else {
                            Pubkey::new_from_array([(k as u8) + 1; 32])
                        };
                        system_transfer(&payer.pubkey(), &to, 1_000_000 + n * 10 + k)
                    })
                    .collect();
                let (_, ok) = validator.send(&instructions, &[payer]).await.expect("send");
                assert!(ok, "transaction {n} failed");
            }
        })
        .buffer_unordered(payers.len())
        .count()
        .await;
    let last = client
        .slot(CommitmentConfig::confirmed())
        .await
        .expect("slot");
    let deposits = (0..sent as u64)
        .filter(|n| n.is_multiple_of(watched_every))
        .count() as u64;
    println!(
        "solana catch-up benchmark: {sent} transactions x {TRANSFERS_PER_TX} transfers ({deposits} to {ADDRESSES} \
         watched addresses) over slots {first}..={last}, batch {batch} slots, concurrency {concurrency} (setup {:.1}s)",
        setup.elapsed().as_secs_f64()
    );

    // Rounds of (a) then (b), each (b) on a fresh database issuing the
    // same addresses, and (a) once more at the end: each ratio is against
    // the mean of the references either side of it.
    let rounds = bench::env("COFFER_BENCH_ROUNDS", 7).max(1);
    let mut round_dbs = Vec::new();
    for _ in 0..rounds {
        let round_db = bench::database().await;
        let issued: Vec<Pubkey> =
            bench::watched_addresses(&round_db, chains::Chain::Solana, ADDRESSES).await;
        assert_eq!(issued, watched, "the same seed issues the same addresses");
        round_dbs.push(round_db);
    }
    // The databases' creation is written out now, not during a measurement;
    // they are dropped only after the last one for the same reason.
    sqlx::query("CHECKPOINT")
        .execute(db.pool())
        .await
        .expect("checkpoint");
    let mut references = vec![reference(&validator, first, last, fetching).await];
    let mut watchers = Vec::new();
    for round_db in &round_dbs {
        watchers.push(watcher_rate(&validator, round_db, first, last, deposits, fetching).await);
        references.push(reference(&validator, first, last, fetching).await);
    }
    let mut ratios = Vec::new();
    for (round, watcher) in watchers.iter().enumerate() {
        let reference = (references[round] + references[round + 1]) / 2.0;
        let ratio = watcher / reference;
        println!(
            "round {}: (a) bare getBlock {reference:7.1} slots/s, (b) deposit watcher {watcher:7.1} slots/s into PostgreSQL, b/a = {ratio:.2}",
            round + 1
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio b/a = {:.2} (median of {rounds}; range {:.2}..{:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}

/// Slots/s of listing and fetching the blocks, answers discarded.
async fn reference(validator: &SolanaValidator, first: u64, last: u64, fetching: Fetching) -> f64 {
    let Fetching { batch, concurrency } = fetching;
    let client = validator.client();
    let rpc = client.rpc();
    let ranges = bench::batches(first, last, batch);
    let fetch = futures::stream::iter(ranges)
        .map(|(start, end)| async move {
            let slots = rpc
                .get_blocks_with_commitment(start, Some(end), CommitmentConfig::confirmed())
                .await
                .expect("getBlocks");
            futures::stream::iter(slots)
                .map(|slot| async move {
                    drop(client.block_body(slot).await.expect("getBlock"));
                })
                .buffered(chains::solana::FETCH_CONCURRENCY)
                .count()
                .await
        })
        .buffered(concurrency)
        .count();
    bench::rate_of(first, last, fetch).await
}

/// The watcher's slots/s from its start to `last`.
async fn watcher_rate(
    validator: &SolanaValidator,
    db: &TestDb,
    first: u64,
    last: u64,
    deposits: u64,
    fetching: Fetching,
) -> f64 {
    let mut config = SolanaWatchConfig::default();
    config.watch.start_height = Some(first);
    config.watch.batch_blocks = fetching.batch;
    config.watch.fetch_concurrency = fetching.concurrency;
    config.watch.poll_interval = Duration::from_millis(50);
    let store = DepositStore::new(
        Ledger::new(db.pool().clone()),
        chains::Chain::Solana,
        config.watch.max_reorg_depth,
    );
    let watcher = SolanaWatcher::new(validator.client().clone(), store, config);
    let elapsed = TimedWatcher::spawn(watcher).finish_at(last).await;
    let in_range = format!("block_height BETWEEN {first} AND {last}");
    let stored = bench::count_deposits(db, &in_range).await;
    println!(
        "    watcher: {stored} deposits in {:.2}s",
        elapsed.as_secs_f64()
    );
    assert_eq!(
        stored as u64, deposits,
        "no dropped transfer: one deposit per watched transfer"
    );
    bench::rate(first, last, elapsed)
}
