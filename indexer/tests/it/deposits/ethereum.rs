use std::time::Duration;

use alloy_primitives::{Address, U256};
use chains::Chain;
use chains::devnet::{Anvil, TestToken};
use indexer::deposits::DepositStore;
use indexer::deposits::ethereum::{EthereumWatchConfig, EthereumWatcher, Token};
use indexer::deposits::watcher::WatchConfig;
use indexer::devnet::TestDb;
use indexer::ledger::{Asset, Ledger};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use indexer::devnet::cases::{Forks, Lane, SuiteConfig, TestChain};

const ETH: Chain = Chain::Ethereum;
const TOKEN_ASSET: &str = "TUSD";

fn start(anvil: &Anvil, db: &TestDb, config: EthereumWatchConfig) -> Running {
    init_logs();
    let store = DepositStore::new(
        Ledger::new(db.pool().clone()),
        ETH,
        config.watch.max_reorg_depth,
    );
    Running::spawn(EthereumWatcher::new(anvil.client().clone(), store, config))
}

fn by_depth(confirmations: u64, start_height: u64, tokens: Vec<Token>) -> EthereumWatchConfig {
    EthereumWatchConfig {
        watch: WatchConfig {
            start_height: Some(start_height),
            max_reorg_depth: 20,
            batch_blocks: 5,
            fetch_concurrency: 3,
            poll_interval: Duration::from_millis(50),
            ..EthereumWatchConfig::default().watch
        },
        use_finalized_tag: false,
        confirmations,
        tokens,
        own_senders: Vec::new(),
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

/// Waits until the watcher stands on the node's tip with nothing pending
/// at or below `final_height`.
async fn wait_synced(anvil: &Anvil, db: &TestDb, final_height: u64) {
    super::wait_synced(db.pool(), ETH, tip(anvil).await, final_height).await;
}

/// A deployed, allow-listed token with a supply held by the dev account.
async fn funded_token(anvil: &Anvil, db: &TestDb) -> (TestToken, Token) {
    let supply = U256::from(10u64).pow(U256::from(15));
    let token = anvil.deploy_minted_token(6, supply).await.expect("token");
    anvil.mine(1).await.expect("mine");
    let allowed = register_token(db, &token, 6).await;
    (token, allowed)
}

fn addr(text: &str) -> Address {
    text.parse().expect("address")
}

async fn balance(db: &TestDb, address: &str, asset: &str) -> (String, String) {
    address_balance(db.pool(), ETH, address, asset).await
}

#[tokio::test]
async fn eth_and_token_deposits_become_available_at_the_finalized_tag() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses(db.pool(), ETH, 2).await;
    let (alice, bob) = (addr(&users[0].1), addr(&users[1].1));
    let from = Anvil::DEV_ACCOUNT;
    let supply = U256::from(1_000_000_000u64);
    let token = anvil.deploy_minted_token(6, supply).await.expect("token");
    let rogue = anvil
        .deploy_minted_token(6, supply)
        .await
        .expect("rogue token");
    anvil.mine(1).await.expect("mine");
    let allowed = register_token(&db, &token, 6).await;
    let start_height = tip(&anvil).await.0 + 1;
    let mut config = EthereumWatchConfig {
        tokens: vec![allowed],
        ..EthereumWatchConfig::default()
    };
    config.watch.start_height = Some(start_height);
    config.watch.poll_interval = Duration::from_millis(50);
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

/// Indexes the node's final chain from scratch into a fresh database set up
/// like `db`, and asserts both ledgers agree.
async fn assert_matches_scratch(
    anvil: &Anvil,
    db: &TestDb,
    users: usize,
    token: Option<&TestToken>,
    config: EthereumWatchConfig,
) {
    let scratch = TestDb::new().await.expect("scratch database");
    let _ = users_with_addresses(scratch.pool(), ETH, users).await;
    if let Some(token) = token {
        register_token(&scratch, token, 6).await;
    }
    let confirmations = config.confirmations;
    let running = start(anvil, &scratch, config);
    let final_height = (tip(anvil).await.0 + 1).saturating_sub(confirmations);
    wait_synced(anvil, &scratch, final_height).await;
    running.stop().await;
    assert_same_ledgers(db.pool(), scratch.pool(), ETH).await;
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}

#[tokio::test]
async fn reorgs_of_depth_one_to_ten_leave_the_ledger_of_the_final_chain() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses(db.pool(), ETH, 4).await;
    let to: Vec<Address> = users.iter().map(|(_, a)| addr(a)).collect();
    let from = Anvil::DEV_ACCOUNT;
    let (token, allowed) = funded_token(&anvil, &db).await;
    let start_height = tip(&anvil).await.0 + 1;
    let config = by_depth(3, start_height, vec![allowed]);
    let running = start(&anvil, &db, config.clone());
    anvil
        .request("evm_setAutomine", json!([false]))
        .await
        .expect("automine off");

    let mut credited_reversals = 0;
    for depth in 1..=10u64 {
        // One block per level with an ETH and a token deposit, then enough
        // blocks on top that the deeper ones are credited before the reorg.
        for level in 0..depth {
            let who = to[(level % 4) as usize];
            anvil
                .send(from, who, U256::from(1_000 + depth * 10 + level), &[], None)
                .await
                .expect("eth");
            anvil
                .send(
                    from,
                    token.address,
                    U256::ZERO,
                    &TestToken::transfer(who, U256::from(depth * 100 + level)),
                    None,
                )
                .await
                .expect("token");
            anvil.mine(1).await.expect("mine");
        }
        let (height, _) = tip(&anvil).await;
        wait_synced(&anvil, &db, height + 1 - 3).await;
        let credited_before: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM deposits WHERE status = 'credited' AND block_height > $1",
        )
        .bind((height - depth) as i64)
        .fetch_one(db.pool())
        .await
        .expect("count");
        credited_reversals += credited_before;

        // The new branch re-mines one of the old deposits (same recipient
        // and amount, new transaction) and pays another user instead.
        let replacement = json!([
            [{"from": from, "to": to[0], "value": format!("{:#x}", 1_000 + depth * 10)}, 0],
            [{"from": from, "to": token.address,
              "data": alloy_primitives::Bytes::from(TestToken::transfer(to[3], U256::from(77 + depth)))}, depth - 1],
        ]);
        anvil
            .request("anvil_reorg", json!([depth, replacement]))
            .await
            .expect("anvil_reorg");
        let (after, _) = tip(&anvil).await;
        assert_eq!(after, height, "anvil_reorg keeps the height");
        wait_synced(&anvil, &db, after + 1 - 3).await;
    }
    running.stop().await;
    assert!(
        credited_reversals > 0,
        "some reorgs took back credited deposits"
    );
    let reversed_credits: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deposits WHERE status = 'orphaned' AND credit_entry_id IS NOT NULL",
    )
    .fetch_one(db.pool())
    .await
    .expect("count");
    assert_eq!(reversed_credits, credited_reversals);
    assert_matches_scratch(&anvil, &db, 4, Some(&token), config).await;
}

