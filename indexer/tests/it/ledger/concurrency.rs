use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indexer::Error;
use indexer::devnet::TestDb;
use indexer::ledger::{Amount, EntryKind, IdempotencyKey, Ledger, PlaceHold};
use uuid::Uuid;

use crate::support::{assert_invariants, fund, ledger_with_assets, transfer};

const TASKS: usize = 64;
const FUNDS: u64 = 100;
const ROUNDS: usize = 3;

/// Watches the spender's available balance while tasks run; it must never
/// be observed below zero.
fn watch_balance(
    ledger: Ledger,
    owner: Uuid,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut samples = 0;
        while !stop.load(Ordering::Relaxed) {
            let rows: Vec<String> =
                sqlx::query_scalar("SELECT balance::text FROM balances WHERE owner_id = $1")
                    .bind(owner)
                    .fetch_all(ledger.pool())
                    .await
                    .expect("sample");
            assert!(
                rows.iter().all(|b| !b.starts_with('-')),
                "negative balance observed: {rows:?}"
            );
            samples += 1;
            tokio::task::yield_now().await;
        }
        samples
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_spenders_of_one_balance_never_overdraw() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (spender, sink) = (Uuid::new_v4(), Uuid::new_v4());
    for round in 0..ROUNDS {
        fund(&ledger, spender, "BTC", FUNDS).await;
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = watch_balance(ledger.clone(), spender, Arc::clone(&stop));
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                let mut spent = 0u64;
                for attempt in 0.. {
                    let reference = format!("spend-{round}-{task}-{attempt}");
                    let key = IdempotencyKey::new(spender.to_string(), reference.clone());
                    match ledger
                        .post(&key, &transfer(spender, sink, "BTC", 1, &reference))
                        .await
                    {
                        Ok(_) => spent += 1,
                        Err(Error::InsufficientFunds) => break,
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
                spent
            }));
        }
        let mut succeeded = 0;
        for task in tasks {
            succeeded += task.await.expect("task");
        }
        stop.store(true, Ordering::Relaxed);
        assert!(watcher.await.expect("watcher") > 0);
        assert_eq!(
            succeeded, FUNDS,
            "round {round}: exactly the funded amount is spent"
        );
        assert_eq!(
            ledger
                .balance(spender, "BTC")
                .await
                .expect("balance")
                .available,
            Amount::ZERO
        );
    }
    assert_eq!(
        ledger.balance(sink, "BTC").await.expect("sink").available,
        Amount::from_u64(FUNDS * ROUNDS as u64)
    );
    assert_invariants(db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_holders_of_one_balance_never_overdraw() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let owner = Uuid::new_v4();
    for round in 0..ROUNDS {
        fund(&ledger, owner, "ETH", FUNDS).await;
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                let mut held = 0u64;
                for attempt in 0.. {
                    let reference = format!("hold-{round}-{task}-{attempt}");
                    let request = PlaceHold {
                        owner,
                        asset: "ETH".into(),
                        amount: Amount::from_u64(1),
                        kind: EntryKind::WithdrawalHold,
                        reference: reference.clone(),
                        metadata: serde_json::json!({}),
                    };
                    match ledger
                        .place_hold(&IdempotencyKey::new(owner.to_string(), reference), &request)
                        .await
                    {
                        Ok(_) => held += 1,
                        Err(Error::InsufficientFunds) => break,
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
                held
            }));
        }
        let mut succeeded = 0;
        for task in tasks {
            succeeded += task.await.expect("task");
        }
        assert_eq!(succeeded, FUNDS, "round {round}");
        let balance = ledger.balance(owner, "ETH").await.expect("balance");
        assert_eq!(balance.available, Amount::ZERO);
        assert_eq!(balance.held, Amount::from_u64(FUNDS * (round as u64 + 1)));
    }
    let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM holds WHERE owner_id = $1")
        .bind(owner)
        .fetch_one(db.pool())
        .await
        .expect("holds");
    assert_eq!(holds, (FUNDS as usize * ROUNDS) as i64);
    assert_invariants(db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_retries_of_one_key_have_one_effect() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    fund(&ledger, alice, "USDC", 500).await;
    let key = IdempotencyKey::new(alice.to_string(), "pay-bob-once");
    let request = transfer(alice, bob, "USDC", 300, "pay-bob-once");

    let mut tasks = Vec::new();
    for _ in 0..1_000 {
        let (ledger, key, request) = (ledger.clone(), key.clone(), request.clone());
        tasks.push(tokio::spawn(
            async move { ledger.post(&key, &request).await },
        ));
    }
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.expect("task").expect("every retry succeeds"));
    }
    assert!(
        responses.iter().all(|r| *r == responses[0]),
        "identical responses"
    );
    let entries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM entries WHERE reference = 'pay-bob-once'")
            .fetch_one(db.pool())
            .await
            .expect("count");
    assert_eq!(entries, 1);
    assert_eq!(
        ledger
            .balance(alice, "USDC")
            .await
            .expect("alice")
            .available,
        Amount::from_u64(200)
    );
    assert_eq!(
        ledger.balance(bob, "USDC").await.expect("bob").available,
        Amount::from_u64(300)
    );

    let different = transfer(alice, bob, "USDC", 301, "pay-bob-once");
    let refused = ledger.post(&key, &different).await;
    assert!(
        matches!(refused, Err(Error::IdempotencyConflict { ref key }) if key == "pay-bob-once"),
        "{refused:?}"
    );
    // The same key in another scope is another key.
    let other_scope = IdempotencyKey::new(bob.to_string(), "pay-bob-once");
    let bounced = ledger
        .post(
            &other_scope,
            &transfer(bob, alice, "USDC", 1, "bob-pays-back"),
        )
        .await;
    assert!(bounced.is_ok(), "{bounced:?}");
    assert_invariants(db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_transfers_between_two_users_never_deadlock() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    fund(&ledger, alice, "BTC", 1_000).await;
    fund(&ledger, bob, "BTC", 1_000).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let ledger = ledger.clone();
        let (from, to) = if i % 2 == 0 {
            (alice, bob)
        } else {
            (bob, alice)
        };
        tasks.push(tokio::spawn(async move {
            let reference = format!("pingpong-{i}");
            ledger
                .post(
                    &IdempotencyKey::new("pingpong", reference.clone()),
                    &transfer(from, to, "BTC", 3, &reference),
                )
                .await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("transfer");
    }
    assert_eq!(
        ledger.balance(alice, "BTC").await.expect("alice").available,
        Amount::from_u64(1_000)
    );
    assert_invariants(db.pool()).await;
}
