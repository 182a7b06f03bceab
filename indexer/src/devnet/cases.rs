//! The watch loop's cases, written once over [`TestChain`] and run on every
//! chain: the scripted chain (milliseconds) and the real nodes. Each chain's
//! file stamps the cases it can produce with [`suite!`](crate::suite); a
//! case a node cannot produce is left out there, never faked. Here, not in
//! a test binary, because two test binaries run it: `it` and `solana_fork`,
//! whose validators can fork.

use std::any::Any;
use std::time::Duration;

use crate::deposits::watcher::{DepositSource, FETCH_AHEAD, Watcher};
use crate::devnet::TestDb;
use chains::Chain;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;
use uuid::Uuid;

use super::deposits::*;

/// Loop settings a case asks of every chain's watcher.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    pub start_height: u64,
    /// Where finality is a depth below the tip (all but Solana).
    pub confirmations: u64,
    pub max_reorg_depth: u64,
    pub batch_blocks: u64,
    pub concurrency: usize,
    pub fetch_ahead: usize,
}

impl SuiteConfig {
    fn new(start_height: u64, confirmations: u64, max_reorg_depth: u64) -> Self {
        Self {
            start_height,
            confirmations,
            max_reorg_depth,
            batch_blocks: 5,
            concurrency: 3,
            fetch_ahead: FETCH_AHEAD,
        }
    }
}

/// Keeps cases that share one node apart: each takes its own payer and
/// deposit addresses (the Solana tests share one validator).
#[derive(Clone, Copy, Debug)]
pub enum Lane {
    Restart = 1,
    Reorgs,
    TooDeep,
    Pruned,
    Behind,
    Malformed,
}

/// A chain the cases drive: a node (or a script) that takes payments and
/// produces blocks, and the chain's watcher over it.
#[allow(async_fn_in_trait)]
pub trait TestChain: Sized {
    type Source: DepositSource;
    const CHAIN: Chain;
    /// Reorgs unwind exactly the blocks produced since [`Forks::fork`]; a
    /// forked Solana validator's unwind the slots its abandoned fork had.
    const EXACT_DEPTH: bool = true;
    /// Final at a depth below the tip, so a reorg can take back credits;
    /// Solana credits only at `finalized`, which a fork never reverts.
    const FINAL_BY_DEPTH: bool = true;
    /// Long enough for several steps of its watcher: a halted or waiting
    /// watcher that stays put this long stays put.
    const A_FEW_POLLS: Duration;
    /// How soon after a reorg or restart its watcher must have halted.
    const HALTS_WITHIN: Duration = Duration::from_secs(30);

    async fn start(lane: Lane) -> Self;

    /// A fresh, migrated database for a case.
    async fn database() -> CaseDb {
        CaseDb::from(TestDb::new().await.expect("database"))
    }

    /// `count` users with one deposit address each, alike in every `db`.
    async fn users(&self, db: &PgPool, count: usize) -> Vec<(Uuid, String)>;

    /// Pays each (address, amount) in the native asset (one transaction
    /// for all where the chain has multi-output transactions); the next
    /// block produced includes it.
    async fn pay(&mut self, payments: &[(String, u64)]);

    /// Produces `blocks` blocks.
    async fn mine(&mut self, blocks: u64);

    async fn tip(&self) -> (u64, String);

    fn watcher(&self, db: &PgPool, config: &SuiteConfig) -> Watcher<Self::Source>;

    /// Waits until the watcher on `db` has indexed the tip as of the call,
    /// with everything final at it credited.
    async fn wait_indexed(&self, db: &PgPool, config: &SuiteConfig);

    /// Waits until `db`'s watcher stands where any watcher of this chain
    /// would: on a chain that stands still, [`Self::wait_indexed`]; on one
    /// that moves on, with everything paid so far final and credited.
    async fn settle(&self, db: &PgPool, config: &SuiteConfig) {
        self.wait_indexed(db, config).await;
    }
}