#[tokio::test]
async fn killing_the_watcher_after_any_commit_loses_and_duplicates_nothing() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses(db.pool(), ETH, 10).await;
    let to: Vec<Address> = users.iter().map(|(_, a)| addr(a)).collect();
    let from = Anvil::DEV_ACCOUNT;
    let (token, allowed) = funded_token(&anvil, &db).await;
    let start_height = tip(&anvil).await.0 + 1;
    anvil
        .request("evm_setAutomine", json!([false]))
        .await
        .expect("automine off");
    for block in 0..60u64 {
        for k in 0..3u64 {
            let who = to[((block + k) % 10) as usize];
            anvil
                .send(from, who, U256::from(block * 10 + k + 1), &[], None)
                .await
                .expect("eth");
        }
        anvil
            .send(
                from,
                token.address,
                U256::ZERO,
                &TestToken::transfer(to[(block % 10) as usize], U256::from(block + 1)),
                None,
            )
            .await
            .expect("token");
        anvil.mine(1).await.expect("mine");
    }
    // One batch per commit (none fetched ahead to be merged), as in the
    // other restart tests, so every run has commits to be killed after.
    let mut config = by_depth(5, start_height, vec![allowed]);
    config.watch.batch_blocks = 2;
    config.watch.fetch_concurrency = 2;
    config.watch.fetch_ahead = 1;
    let (tip_height, tip_hash) = tip(&anvil).await;
    let mut kills = 0;
    loop {
        // Connections of its own, closed with it, as a killed process's
        // are: a killed task's would go back to a shared pool
        // mid-transaction, its locks held.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect_with((*db.pool().connect_options()).clone())
            .await
            .expect("watcher pool");
        let store = DepositStore::new(Ledger::new(pool.clone()), ETH, config.watch.max_reorg_depth);
        let watcher = EthereumWatcher::new(anvil.client().clone(), store, config.clone());
        let mut progress = watcher.progress();
        let task = tokio::spawn(watcher.run(CancellationToken::new()));
        // Abort right after the (kills % 3 + 1)-th commit of this run.
        let mut commits = 0;
        let done = loop {
            if tokio::time::timeout(Duration::from_secs(30), progress.changed())
                .await
                .is_err()
            {
                break true;
            }
            commits += 1;
            if commits > kills % 3 {
                break false;
            }
        };
        task.abort();
        let _ = task.await;
        pool.close().await;
        if done || cursor(db.pool(), ETH).await == Some((tip_height as i64, tip_hash.clone())) {
            break;
        }
        kills += 1;
    }
    assert!(kills >= 5, "the watcher was killed {kills} times");
    let running = start(&anvil, &db, config.clone());
    wait_synced(&anvil, &db, tip_height + 1 - 5).await;
    running.stop().await;
    let live = live_deposits(db.pool()).await;
    assert_eq!(live.len(), 60 * 4, "every deposit once");
    assert_matches_scratch(&anvil, &db, 10, Some(&token), config).await;
}

