use std::time::Duration;

use alloy_primitives::{Address, U256};
use chains::Chain;
use chains::devnet::{Anvil, TestToken};
use indexer::deposits::DepositStore;
use indexer::deposits::ethereum::{EthereumWatchConfig, EthereumWatcher, Token};
use indexer::devnet::TestDb;
use indexer::ledger::{Asset, Ledger};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;

const ETH: Chain = Chain::Ethereum;
const TOKEN_ASSET: &str = "TUSD";

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.expect("watcher task");
    }
}

fn start(anvil: &Anvil, db: &TestDb, config: EthereumWatchConfig) -> Running {
    let store = DepositStore::new(Ledger::new(db.pool().clone()), ETH, config.max_reorg_depth);
    let watcher = EthereumWatcher::new(anvil.client().clone(), store, config);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(watcher.run(cancel.clone()));
    Running { cancel, task }
}

fn by_depth(confirmations: u64, start_height: u64, tokens: Vec<Token>) -> EthereumWatchConfig {
    EthereumWatchConfig {
        start_height: Some(start_height),
        use_finalized_tag: false,
        confirmations,
        max_reorg_depth: 20,
        batch_blocks: 5,
        concurrency: 3,
        poll_interval: Duration::from_millis(50),
        tokens,
    }
}

async fn register_token(db: &TestDb, token: &TestToken, decimals: u8) -> Token {
    Ledger::new(db.pool().clone())
        .register_asset(&Asset {
            code: TOKEN_ASSET.into(),
            chain: ETH,
            decimals,
            contract: Some(token.address.to_checksum(None)),
        })
        .await
        .expect("register token");
    Token {
        contract: token.address,
        asset: TOKEN_ASSET.into(),
    }
}

async fn tip(anvil: &Anvil) -> (u64, String) {
    use chains::HeadSource;
    let head = anvil.client().head().await.expect("head");
    (head.height, head.hash.expect("hash"))
}

/// Waits until the watcher stands on the node's tip and nothing at or
/// below `final_height` is still pending.
async fn wait_synced(anvil: &Anvil, db: &TestDb, final_height: u64) {
    let (height, hash) = tip(anvil).await;
    let pool = db.pool().clone();
    eventually(
        "the watcher to reach the tip",
        Duration::from_secs(60),
        || {
            let pool = pool.clone();
            let hash = hash.clone();
            async move {
                let at_tip = cursor(&pool, ETH).await == Some((height as i64, hash));
                let unconfirmed: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM deposits WHERE status = 'pending' AND block_height <= $1",
                )
                .bind(final_height as i64)
                .fetch_one(&pool)
                .await
                .expect("pending");
                at_tip && unconfirmed == 0
            }
        },
    )
    .await;
}

fn addr(text: &str) -> Address {
    text.parse().expect("address")
}

async fn balance(db: &TestDb, address: &str, asset: &str) -> (String, String) {
    let all = balances_by_address(db.pool(), ETH).await;
    all.get(&(address.to_owned(), asset.to_owned()))
        .map(|(a, p, _)| (a.clone(), p.clone()))
        .unwrap_or_else(|| ("0".into(), "0".into()))
}

