//! The ledger on a real PostgreSQL, a fresh database per test.

mod concurrency;
mod guards;
mod model;
mod operations;
mod settlement;

use chains::Chain;
use indexer::ledger::{
    AccountPurpose, AccountRef, Amount, Asset, EntryKind, IdempotencyKey, Ledger, Leg, NewEntry,
};
use sqlx::PgPool;
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

/// Credits `amount` to the user's available balance from the external world.
pub async fn fund(ledger: &Ledger, user: Uuid, asset: &str, amount: u64) {
    let reference = format!("fund:{user}:{asset}:{}", Uuid::new_v4());
    let entry = NewEntry {
        kind: EntryKind::Adjustment,
        reference: reference.clone(),
        metadata: serde_json::json!({}),
        legs: vec![
            Leg::decrease(
                AccountRef::system(asset, AccountPurpose::External),
                Amount::from_u64(amount),
            ),
            Leg::increase(AccountRef::available(user, asset), Amount::from_u64(amount)),
        ],
    };
    ledger
        .post(&IdempotencyKey::new("test", reference), &entry)
        .await
        .expect("fund");
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

/// Every invariant the ledger promises, checked with SQL over the whole database.
pub async fn assert_invariants(pool: &PgPool) {
    let unbalanced: Vec<(i64, String)> = sqlx::query_as(
        "SELECT entry_id, asset FROM postings GROUP BY entry_id, asset HAVING sum(amount) <> 0",
    )
    .fetch_all(pool)
    .await
    .expect("per-entry sums");
    assert!(
        unbalanced.is_empty(),
        "entries not summing to zero: {unbalanced:?}"
    );

    let global: Vec<(String, String)> = sqlx::query_as(
        "SELECT asset, sum(amount)::text FROM postings GROUP BY asset HAVING sum(amount) <> 0",
    )
    .fetch_all(pool)
    .await
    .expect("global sums");
    assert!(
        global.is_empty(),
        "assets whose postings do not sum to zero: {global:?}"
    );

    let short: Vec<i64> = sqlx::query_scalar(
        "SELECT e.id FROM entries e LEFT JOIN postings p ON p.entry_id = e.id GROUP BY e.id HAVING count(p.id) < 2",
    )
    .fetch_all(pool)
    .await
    .expect("legs per entry");
    assert!(
        short.is_empty(),
        "entries with fewer than two postings: {short:?}"
    );

    let negative: i64 = sqlx::query_scalar("SELECT count(*) FROM balances WHERE balance < 0")
        .fetch_one(pool)
        .await
        .expect("negative balances");
    assert_eq!(negative, 0, "negative user balances");

    let drifted: Vec<i64> = sqlx::query_scalar(
        "SELECT b.account_id FROM balances b
         LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) p USING (account_id)
         WHERE b.balance <> coalesce(p.total, 0)",
    )
    .fetch_all(pool)
    .await
    .expect("balance rows");
    assert!(
        drifted.is_empty(),
        "balance rows differing from their postings: {drifted:?}"
    );

    let without_event: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM entries e LEFT JOIN outbox o ON o.entry_id = e.id WHERE o.id IS NULL",
    )
    .fetch_one(pool)
    .await
    .expect("outbox");
    assert_eq!(without_event, 0, "entries without their outbox event");

    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM postings p JOIN accounts a ON a.id = p.account_id
         WHERE p.asset <> a.asset OR p.owner_id IS DISTINCT FROM a.owner_id",
    )
    .fetch_one(pool)
    .await
    .expect("posting stamps");
    assert_eq!(
        mismatched, 0,
        "postings whose asset or owner differ from their account"
    );
}
