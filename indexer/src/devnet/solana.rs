//! The watch loop's cases on solana-test-validator, for two test binaries:
//! `it`, whose Solana tests share one validator ([`SharedValidator`]), and
//! `solana_fork`, whose validators fork ([`ForkingValidator`]).
//!
//! One validator cannot fork, so a fork is made as the cluster makes one
//! when it abandons a fork: the ledger is copied, the validator confirms
//! more blocks and is killed before finalizing them, and a validator resumed
//! from the copy goes on from there without them. Its depth is the slots
//! the killed validator confirmed after the copy, not a number asked for.
//! Pruned history is not produced: the validator purges its ledger only
//! every 512 rooted slots (minutes), and one restored from a snapshot
//! without its blockstore answers `null` for the blocks before it, not
//! "cleaned up".

use std::time::{Duration, Instant};

use crate::deposits::DepositStore;
use crate::deposits::solana::{SolanaSource, SolanaWatchConfig, SolanaWatcher};
use crate::deposits::watcher::WatchConfig;
use crate::ledger::Ledger;
use chains::Chain;
use chains::devnet::solana_tx::{Keypair, system_transfer};
use chains::devnet::{LedgerCopy, SolanaValidator};
use chains::solana::SolanaClient;
use solana_commitment_config::CommitmentConfig;
use solana_pubkey::Pubkey;
use sqlx::PgPool;
use uuid::Uuid;

use super::cases::{Forks, Lane, SuiteConfig, TestChain};
use super::deposits::*;

const SOL: Chain = Chain::Solana;
const LAMPORTS: u64 = 1_000_000_000;

fn pubkey(text: &str) -> Pubkey {
    text.parse().expect("pubkey")
}

async fn slot(client: &SolanaClient, commitment: CommitmentConfig) -> u64 {
    client.slot(commitment).await.expect("slot")
}

/// The payer of a case's transfers: one per lane, so cases sharing a
/// validator do not share one.
fn payer(lane: Lane) -> Keypair {
    Keypair::from_seed([0xa0 + lane as u8; 32])
}

/// Deposit addresses from an HD index of the lane's own, so cases sharing
/// a validator do not share one.
async fn lane_users(db: &PgPool, lane: Lane, count: usize) -> Vec<(Uuid, String)> {
    users_with_addresses_from(db, SOL, count, 1_000 + 100 * lane as i64).await
}

async fn pay(validator: &SolanaValidator, payer: &Keypair, payments: &[(String, u64)]) {
    let transfers: Vec<_> = payments
        .iter()
        .map(|(to, lamports)| system_transfer(&payer.pubkey(), &pubkey(to), *lamports))
        .collect();
    let (_, ok) = validator
        .send(&transfers, &[payer])
        .await
        .expect("transfer");
    assert!(ok, "the transfer succeeds");
}

