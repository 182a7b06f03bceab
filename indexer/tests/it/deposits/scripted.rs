//! The watch loop's cases on a scripted chain: no node, milliseconds each.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chains::Chain;
use indexer::deposits::DepositStore;
use indexer::deposits::scripted::{Payment, ScriptedChain, ScriptedSource};
use indexer::deposits::watcher::{WatchConfig, Watcher};
use indexer::devnet::TestDb;
use indexer::ledger::Ledger;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use super::*;
use indexer::devnet::cases::{
    CaseDb, FallsBehind, Forks, Garbles, Lane, Prunes, SuiteConfig, TestChain,
};

/// The chain the script stands in for: its addresses and asset.
const CHAIN: Chain = Chain::Ethereum;
/// The watcher's poll, and the tests' own.
const POLL: Duration = Duration::from_millis(5);

/// One database the scripted cases running at a time share, each case
/// database a schema of its own in it: a database costs the server a
/// checkpoint to drop (over a second here), a schema nothing. Dropped when
/// the last case using it ends.
static SHARED: Mutex<(Option<Arc<TestDb>>, usize)> = Mutex::new((None, 0));

/// Holds [`SHARED`]'s database for one case database.
struct SharedUse(Arc<TestDb>);

impl SharedUse {
    async fn acquire() -> Self {
        // One case creates it while the others starting wait.
        static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _creating = CREATING.lock().await;
        {
            let mut shared = SHARED.lock().expect("shared database");
            if let Some(db) = &shared.0 {
                let db = Arc::clone(db);
                shared.1 += 1;
                return Self(db);
            }
        }
        // Its own pool belongs to this test's runtime: closed at once, so
        // dropping the database has no connections to end either.
        let created = TestDb::empty().await.expect("shared database");
        created.pool().close().await;
        let db = Arc::new(created);
        let mut shared = SHARED.lock().expect("shared database");
        shared.0 = Some(Arc::clone(&db));
        shared.1 += 1;
        Self(db)
    }
}

impl Drop for SharedUse {
    fn drop(&mut self) {
        let last = {
            let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
            shared.1 -= 1;
            if shared.1 == 0 { shared.0.take() } else { None }
        };
        // The database goes with the last reference.
        drop(last);
    }
}

/// A fresh, migrated schema in the shared database, its pool's connections
/// bound to it.
async fn shared_schema() -> CaseDb {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let shared = SharedUse::acquire().await;
    let name = format!("case_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let options = shared.0.connect_options().clone();
    let mut admin = PgConnection::connect_with(&options).await.expect("connect");
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&mut admin)
        .await
        .expect("schema");
    let _ = admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.options([("search_path", name.as_str())]))
        .await
        .expect("schema pool");
    // The repository's migrations, without sqlx's lock: it is one per
    // database, and these schemas are apart.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
    let mut migrator = Migrator::new(std::path::Path::new(dir))
        .await
        .expect("migrations");
    migrator.set_locking(false);
    migrator.run(&pool).await.expect("migrate the schema");
    CaseDb::new(pool, shared)
}

pub struct Scripted {
    script: ScriptedChain,
    /// Paid, for the next block.
    paid: Vec<Payment>,
    fork: u64,
    lagging: u64,
}

impl TestChain for Scripted {
    type Source = ScriptedSource;
    const CHAIN: Chain = CHAIN;
    const A_FEW_POLLS: Duration = Duration::from_millis(100);

    async fn start(_lane: Lane) -> Self {
        init_logs();
        Self {
            script: ScriptedChain::new(CHAIN),
            paid: Vec::new(),
            fork: 0,
            lagging: 0,
        }
    }

    async fn database() -> CaseDb {
        shared_schema().await
    }

    async fn users(&self, db: &PgPool, count: usize) -> Vec<(Uuid, String)> {
        users_with_addresses(db, CHAIN, count).await
    }

    async fn pay(&mut self, payments: &[(String, u64)]) {
        self.paid.extend(
            payments
                .iter()
                .map(|(address, amount)| Payment::new(address, "ETH", *amount)),
        );
    }

    async fn mine(&mut self, blocks: u64) {
        for _ in 0..blocks {
            self.script.push(std::mem::take(&mut self.paid));
        }
    }

    async fn tip(&self) -> (u64, String) {
        let tip = self.script.tip();
        (tip.height, tip.hash)
    }

    fn watcher(&self, db: &PgPool, config: &SuiteConfig) -> Watcher<ScriptedSource> {
        self.script.set_confirmations(config.confirmations);
        let store = DepositStore::new(Ledger::new(db.clone()), CHAIN, config.max_reorg_depth);
        self.script.watcher(
            store,
            WatchConfig {
                start_height: Some(config.start_height),
                max_reorg_depth: config.max_reorg_depth,
                batch_blocks: config.batch_blocks,
                fetch_concurrency: config.concurrency,
                fetch_ahead: config.fetch_ahead,
                poll_interval: POLL,
            },
        )
    }

    async fn wait_indexed(&self, db: &PgPool, config: &SuiteConfig) {
        let tip = self.tip().await;
        let final_height = (tip.0 + 1).saturating_sub(config.confirmations);
        wait_synced_polling(db, CHAIN, tip, final_height, POLL).await;
    }
}

impl Forks for Scripted {
    /// At the limit of the suite's `max_reorg_depth`.
    const REORG_DEPTHS: u64 = 20;

    async fn fork(&mut self) -> u64 {
        self.fork = self.script.tip().height;
        self.fork
    }

    /// As many blocks as it replaces (as `anvil_reorg` does); the first
    /// also re-includes the abandoned branch's last transaction, as a
    /// node's mempool would.
    async fn reorg(&mut self, payments: &[(String, u64)]) {
        let tip = self.script.tip().height;
        let depth = tip - self.fork;
        let mut first: Vec<Payment> = payments
            .iter()
            .map(|(address, amount)| Payment::new(address, "ETH", *amount))
            .collect();
        first.extend(self.script.payments(tip).into_iter().last());
        let mut blocks = vec![first];
        blocks.resize(usize::try_from(depth.max(1)).expect("depth"), Vec::new());
        self.script.reorg_with(depth, blocks);
    }
}

impl Prunes for Scripted {
    async fn prune_below(&mut self, height: u64) {
        self.script.prune_below(height);
    }
}

impl FallsBehind for Scripted {
    async fn lag(&mut self) {
        self.lagging = self.script.tip().height;
    }

    async fn serve_lagging(&mut self) {
        self.script.behind(self.lagging);
    }

    async fn catch_up(&mut self) {
        self.script.caught_up();
    }
}

impl Garbles for Scripted {
    fn malformed(&self, calls: u64) {
        self.script.malformed(calls);
    }

    fn malformed_left(&self) -> u64 {
        self.script.malformed_left()
    }
}

suite!(Scripted =>
    restart_mid_catch_up,
    reorgs_of_every_depth_match_indexing_from_scratch,
    a_reorg_deeper_than_the_limit_halts_the_watcher,
    pruned_history_halts_the_watcher,
    a_node_behind_the_cursor_is_waited_for,
    malformed_replies_are_retried,
);
