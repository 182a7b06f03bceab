//! Ledger throughput against a raw-SQL reference, measured in one run on the
//! same PostgreSQL (`cargo bench -p indexer --bench ledger`):
//!
//! 1. pgbench running the minimal two-account posting (BEGIN; two UPDATEs;
//!    a two-row INSERT; COMMIT), 16 clients over 10,000 accounts;
//! 2. Coffer transfers between random users of 10,000, 16 concurrent clients;
//! 3. Coffer deposit-like entries that each touch one of 2 hot system accounts.
//!
//! Prints each rate and the ratios 2/1 and 3/2. The reference runs before
//! and after the Coffer phases and counts as their mean, and every phase
//! starts after a CHECKPOINT, so drift and background flushing favour
//! neither side. `COFFER_BENCH_SECONDS` (default 10) sets each phase's length.

// Rates and ratios are measurements, not amounts of money.
#![allow(clippy::float_arithmetic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indexer::devnet::TestDb;
use indexer::devnet::bench;
use indexer::devnet::ledger::credit_entry;
use indexer::ledger::{
    AccountPurpose, AccountRef, Amount, Asset, EntryKind, IdempotencyKey, Ledger, Leg, NewEntry,
};
use uuid::Uuid;

const CLIENTS: usize = 16;
const ACCOUNTS: usize = 10_000;
const PGBENCH_SCRIPT: &str = "\\set a random(1, 10000)
\\set b random(1, 10000)
\\set lo least(:a, :b)
\\set hi greatest(:a, :b)
BEGIN;
UPDATE bench_accounts SET balance = balance - 1 WHERE id = :lo;
UPDATE bench_accounts SET balance = balance + 1 WHERE id = :hi;
INSERT INTO bench_postings (account_id, amount) VALUES (:lo, -1), (:hi, 1);
COMMIT;
";

fn main() {
    let seconds = bench::env("COFFER_BENCH_SECONDS", 10);
    let runtime = bench::runtime();
    runtime.block_on(run(Duration::from_secs(seconds)));
}

async fn run(phase: Duration) {
    let db = bench::database().await;
    let pool = db.pool();
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(pool)
        .await
        .expect("show");
    assert_eq!(
        synchronous_commit, "on",
        "the benchmark requires synchronous_commit=on"
    );
    println!(
        "ledger benchmark: {CLIENTS} clients, {ACCOUNTS} accounts, {}s per phase, synchronous_commit={synchronous_commit}",
        phase.as_secs()
    );

    prepare_reference(&db).await;
    let reference_before = pgbench_reference(&db, phase).await;

    let ledger = Ledger::new(pool.clone());
    ledger
        .register_asset(&Asset {
            code: "BTC".into(),
            chain: chains::Chain::Bitcoin,
            decimals: 8,
            contract: None,
        })
        .await
        .expect("asset");
    let users: Arc<Vec<Uuid>> = Arc::new((0..ACCOUNTS).map(|_| Uuid::new_v4()).collect());
    fund_all(&ledger, &users).await;

    checkpoint(pool).await;
    let transfers = drive(&ledger, &users, phase, |_, from, to| {
        vec![
            Leg::decrease(AccountRef::available(from, "BTC"), Amount::from_u64(1)),
            Leg::increase(AccountRef::available(to, "BTC"), Amount::from_u64(1)),
        ]
    })
    .await;

    checkpoint(pool).await;
    let hot = drive(&ledger, &users, phase, |n, _, to| {
        let system = if n % 2 == 0 {
            AccountPurpose::Custody
        } else {
            AccountPurpose::External
        };
        vec![
            Leg::decrease(AccountRef::system("BTC", system), Amount::from_u64(1)),
            Leg::increase(AccountRef::available(to, "BTC"), Amount::from_u64(1)),
        ]
    })
    .await;
    let reference_after = pgbench_reference(&db, phase).await;
    let reference = (reference_before + reference_after) / 2.0;

    println!(
        "1. pgbench reference (raw two-account posting): {reference:>9.1} tx/s   (before {reference_before:.1}, after {reference_after:.1})"
    );
    println!(
        "2. Coffer transfers between users:               {transfers:>9.1} tx/s   ratio 2/1 = {:.2} (target >= 0.60)",
        transfers / reference
    );
    println!(
        "3. Coffer entries touching 1 of 2 hot accounts:  {hot:>9.1} tx/s   ratio 3/2 = {:.2} (target >= 0.50)",
        hot / transfers
    );

    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM postings GROUP BY entry_id, asset HAVING sum(amount) <> 0) u",
    )
    .fetch_one(pool)
    .await
    .expect("check");
    assert_eq!(unbalanced, 0);
}