/// Waits for `slots` more confirmed slots.
async fn mine(client: &SolanaClient, slots: u64) {
    let target = slot(client, CommitmentConfig::confirmed()).await + slots;
    while slot(client, CommitmentConfig::confirmed()).await < target {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tip(client: &SolanaClient) -> (u64, String) {
    let head = client.confirmed_head().await.expect("head");
    (head.height, head.hash.expect("hash"))
}

fn watcher(client: SolanaClient, db: &PgPool, config: &SuiteConfig) -> SolanaWatcher {
    let config = SolanaWatchConfig {
        watch: WatchConfig {
            start_height: Some(config.start_height),
            max_reorg_depth: config.max_reorg_depth,
            batch_blocks: config.batch_blocks,
            fetch_concurrency: config.concurrency,
            fetch_ahead: config.fetch_ahead,
            poll_interval: Duration::from_millis(100),
        },
        tokens: Vec::new(),
    };
    let store = DepositStore::new(Ledger::new(db.clone()), SOL, config.watch.max_reorg_depth);
    SolanaWatcher::new(client, store, config)
}

async fn pending(db: &PgPool, at_or_below: u64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM deposits WHERE chain = 'solana' AND status = 'pending' AND block_height <= $1",
    )
    .bind(at_or_below as i64)
    .fetch_one(db)
    .await
    .expect("pending")
}

/// Waits until `db`'s watcher has indexed past `target`, on the node's
/// chain (after a fork, a cursor past the resumed node's tip is not), with
/// nothing pending at or below the node's finalized slot, and (with
/// `settled`) nothing pending at all.
async fn wait_for(client: &SolanaClient, db: &PgPool, target: u64, settled: bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (at, hash) = cursor(db, SOL).await.unwrap_or((0, String::new()));
        let finalized = slot(client, CommitmentConfig::finalized()).await;
        let limit = if settled { u64::MAX >> 1 } else { finalized };
        let waiting = pending(db, limit).await;
        if at >= target as i64 && waiting == 0 {
            let node = client
                .block_hashes(&[at as u64], CommitmentConfig::confirmed())
                .await
                .expect("block hash");
            if node == [Some(hash)] {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "solana watcher not there: cursor {at}, target {target}, {waiting} pending (finalized {finalized})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until everything confirmed now is final, then until `db`'s watcher
/// has credited it.
async fn settle(client: &SolanaClient, db: &PgPool) {
    let target = slot(client, CommitmentConfig::confirmed()).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while slot(client, CommitmentConfig::finalized()).await < target {
        assert!(Instant::now() < deadline, "slot {target} not finalized");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for(client, db, target, true).await;
}

/// The validator the `it` binary's Solana tests share.
#[derive(Debug)]
pub struct SharedValidator {
    validator: &'static SolanaValidator,
    payer: Keypair,
    lane: Lane,
}

impl TestChain for SharedValidator {
    type Source = SolanaSource;
    const CHAIN: Chain = SOL;
    const FINAL_BY_DEPTH: bool = false;
    const A_FEW_POLLS: Duration = Duration::from_millis(500);

    async fn start(lane: Lane) -> Self {
        init_logs();
        let validator = SolanaValidator::shared()
            .await
            .expect("solana-test-validator");
        let payer = payer(lane);
        validator
            .airdrop(&payer.pubkey(), 20 * LAMPORTS)
            .await
            .expect("airdrop");
        Self {
            validator,
            payer,
            lane,
        }
    }

    async fn users(&self, db: &PgPool, count: usize) -> Vec<(Uuid, String)> {
        lane_users(db, self.lane, count).await
    }

    async fn pay(&mut self, payments: &[(String, u64)]) {
        pay(self.validator, &self.payer, payments).await;
    }

    async fn mine(&mut self, blocks: u64) {
        mine(self.validator.client(), blocks).await;
    }

    async fn tip(&self) -> (u64, String) {
        tip(self.validator.client()).await
    }

    fn watcher(&self, db: &PgPool, config: &SuiteConfig) -> SolanaWatcher {
        watcher(self.validator.client().clone(), db, config)
    }

    async fn wait_indexed(&self, db: &PgPool, _config: &SuiteConfig) {
        let client = self.validator.client();
        let target = slot(client, CommitmentConfig::confirmed()).await;
        wait_for(client, db, target, false).await;
    }

    async fn settle(&self, db: &PgPool, _config: &SuiteConfig) {
        settle(self.validator.client(), db).await;
    }
}

/// Validators of its own that fork, one at a time (each keeps about a core
/// busy), behind a relay so the watcher keeps its node URL across a fork.
#[derive(Debug)]
pub struct ForkingValidator {
    node: Option<SolanaValidator>,
    copy: Option<LedgerCopy>,
    relay: Relay,
    payer: Keypair,
    lane: Lane,
    fork_point: u64,
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

/// Held by whatever runs validators in the `solana_fork` binary.
pub static VALIDATORS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl ForkingValidator {
    fn node(&self) -> &SolanaValidator {
        self.node.as_ref().expect("validator")
    }
}

impl TestChain for ForkingValidator {
    type Source = SolanaSource;
    const CHAIN: Chain = SOL;
    const EXACT_DEPTH: bool = false;
    const FINAL_BY_DEPTH: bool = false;
    const A_FEW_POLLS: Duration = Duration::from_millis(500);
    /// The watcher's retries back off while no validator answers.
    const HALTS_WITHIN: Duration = Duration::from_secs(60);

    async fn start(lane: Lane) -> Self {
        init_logs();
        let guard = VALIDATORS.lock().await;
        let node = SolanaValidator::spawn()
            .await
            .expect("solana-test-validator");
        let payer = payer(lane);
        // Before any copy: every branch has the payer's lamports.
        node.airdrop(&payer.pubkey(), 20 * LAMPORTS)
            .await
            .expect("airdrop");
        let relay = Relay::start(node.rpc_url()).await;
        Self {
            node: Some(node),
            copy: None,
            relay,
            payer,
            lane,
            fork_point: 0,
            _one_at_a_time: guard,
        }
    }

    async fn users(&self, db: &PgPool, count: usize) -> Vec<(Uuid, String)> {
        lane_users(db, self.lane, count).await
    }

    async fn pay(&mut self, payments: &[(String, u64)]) {
        pay(self.node(), &self.payer, payments).await;
    }

    async fn mine(&mut self, blocks: u64) {
        mine(self.node().client(), blocks).await;
    }

    async fn tip(&self) -> (u64, String) {
        tip(self.node().client()).await
    }

    fn watcher(&self, db: &PgPool, config: &SuiteConfig) -> SolanaWatcher {
        let client = SolanaClient::new(self.relay.url(), Duration::from_secs(30)).expect("client");
        watcher(client, db, config)
    }

    async fn wait_indexed(&self, db: &PgPool, _config: &SuiteConfig) {
        let client = self.node().client();
        let target = slot(client, CommitmentConfig::confirmed()).await;
        wait_for(client, db, target, false).await;
    }

    async fn settle(&self, db: &PgPool, _config: &SuiteConfig) {
        settle(self.node().client(), db).await;
    }
}

impl Forks for ForkingValidator {
    /// Each fork resumes a validator: two are enough to fork a fork.
    const REORG_DEPTHS: u64 = 2;

    /// Copies the ledger; the fork point is the slot confirmed just before.
    async fn fork(&mut self) -> u64 {
        let copy = self.node().copy_ledger().await.expect("copy the ledger");
        self.fork_point = copy.confirmed_slot;
        self.copy = Some(copy);
        self.fork_point
    }

    /// Kills the validator, which has finalized nothing past the fork
    /// point, and resumes one from the copy behind the relay; it pays
    /// `payments` in one of its first blocks.
    async fn reorg(&mut self, payments: &[(String, u64)]) {
        let finalized = slot(self.node().client(), CommitmentConfig::finalized()).await;
        assert!(
            finalized <= self.fork_point,
            "the validator finalized slot {finalized}, past the fork point {}: \
             the blocks after it cannot be abandoned any more",
            self.fork_point
        );
        drop(self.node.take());
        let copy = self.copy.take().expect("fork() first");
        let resumed = SolanaValidator::resume(copy)
            .await
            .expect("resume the copied ledger");
        self.relay.switch(resumed.rpc_url());
        self.node = Some(resumed);
        if !payments.is_empty() {
            pay(self.node(), &self.payer, payments).await;
        }
    }
}