#[tokio::test]
async fn a_thousand_addresses_are_each_credited_exactly_once() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses(db.pool(), ETH, 1_000).await;
    let to: Vec<Address> = users.iter().map(|(_, a)| addr(a)).collect();
    let from = Anvil::DEV_ACCOUNT;
    let (token, allowed) = funded_token(&anvil, &db).await;
    let start_height = tip(&anvil).await.0 + 1;
    let running = start(&anvil, &db, by_depth(2, start_height, vec![allowed]));
    anvil
        .request("evm_setAutomine", json!([false]))
        .await
        .expect("automine off");
    for (i, who) in to.iter().enumerate() {
        anvil
            .send(from, *who, U256::from(i + 1), &[], None)
            .await
            .expect("eth");
        if i % 50 == 49 {
            anvil.mine(1).await.expect("mine");
        }
    }
    for chunk in to.chunks(100) {
        anvil
            .send(
                from,
                token.address,
                U256::ZERO,
                &TestToken::transfer_each(chunk, U256::from(3)),
                Some(5_000_000),
            )
            .await
            .expect("token batch");
        anvil.mine(1).await.expect("mine");
    }
    anvil.mine(2).await.expect("mine");
    let (height, _) = tip(&anvil).await;
    wait_synced(&anvil, &db, height - 1).await;
    running.stop().await;

    let balances = balances_by_address(db.pool(), ETH).await;
    for (i, (_, address)) in users.iter().enumerate() {
        let eth = &balances[&(address.clone(), "ETH".to_owned())];
        assert_eq!(
            (eth.0.as_str(), eth.1.as_str()),
            ((i + 1).to_string().as_str(), "0"),
            "{address}"
        );
        let tusd = &balances[&(address.clone(), TOKEN_ASSET.to_owned())];
        assert_eq!((tusd.0.as_str(), tusd.1.as_str()), ("3", "0"), "{address}");
    }
    let credited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deposits WHERE status = 'credited'")
            .fetch_one(db.pool())
            .await
            .expect("count");
    assert_eq!(credited, 2_000);
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}