/// A chain that can abandon blocks it produced.
#[allow(async_fn_in_trait)]
pub trait Forks: TestChain {
    /// The reorgs [`reorgs_of_every_depth_match_indexing_from_scratch`]
    /// runs: of depth 1 to this.
    const REORG_DEPTHS: u64;

    /// Marks the fork point; returns its height. The blocks produced from
    /// here on are the ones [`Self::reorg`] replaces.
    async fn fork(&mut self) -> u64;

    /// Replaces every block since the fork point with a branch the node
    /// prefers, whose first block pays `payments`.
    async fn reorg(&mut self, payments: &[(String, u64)]);
}

/// A chain whose node can lose blocks the watcher still needs.
#[allow(async_fn_in_trait)]
pub trait Prunes: TestChain {
    /// The watcher's node no longer serves blocks below `height`.
    async fn prune_below(&mut self, height: u64);
}

/// A chain whose watcher can be served by a node behind the others.
#[allow(async_fn_in_trait)]
pub trait FallsBehind: TestChain {
    /// A replica stops following the chain at the current tip.
    async fn lag(&mut self);
    /// The watcher's node is now the lagging replica.
    async fn serve_lagging(&mut self);
    /// The replica catches up with the chain.
    async fn catch_up(&mut self);
}

/// A chain whose node can answer garbage.
pub trait Garbles: TestChain {
    /// The next `calls` calls answer `Malformed`.
    fn malformed(&self, calls: u64);
    fn malformed_left(&self) -> u64;
}

/// Stamps one `#[tokio::test]` per case for one chain, in a module
/// `suite` of the invoking module.
#[macro_export]
macro_rules! suite {
    ($chain:ty => $($case:ident),+ $(,)?) => {
        mod suite {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    $crate::devnet::cases::$case::<$chain>().await;
                }
            )+
        }
    };
}

/// A case's database, with whatever keeps it alive.
#[derive(Debug)]
pub struct CaseDb {
    pool: PgPool,
    _owner: Box<dyn Any>,
}