fn pgbench_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("pgbench"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    on_path
        .or_else(|| {
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .flatten()
                .map(|e| e.path())
                .collect();
            versions.sort();
            versions
                .into_iter()
                .rev()
                .map(|v| v.join("bin/pgbench"))
                .find(|p| p.is_file())
        })
        .expect("pgbench not found; install PostgreSQL with ./scripts/devnet install")
}

async fn checkpoint(pool: &sqlx::PgPool) {
    sqlx::query("CHECKPOINT")
        .execute(pool)
        .await
        .expect("CHECKPOINT (the benchmark connects as a superuser)");
}

async fn prepare_reference(db: &TestDb) {
    let pool = db.pool();
    sqlx::query("CREATE TABLE bench_accounts (id INT PRIMARY KEY, balance NUMERIC(78,0) NOT NULL)")
        .execute(pool)
        .await
        .expect("create");
    sqlx::query("CREATE TABLE bench_postings (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, account_id INT NOT NULL, amount NUMERIC(78,0) NOT NULL)")
        .execute(pool)
        .await
        .expect("create");
    sqlx::query("INSERT INTO bench_accounts SELECT g, 1000000000 FROM generate_series(1, $1) g")
        .bind(ACCOUNTS as i32)
        .execute(pool)
        .await
        .expect("seed");
}

async fn pgbench_reference(db: &TestDb, phase: Duration) -> f64 {
    checkpoint(db.pool()).await;
    let script = std::env::temp_dir().join(format!("coffer-pgbench-{}.sql", std::process::id()));
    std::fs::write(&script, PGBENCH_SCRIPT).expect("script");
    let options = db.connect_options();
    let output = Command::new(pgbench_binary())
        .args([
            "-n",
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &phase.as_secs().to_string(),
        ])
        .arg("-f")
        .arg(&script)
        .args([
            "-h",
            options.get_host(),
            "-p",
            &options.get_port().to_string(),
            "-U",
            options.get_username(),
        ])
        .arg(db.name())
        .output()
        .expect("run pgbench");
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("tps = ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no tps in pgbench output:\n{stdout}"))
}

/// Gives every user an available balance to spend, 16 writers at a time.
async fn fund_all(ledger: &Ledger, users: &Arc<Vec<Uuid>>) {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (ledger, users, next) = (ledger.clone(), Arc::clone(users), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(user) = users.get(i) else { break };
                let reference = format!("fund-{user}");
                let entry = credit_entry(
                    EntryKind::Adjustment,
                    AccountPurpose::External,
                    *user,
                    "BTC",
                    1_000_000,
                    reference.clone(),
                );
                ledger
                    .post(&IdempotencyKey::new("bench", reference), &entry)
                    .await
                    .expect("fund");
            }
        }));
    }
    for task in tasks {
        task.await.expect("funder");
    }
    println!(
        "   (funded {ACCOUNTS} users in {:.1}s)",
        started.elapsed().as_secs_f64()
    );
}

/// Runs CLIENTS writers for `phase`, each posting entries built by `legs`
/// from random users; returns committed entries per second.
async fn drive(
    ledger: &Ledger,
    users: &Arc<Vec<Uuid>>,
    phase: Duration,
    legs: impl Fn(u64, Uuid, Uuid) -> Vec<Leg> + Send + Sync + Copy + 'static,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let run = Uuid::new_v4();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS as u64 {
        let (ledger, users, stop, committed) = (
            ledger.clone(),
            Arc::clone(users),
            Arc::clone(&stop),
            Arc::clone(&committed),
        );
        tasks.push(tokio::spawn(async move {
            let mut state =
                0x9E37_79B9_7F4A_7C15u64 ^ (client + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let from = users[(xorshift(&mut state) % ACCOUNTS as u64) as usize];
                let to = users[(xorshift(&mut state) % ACCOUNTS as u64) as usize];
                if from == to {
                    continue;
                }
                let reference = format!("{run}-{client}-{n}");
                let entry = NewEntry {
                    kind: EntryKind::Transfer,
                    reference: reference.clone(),
                    metadata: serde_json::json!({}),
                    legs: legs(n, from, to),
                };
                ledger
                    .post(&IdempotencyKey::new("bench", reference), &entry)
                    .await
                    .expect("post");
                committed.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    let started = Instant::now();
    let before = committed.load(Ordering::Relaxed);
    tokio::time::sleep(phase).await;
    let after = committed.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("client");
    }
    (after - before) as f64 / elapsed
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