/// Coffer's own transfers are never deposits: ETH and tokens from one
/// deposit address to another (a sweep gone astray) and from the hot wallet
/// to a deposit address (a gas top-up) credit nothing, while outside
/// payments in the same block are credited.
#[tokio::test]
async fn transfers_from_deposit_addresses_and_the_hot_wallet_are_not_deposits() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses(db.pool(), ETH, 3).await;
    let (alice, bob, carol) = (addr(&users[0].1), addr(&users[1].1), addr(&users[2].1));
    let hot_wallet = addr(
        &deposit_keys()
            .hot_wallet_address(ETH)
            .expect("hot wallet")
            .address,
    );
    let (token, allowed) = funded_token(&anvil, &db).await;
    let outsider = Anvil::DEV_ACCOUNT;
    let one_eth = U256::from(10u64).pow(U256::from(18));
    // Before the watcher's first block: gas money and tokens for the two
    // own senders, which anvil then lets send without their keys.
    for own in [alice, hot_wallet] {
        anvil
            .set_balance(own, one_eth * U256::from(10))
            .await
            .expect("gas money");
        let tokens = anvil
            .send(
                outsider,
                token.address,
                U256::ZERO,
                &TestToken::transfer(own, U256::from(1_000)),
                None,
            )
            .await
            .expect("tokens");
        anvil.mined(tokens).await.expect("mined");
        anvil
            .request("anvil_impersonateAccount", json!([own]))
            .await
            .expect("impersonate");
    }
    let start_height = tip(&anvil).await.0 + 1;
    let mut config = by_depth(2, start_height, vec![allowed]);
    config.own_senders = vec![hot_wallet];
    let running = start(&anvil, &db, config);

    anvil.set_automine(false).await.expect("automine off");
    let transfer = |to, amount: u64| TestToken::transfer(to, U256::from(amount));
    // Own: deposit address to deposit address, hot wallet to deposit address.
    anvil
        .send(alice, bob, one_eth, &[], None)
        .await
        .expect("alice to bob");
    anvil
        .send(alice, token.address, U256::ZERO, &transfer(bob, 11), None)
        .await
        .expect("alice's tokens to bob");
    anvil
        .send(hot_wallet, carol, one_eth / U256::from(2), &[], None)
        .await
        .expect("gas top-up");
    anvil
        .send(
            hot_wallet,
            token.address,
            U256::ZERO,
            &transfer(carol, 13),
            None,
        )
        .await
        .expect("hot wallet tokens to carol");
    // Outside payments in the same block.
    anvil
        .send(outsider, carol, one_eth * U256::from(2), &[], None)
        .await
        .expect("outside ETH");
    anvil
        .send(outsider, token.address, U256::ZERO, &transfer(bob, 5), None)
        .await
        .expect("outside tokens");
    anvil.mine(1).await.expect("mine");
    anvil.mine(2).await.expect("mine");
    let (height, _) = tip(&anvil).await;
    wait_synced(&anvil, &db, height - 1).await;
    running.stop().await;

    let live = live_deposits(db.pool()).await;
    assert_eq!(live.len(), 2, "only the outside payments: {live:?}");
    assert!(live.iter().all(|d| d.5 == "credited"), "{live:?}");
    assert_eq!(
        balance(&db, &users[2].1, "ETH").await,
        ((one_eth * U256::from(2)).to_string(), "0".into())
    );
    assert_eq!(
        balance(&db, &users[1].1, TOKEN_ASSET).await,
        ("5".into(), "0".into())
    );
    for (user, asset) in [(0, "ETH"), (1, "ETH"), (0, TOKEN_ASSET), (2, TOKEN_ASSET)] {
        assert_eq!(
            balance(&db, &users[user].1, asset).await,
            ("0".into(), "0".into()),
            "{} {asset}",
            users[user].1
        );
    }
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}

#[tokio::test]
async fn a_reorg_taking_back_two_credits_of_one_user_after_a_spend_unwinds_once() {
    use indexer::ledger::{AccountRef, Amount, EntryKind, IdempotencyKey, Leg, NewEntry};

    let anvil = Anvil::spawn().await.expect("anvil");
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses(db.pool(), ETH, 2).await;
    let (alice, bob) = (users[0].0, users[1].0);
    let start_height = tip(&anvil).await.0 + 1;
    // Credited two blocks deep, so a reorg of four takes back credits.
    let config = by_depth(2, start_height, Vec::new());
    let running = start(&anvil, &db, config);
    for wei in [1_000u64, 2_000] {
        let sent = anvil
            .send(
                Anvil::DEV_ACCOUNT,
                addr(&users[0].1),
                U256::from(wei),
                &[],
                None,
            )
            .await
            .expect("eth");
        anvil.mined(sent).await.expect("mined");
    }
    anvil.mine(2).await.expect("mine");
    let (height, _) = tip(&anvil).await;
    wait_synced(&anvil, &db, height - 1).await;
    assert_eq!(
        balance(&db, &users[0].1, "ETH").await,
        ("3000".into(), "0".into())
    );

    // Alice moves most of it on before the chain takes it back.
    let ledger = Ledger::new(db.pool().clone());
    let spent = Amount::from_u64(2_500);
    ledger
        .post(
            &IdempotencyKey::new("test", "spend"),
            &NewEntry {
                kind: EntryKind::Transfer,
                reference: "spend".into(),
                metadata: json!({}),
                legs: vec![
                    Leg::decrease(AccountRef::available(alice, "ETH"), spent),
                    Leg::increase(AccountRef::available(bob, "ETH"), spent),
                ],
            },
        )
        .await
        .expect("spend");

    anvil
        .request("anvil_reorg", json!([4, []]))
        .await
        .expect("anvil_reorg");
    anvil.mine(1).await.expect("mine");
    let (height, _) = tip(&anvil).await;
    wait_synced(&anvil, &db, height - 1).await;
    running.stop().await;

    let orphaned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deposits WHERE status = 'orphaned' AND credit_entry_id IS NOT NULL",
    )
    .fetch_one(db.pool())
    .await
    .expect("count");
    assert_eq!(orphaned, 2, "both credits reversed");
    assert_eq!(
        balance(&db, &users[0].1, "ETH").await,
        ("0".into(), "0".into())
    );
    assert_eq!(
        balance(&db, &users[1].1, "ETH").await,
        ("2500".into(), "0".into())
    );
    let system = system_balances(db.pool()).await;
    assert_eq!(
        system
            .get(&("ETH".into(), "suspense".into()))
            .map(String::as_str),
        Some("-2500"),
        "what alice had moved on waits in suspense: {system:?}"
    );
    assert_eq!(
        system.get(&("ETH".into(), "custody".into())),
        None,
        "custody back to zero: {system:?}"
    );
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}

