//! What the test files of this binary share: assets and balances for
//! ledger tests, entries to post, and the ledger's invariants checked over
//! the whole database. Deposit tests take theirs from
//! `indexer::devnet::deposits`, which the `solana_fork` binary shares.

pub use indexer::devnet::ledger::fund;
use std::fmt::Debug;

use chains::Chain;
use indexer::devnet::TestDb;
use indexer::ledger::{AccountRef, Amount, Asset, EntryKind, Ledger, Leg, NewEntry};
use proptest::test_runner::{Config, TestRunner};
use sqlx::PgPool;
use sqlx::postgres::PgRow;
use uuid::Uuid;

pub fn asset(code: &str, chain: Chain, decimals: u8) -> Asset {
    Asset {
        code: code.into(),
        chain,
        decimals,
        contract: None,
    }
}

pub async fn ledger_with_assets(pool: &PgPool) -> Ledger {
    let ledger = Ledger::new(pool.clone());
    ledger
        .register_asset(&asset("BTC", Chain::Bitcoin, 8))
        .await
        .expect("BTC");
    ledger
        .register_asset(&asset("ETH", Chain::Ethereum, 18))
        .await
        .expect("ETH");
    ledger
        .register_asset(&Asset {
            code: "USDC".into(),
            chain: Chain::Ethereum,
            decimals: 6,
            contract: Some("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48".into()),
        })
        .await
        .expect("USDC");
    ledger
}

pub fn transfer(from: Uuid, to: Uuid, asset: &str, amount: u64, reference: &str) -> NewEntry {
    NewEntry {
        kind: EntryKind::Transfer,
        reference: reference.into(),
        metadata: serde_json::json!({ "memo": "test" }),
        legs: vec![
            Leg::decrease(AccountRef::available(from, asset), Amount::from_u64(amount)),
            Leg::increase(AccountRef::available(to, asset), Amount::from_u64(amount)),
        ],
    }
}

/// What a ledger property runs on: a two-worker runtime, a fresh database
/// with [`ledger_with_assets`]'s assets, and a runner of `cases` cases.
pub struct Property {
    pub runtime: tokio::runtime::Runtime,
    pub db: TestDb,
    pub ledger: Ledger,
    pub runner: TestRunner,
}

impl Property {
    pub fn new(cases: u32) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let db = runtime.block_on(TestDb::new()).expect("database");
        let ledger = runtime.block_on(ledger_with_assets(db.pool()));
        let runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        Self {
            runtime,
            db,
            ledger,
            runner,
        }
    }
}

/// Every invariant the ledger promises, checked with SQL over the whole database.
pub async fn assert_invariants(pool: &PgPool) {
    assert_no_rows::<(i64, String)>(
        pool,
        "SELECT entry_id, asset FROM postings GROUP BY entry_id, asset HAVING sum(amount) <> 0",
        "entries not summing to zero",
    )
    .await;
    assert_no_rows::<(String, String)>(
        pool,
        "SELECT asset, sum(amount)::text FROM postings GROUP BY asset HAVING sum(amount) <> 0",
        "assets whose postings do not sum to zero",
    )
    .await;
    assert_no_rows::<(i64,)>(
        pool,
        "SELECT e.id FROM entries e LEFT JOIN postings p ON p.entry_id = e.id GROUP BY e.id HAVING count(p.id) < 2",
        "entries with fewer than two postings",
    )
    .await;
    assert_none(
        pool,
        "SELECT count(*) FROM balances WHERE balance < 0",
        "negative user balances",
    )
    .await;
    assert_no_rows::<(i64,)>(
        pool,
        "SELECT b.account_id FROM balances b
         LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) p USING (account_id)
         WHERE b.balance <> coalesce(p.total, 0)",
        "balance rows differing from their postings",
    )
    .await;
    assert_none(
        pool,
        "SELECT count(*) FROM entries e LEFT JOIN outbox o ON o.entry_id = e.id WHERE o.id IS NULL",
        "entries without their outbox event",
    )
    .await;
    assert_none(
        pool,
        "SELECT count(*) FROM postings p JOIN accounts a ON a.id = p.account_id
         WHERE p.asset <> a.asset OR p.owner_id IS DISTINCT FROM a.owner_id",
        "postings whose asset or owner differ from their account",
    )
    .await;
}

/// Asserts that `sql` returns no rows; `what` names what they would be.
async fn assert_no_rows<T>(pool: &PgPool, sql: &str, what: &str)
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Debug + Send + Unpin,
{
    let rows: Vec<T> = sqlx::query_as(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(rows.is_empty(), "{what}: {rows:?}");
}

/// Asserts that `sql`, a `count(*)`, counts nothing; `what` names what.
async fn assert_none(pool: &PgPool, sql: &str, what: &str) {
    let count: i64 = sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(count, 0, "{what}");
}