#[tokio::test]
async fn eth_and_token_deposits_become_available_at_the_finalized_tag() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses(db.pool(), ETH, 2).await;
    let (alice, bob) = (addr(&users[0].1), addr(&users[1].1));
    let from = Anvil::DEV_ACCOUNT;
    let token = anvil.deploy_test_token(6).await.expect("token");
    let rogue = anvil.deploy_test_token(6).await.expect("rogue token");
    for t in [token, rogue] {
        anvil
            .send(
                from,
                t.address,
                U256::ZERO,
                &TestToken::mint(from, U256::from(1_000_000_000u64)),
                None,
            )
            .await
            .expect("mint");
    }
    anvil.mine(1).await.expect("mine");
    let allowed = register_token(&db, &token, 6).await;
    let start_height = tip(&anvil).await.0 + 1;
    let config = EthereumWatchConfig {
        start_height: Some(start_height),
        poll_interval: Duration::from_millis(50),
        tokens: vec![allowed],
        ..EthereumWatchConfig::default()
    };
    let running = start(&anvil, &db, config);

    anvil
        .request("evm_setAutomine", json!([false]))
        .await
        .expect("automine off");
    let one_eth = U256::from(10u64).pow(U256::from(18));
    anvil
        .send(from, alice, one_eth, &[], None)
        .await
        .expect("eth");
    anvil
        .send(
            from,
            token.address,
            U256::ZERO,
            &TestToken::transfer(alice, U256::from(5_250_000)),
            None,
        )
        .await
        .expect("token");
    // Not deposits: a rogue contract's identical event, a reverted token
    // transfer that emitted its event first, ETH to an unwatched address.
    anvil
        .send(
            from,
            rogue.address,
            U256::ZERO,
            &TestToken::transfer(alice, U256::from(7)),
            None,
        )
        .await
        .expect("rogue");
    anvil
        .send(
            from,
            token.address,
            U256::ZERO,
            &TestToken::transfer_then_revert(bob, U256::from(9)),
            Some(200_000),
        )
        .await
        .expect("reverted");
    anvil
        .send(from, Address::repeat_byte(0x77), one_eth, &[], None)
        .await
        .expect("unwatched");
    anvil.mine(1).await.expect("mine");
    // ETH to bob while his address runs reverting code: mined, status 0.
    anvil
        .request("anvil_setCode", json!([bob, "0x60006000fd"]))
        .await
        .expect("set code");
    let failed = anvil
        .send(from, bob, one_eth, &[], Some(100_000))
        .await
        .expect("failed eth");
    anvil.mine(1).await.expect("mine");
    assert!(!anvil.succeeded(failed).await.expect("receipt"));
    anvil
        .request("anvil_setCode", json!([bob, "0x"]))
        .await
        .expect("clear code");
    let deposit_block = start_height;

    let pool = db.pool().clone();
    let alice_text = users[0].1.clone();
    eventually("alice's pending deposits", Duration::from_secs(30), || {
        let pool = pool.clone();
        let alice = alice_text.clone();
        async move {
            let all = balances_by_address(&pool, ETH).await;
            all.get(&(alice.clone(), "ETH".into()))
                .map(|b| b.1.as_str())
                == Some("1000000000000000000")
                && all.get(&(alice, TOKEN_ASSET.into())).map(|b| b.1.as_str()) == Some("5250000")
        }
    })
    .await;
    assert_eq!(
        balance(&db, &users[0].1, "ETH").await.0,
        "0",
        "not available before finality"
    );

    // anvil finalizes latest - 64: one block short of it, still pending.
    let (height, _) = tip(&anvil).await;
    anvil.mine(deposit_block + 63 - height).await.expect("mine");
    wait_synced(&anvil, &db, 0).await;
    assert_eq!(
        balance(&db, &users[0].1, "ETH").await,
        ("0".into(), "1000000000000000000".into())
    );
    anvil.mine(1).await.expect("mine");
    let pool = db.pool().clone();
    let alice = users[0].1.clone();
    eventually("alice's credit", Duration::from_secs(30), || {
        let pool = pool.clone();
        let alice = alice.clone();
        async move {
            let all = balances_by_address(&pool, ETH).await;
            all.get(&(alice.clone(), "ETH".into()))
                .map(|b| (b.0.as_str(), b.1.as_str()))
                == Some(("1000000000000000000", "0"))
                && all
                    .get(&(alice, TOKEN_ASSET.into()))
                    .map(|b| (b.0.as_str(), b.1.as_str()))
                    == Some(("5250000", "0"))
        }
    })
    .await;
    running.stop().await;

    let live = live_deposits(db.pool()).await;
    assert_eq!(live.len(), 2, "only the two real deposits: {live:?}");
    assert!(live.iter().all(|d| d.5 == "credited" && d.2 == users[0].1));
    assert_eq!(
        balance(&db, &users[1].1, "ETH").await,
        ("0".into(), "0".into())
    );
    assert_eq!(
        balance(&db, &users[1].1, TOKEN_ASSET).await,
        ("0".into(), "0".into())
    );
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}