/// The watch loop's cases on anvil: reorgs by `anvil_reorg`, which keeps
/// the height. Pruned history cannot be produced: anvil keeps every block.
pub struct AnvilChain {
    anvil: Anvil,
    fork: u64,
}

impl TestChain for AnvilChain {
    type Source = indexer::deposits::ethereum::EthereumSource;
    const CHAIN: Chain = ETH;
    const A_FEW_POLLS: Duration = Duration::from_millis(300);

    async fn start(_lane: Lane) -> Self {
        init_logs();
        let anvil = Anvil::spawn().await.expect("anvil");
        anvil
            .request("evm_setAutomine", json!([false]))
            .await
            .expect("automine off");
        Self { anvil, fork: 0 }
    }

    async fn users(&self, db: &sqlx::PgPool, count: usize) -> Vec<(uuid::Uuid, String)> {
        users_with_addresses(db, ETH, count).await
    }

    async fn pay(&mut self, payments: &[(String, u64)]) {
        for (to, wei) in payments {
            self.anvil
                .send(Anvil::DEV_ACCOUNT, addr(to), U256::from(*wei), &[], None)
                .await
                .expect("eth");
        }
    }

    async fn mine(&mut self, blocks: u64) {
        self.anvil.mine(blocks).await.expect("mine");
    }

    async fn tip(&self) -> (u64, String) {
        tip(&self.anvil).await
    }

    fn watcher(&self, db: &sqlx::PgPool, config: &SuiteConfig) -> EthereumWatcher {
        let suite = config;
        let mut config = by_depth(suite.confirmations, suite.start_height, Vec::new());
        config.watch.max_reorg_depth = suite.max_reorg_depth;
        config.watch.batch_blocks = suite.batch_blocks;
        config.watch.fetch_concurrency = suite.concurrency;
        config.watch.fetch_ahead = suite.fetch_ahead;
        let store = DepositStore::new(Ledger::new(db.clone()), ETH, config.watch.max_reorg_depth);
        EthereumWatcher::new(self.anvil.client().clone(), store, config)
    }

    async fn wait_indexed(&self, db: &sqlx::PgPool, config: &SuiteConfig) {
        let tip = tip(&self.anvil).await;
        let final_height = (tip.0 + 1).saturating_sub(config.confirmations);
        super::wait_synced(db, ETH, tip, final_height).await;
    }
}

impl Forks for AnvilChain {
    const REORG_DEPTHS: u64 = 10;

    async fn fork(&mut self) -> u64 {
        self.fork = tip(&self.anvil).await.0;
        self.fork
    }

    async fn reorg(&mut self, payments: &[(String, u64)]) {
        let (height, _) = tip(&self.anvil).await;
        let replacement: Vec<_> = payments
            .iter()
            .map(|(to, wei)| {
                json!([{"from": Anvil::DEV_ACCOUNT, "to": addr(to), "value": format!("{wei:#x}")}, 0])
            })
            .collect();
        self.anvil
            .request("anvil_reorg", json!([height - self.fork, replacement]))
            .await
            .expect("anvil_reorg");
        assert_eq!(
            tip(&self.anvil).await.0,
            height,
            "anvil_reorg keeps the height"
        );
    }
}

suite!(AnvilChain =>
    restart_mid_catch_up,
    reorgs_of_every_depth_match_indexing_from_scratch,
    a_reorg_deeper_than_the_limit_halts_the_watcher,
);