impl CaseDb {
    pub fn new(pool: PgPool, owner: impl Any) -> Self {
        Self {
            pool,
            _owner: Box::new(owner),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Drops the database after closing its connections: dropping one with
    /// connections open waits for the server to end them.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

impl From<TestDb> for CaseDb {
    fn from(db: TestDb) -> Self {
        Self::new(db.pool().clone(), db)
    }
}

async fn count(db: &CaseDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db.pool())
        .await
        .expect("count")
}

async fn cursor_height(db: &CaseDb, chain: Chain) -> i64 {
    cursor(db.pool(), chain).await.map_or(0, |c| c.0)
}

async fn halt_reason(halted: &mut watch::Receiver<Option<String>>, limit: Duration) -> String {
    tokio::time::timeout(limit, halted.wait_for(Option::is_some))
        .await
        .expect("halts in time")
        .expect("watcher alive")
        .clone()
        .unwrap_or_default()
}

/// The start of a case with one user: the chain on `lane`, the case's
/// database, and the user's deposit address.
async fn one_user_case<C: TestChain>(lane: Lane) -> (C, CaseDb, String) {
    let chain = C::start(lane).await;
    let db = C::database().await;
    let users = chain.users(db.pool(), 1).await;
    let address = users[0].1.clone();
    (chain, db, address)
}

/// Asserts that a halted watcher stays put for a few of its polls: the
/// live deposits still `before`, the cursor still at `height`; then stops
/// it and drops the database.
async fn assert_stays_halted<C: TestChain>(
    running: Running,
    db: CaseDb,
    before: Vec<LiveDeposit>,
    height: i64,
) {
    tokio::time::sleep(C::A_FEW_POLLS).await;
    assert_eq!(live_deposits(db.pool()).await, before);
    assert_eq!(cursor_height(&db, C::CHAIN).await, height);
    running.stop().await;
    db.close().await;
}

/// `payments` in one transaction, in a block of their own.
async fn pay_block<C: TestChain>(chain: &mut C, payments: &[(String, u64)]) {
    chain.pay(payments).await;
    chain.mine(1).await;
}

/// The start of a case that ends as indexing from scratch: the chain on
/// `lane`, the case's database with `users` users, and a second database,
/// created side by side, for [`assert_matches_scratch`].
async fn scratch_case<C: TestChain>(
    lane: Lane,
    users: usize,
) -> (C, CaseDb, CaseDb, Vec<(Uuid, String)>) {
    let chain = C::start(lane).await;
    let (db, scratch) = tokio::join!(C::database(), C::database());
    let users = chain.users(db.pool(), users).await;
    (chain, db, scratch, users)
}

/// Indexes the chain from scratch into `scratch`, a fresh database, set up
/// like `db`, and asserts both ledgers agree, and that `db` has one entry
/// per deposit and kind; then drops both databases.
pub async fn assert_matches_scratch<C: TestChain>(
    chain: &C,
    db: CaseDb,
    scratch: CaseDb,
    users: usize,
    config: &SuiteConfig,
) {
    let _ = chain.users(scratch.pool(), users).await;
    let running = Running::spawn(chain.watcher(scratch.pool(), config));
    chain.settle(scratch.pool(), config).await;
    running.stop().await;
    assert_same_ledgers(db.pool(), scratch.pool(), C::CHAIN).await;
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
    scratch.close().await;
    db.close().await;
}

/// Killing the watcher after any commit of a catch-up, again and again,
/// loses and duplicates nothing.
pub async fn restart_mid_catch_up<C: TestChain>() {
    let (mut chain, db, scratch, users) = scratch_case::<C>(Lane::Restart, 5).await;
    let start_height = chain.tip().await.0 + 1;
    let mut expected = 0;
    for block in 1..=30u64 {
        let payments: Vec<(String, u64)> = (0..3)
            .map(|k| {
                let who = &users[((block + k) % 5) as usize].1;
                (who.clone(), 1_000_000 + 1_000 * block + k)
            })
            .collect();
        expected += payments.iter().map(|p| p.1).sum::<u64>();
        pay_block(&mut chain, &payments).await;
    }
    // One 3-block batch per commit (none fetched ahead to be merged), so
    // the catch-up takes about ten commits to be killed after.
    let config = SuiteConfig {
        batch_blocks: 3,
        concurrency: 1,
        fetch_ahead: 1,
        ..SuiteConfig::new(start_height, 2, 10)
    };
    let end = chain.tip().await.0;
    let mut kills = 0;
    loop {
        // Connections of its own, closed with it: a killed process's
        // transaction rolls back with its connection, while a killed
        // task's connection would go back to a shared pool mid-transaction,
        // its locks held.
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with((*db.pool().connect_options()).clone())
            .await
            .expect("watcher pool");
        let watcher = chain.watcher(&pool, &config);
        let mut progress = watcher.progress();
        let task = tokio::spawn(watcher.run(tokio_util::sync::CancellationToken::new()));
        let done = tokio::time::timeout(Duration::from_secs(30), progress.changed())
            .await
            .is_err();
        task.abort();
        let _ = task.await;
        pool.close().await;
        if done || cursor_height(&db, C::CHAIN).await >= end as i64 {
            break;
        }
        kills += 1;
    }
    assert!(kills >= 5, "killed {kills} times");
    let running = Running::spawn(chain.watcher(db.pool(), &config));
    chain.settle(db.pool(), &config).await;
    running.stop().await;
    assert_live_deposits_and_sum(
        db.pool(),
        90,
        "every payment once",
        "purpose IN ('available', 'pending')",
        expected,
    )
    .await;
    assert_matches_scratch(&chain, db, scratch, 5, &config).await;
}

/// Reorgs of every depth from 1 to [`Forks::REORG_DEPTHS`] while the watcher runs, each
/// abandoning a deposit per block, some of them credited, and paying one of
/// them again and another user instead: the ledger ends as indexing the
/// final chain from scratch leaves it.
pub async fn reorgs_of_every_depth_match_indexing_from_scratch<C: Forks>() {
    let (mut chain, db, scratch, users) = scratch_case::<C>(Lane::Reorgs, 4).await;
    let to: Vec<String> = users.iter().map(|u| u.1.clone()).collect();
    let config = SuiteConfig::new(chain.tip().await.0 + 1, 3, 20);
    let running = Running::spawn(chain.watcher(db.pool(), &config));
    let mut credited_reversals = 0;
    for depth in 1..=C::REORG_DEPTHS {
        let fork = chain.fork().await;
        for level in 0..depth {
            let who = to[(level % 4) as usize].clone();
            pay_block(&mut chain, &[(who, 1_000_000 + depth * 10 + level)]).await;
        }
        chain.wait_indexed(db.pool(), &config).await;
        let credited = count(
            &db,
            &format!(
                "SELECT count(*) FROM deposits WHERE status = 'credited' AND block_height > {fork}"
            ),
        )
        .await;
        let orphaned = count(
            &db,
            "SELECT count(*) FROM deposits WHERE status = 'orphaned'",
        )
        .await;
        credited_reversals += credited;

        // The new branch pays the first deposit again (same recipient and
        // amount, a new transaction) and another user instead.
        let replacement = [
            (to[0].clone(), 1_000_000 + depth * 10),
            (to[3].clone(), 1_000_077 + depth),
        ];
        chain.reorg(&replacement).await;
        chain.wait_indexed(db.pool(), &config).await;
        let now = count(
            &db,
            "SELECT count(*) FROM deposits WHERE status = 'orphaned'",
        )
        .await;
        assert!(
            now - orphaned >= depth as i64,
            "depth {depth}: {} orphaned, expected at least {depth}",
            now - orphaned
        );
    }
    chain.settle(db.pool(), &config).await;
    running.stop().await;
    if C::FINAL_BY_DEPTH {
        assert!(
            credited_reversals > 0,
            "some reorgs took back credited deposits"
        );
    }
    let reversed = count(
        &db,
        "SELECT count(*) FROM deposits WHERE status = 'orphaned' AND credit_entry_id IS NOT NULL",
    )
    .await;
    assert_eq!(reversed, credited_reversals);
    assert_matches_scratch(&chain, db, scratch, 4, &config).await;
}

/// A reorg deeper than `max_reorg_depth` halts the watcher and changes
/// nothing, for good.
pub async fn a_reorg_deeper_than_the_limit_halts_the_watcher<C: Forks>() {
    let (mut chain, db, alice) = one_user_case::<C>(Lane::TooDeep).await;
    let config = SuiteConfig::new(chain.tip().await.0 + 1, 2, 3);
    let watcher = chain.watcher(db.pool(), &config);
    let mut halted = watcher.halted();
    let running = Running::spawn(watcher);
    pay_block(&mut chain, &[(alice.clone(), 1_000_005)]).await;
    chain.fork().await;
    for _ in 0..5 {
        pay_block(&mut chain, &[(alice.clone(), 1_000_005)]).await;
    }
    chain.wait_indexed(db.pool(), &config).await;
    let before = live_deposits(db.pool()).await;
    assert_eq!(before.len(), 6);
    let height = cursor_height(&db, C::CHAIN).await;

    chain.reorg(&[]).await;
    let reason = halt_reason(&mut halted, C::HALTS_WITHIN).await;
    assert!(reason.contains("max_reorg_depth 3"), "{reason}");
    let depth: u64 = reason
        .split("reorg of depth ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no depth in: {reason}"));
    if C::EXACT_DEPTH {
        assert!(reason.contains("depth 5 "), "{reason}");
    } else {
        assert!(depth >= 5, "{reason}");
    }
    // Nothing was unwound, and the watcher stays halted.
    assert_stays_halted::<C>(running, db, before, height).await;
}

/// A node that no longer has blocks the watcher still needs halts it:
/// nothing is indexed past them.
pub async fn pruned_history_halts_the_watcher<C: Prunes>() {
    let (mut chain, db, alice) = one_user_case::<C>(Lane::Pruned).await;
    let config = SuiteConfig::new(chain.tip().await.0 + 1, 2, 10);
    let running = Running::spawn(chain.watcher(db.pool(), &config));
    for _ in 0..3 {
        pay_block(&mut chain, &[(alice.clone(), 1_000_000)]).await;
    }
    chain.wait_indexed(db.pool(), &config).await;
    running.stop().await;
    let at = cursor_height(&db, C::CHAIN).await;
    // Blocks the stopped watcher has not seen, then gone from its node.
    for _ in 0..3 {
        pay_block(&mut chain, &[(alice.clone(), 2_000_000)]).await;
    }
    chain.prune_below(at as u64 + 2).await;
    let before = live_deposits(db.pool()).await;
    assert_eq!(before.len(), 3);

    let watcher = chain.watcher(db.pool(), &config);
    let mut halted = watcher.halted();
    let running = Running::spawn(watcher);
    let reason = halt_reason(&mut halted, C::HALTS_WITHIN).await;
    assert!(
        reason.contains("no longer has the blocks") && reason.contains("rpc_url"),
        "{reason}"
    );
    assert_stays_halted::<C>(running, db, before, at).await;
}

/// A node behind the cursor is waited for, not taken for a reorg; once it
/// catches up the watcher goes on as if nothing happened.
pub async fn a_node_behind_the_cursor_is_waited_for<C: FallsBehind>() {
    let (mut chain, db, scratch, users) = scratch_case::<C>(Lane::Behind, 2).await;
    let config = SuiteConfig::new(chain.tip().await.0 + 1, 2, 10);
    let running = Running::spawn(chain.watcher(db.pool(), &config));
    for (k, (_, address)) in users.iter().enumerate() {
        pay_block(&mut chain, &[(address.clone(), 1_000_000 + k as u64)]).await;
    }
    chain.wait_indexed(db.pool(), &config).await;
    chain.lag().await;
    let lagging = chain.tip().await;
    for k in 0..3 {
        pay_block(
            &mut chain,
            &[(users[k % 2].1.clone(), 2_000_000 + k as u64)],
        )
        .await;
    }
    chain.wait_indexed(db.pool(), &config).await;
    let before = cursor(db.pool(), C::CHAIN).await;

    chain.serve_lagging().await;
    let pool = db.pool().clone();
    eventually(
        "the watcher to read the lagging node",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            let lagging = lagging.0;
            async move {
                crate::chain_heads::recorded_head(&pool, C::CHAIN)
                    .await
                    .expect("head")
                    .is_some_and(|h| h.height == lagging)
            }
        },
    )
    .await;
    // Several polls on the lagging node: no reorg, nothing unwound.
    tokio::time::sleep(C::A_FEW_POLLS).await;
    assert_eq!(cursor(db.pool(), C::CHAIN).await, before);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM deposits WHERE status = 'orphaned'"
        )
        .await,
        0
    );

    chain.catch_up().await;
    pay_block(&mut chain, &[(users[0].1.clone(), 3_000_000)]).await;
    chain.settle(db.pool(), &config).await;
    running.stop().await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM deposits WHERE status = 'orphaned'"
        )
        .await,
        0,
        "a node behind is not a reorg"
    );
    assert_eq!(live_deposits(db.pool()).await.len(), 6);
    assert_matches_scratch(&chain, db, scratch, 2, &config).await;
}

/// Malformed replies fail the step and are retried; nothing is lost or
/// doubled.
pub async fn malformed_replies_are_retried<C: Garbles>() {
    let (mut chain, db, scratch, users) = scratch_case::<C>(Lane::Malformed, 3).await;
    let config = SuiteConfig {
        batch_blocks: 2,
        ..SuiteConfig::new(chain.tip().await.0 + 1, 2, 10)
    };
    for block in 0..20u64 {
        let who = users[(block % 3) as usize].1.clone();
        pay_block(&mut chain, &[(who, 1_000_000 + block)]).await;
    }
    chain.malformed(4);
    let running = Running::spawn(chain.watcher(db.pool(), &config));
    chain.settle(db.pool(), &config).await;
    running.stop().await;
    assert_eq!(chain.malformed_left(), 0, "every garbled reply was read");
    assert_eq!(live_deposits(db.pool()).await.len(), 20);
    assert_matches_scratch(&chain, db, scratch, 3, &config).await;
}
