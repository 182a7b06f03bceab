use std::time::{Duration, Instant};

use ::bitcoin::{Address, Amount, Network};
use chains::devnet::Btcd;
use chains::{Chain, HeadSource};
use indexer::deposits::bitcoin::{BitcoinWatchConfig, BitcoinWatcher};
use indexer::deposits::watcher::WatchConfig;
use indexer::deposits::{DepositStore, custody_totals};
use indexer::devnet::TestDb;
use indexer::ledger::Ledger;
use indexer::payouts::bitcoin::{FeePolicy, select, spendable_coins};
use indexer::wallets::Wallets;
use signer::bitcoin::{CustodyInput, Keychain, MAX_REPLACEABLE_SEQUENCE};

use super::*;
use indexer::devnet::cases::{FallsBehind, Forks, Lane, SuiteConfig, TestChain};

const BTC: Chain = Chain::Bitcoin;

fn config(start_height: u64, confirmations: u64) -> BitcoinWatchConfig {
    BitcoinWatchConfig {
        watch: WatchConfig {
            start_height: Some(start_height),
            max_reorg_depth: 10,
            batch_blocks: 3,
            fetch_concurrency: 2,
            poll_interval: Duration::from_millis(50),
            ..BitcoinWatchConfig::default().watch
        },
        confirmations,
        gap_limit: 20,
    }
}

fn watcher(node: &Btcd, db: &TestDb, config: BitcoinWatchConfig) -> BitcoinWatcher {
    init_logs();
    let keys = deposit_keys();
    let store = DepositStore::new(
        Ledger::new(db.pool().clone()),
        BTC,
        config.watch.max_reorg_depth,
    );
    BitcoinWatcher::new(
        node.client().clone(),
        keys.bitcoin_account_xpub(),
        Network::Regtest,
        store,
        config,
    )
}

fn start(node: &Btcd, db: &TestDb, config: BitcoinWatchConfig) -> Running {
    Running::spawn(watcher(node, db, config))
}

async fn tip(node: &Btcd) -> (u64, String) {
    let head = node.client().head().await.expect("head");
    (head.height, head.hash.expect("hash"))
}

/// Waits until the watcher stands on the node's tip with nothing pending
/// at or below the final height.
async fn wait_synced(node: &Btcd, db: &TestDb, confirmations: u64) {
    let tip = tip(node).await;
    let final_height = (tip.0 + 1).saturating_sub(confirmations);
    super::wait_synced(db.pool(), BTC, tip, final_height).await;
}

fn address(text: &str) -> Address {
    text.parse::<Address<_>>()
        .expect("address")
        .require_network(Network::Regtest)
        .expect("regtest")
}

/// A node where segwit is active (btcd's regtest activates it through
/// BIP9 after three 144-block windows) and the first coinbases are mature.
async fn mature_node() -> Btcd {
    let node = Btcd::spawn().await.expect("btcd");
    node.generate(432).await.expect("mine");
    node
}

async fn btc_balance(db: &TestDb, address: &str) -> (String, String) {
    address_balance(db.pool(), BTC, address, "BTC").await
}

/// A mature node, a database with `count` users' deposit addresses, and a
/// watcher (two confirmations) started at the next block.
async fn watched_node(count: usize) -> (Btcd, TestDb, Vec<(uuid::Uuid, String)>, Running) {
    let node = mature_node().await;
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses(db.pool(), BTC, count).await;
    let start_height = tip(&node).await.0 + 1;
    let running = start(&node, &db, config(start_height, 2));
    (node, db, users, running)
}

#[tokio::test]
async fn payments_are_pending_at_one_confirmation_and_available_at_the_policy_depth() {
    let node = mature_node().await;
    let db = TestDb::new().await.expect("database");
    // Alice takes 25 addresses (indexes 0..=24), Bob the next one.
    let wallets = Wallets::new(db.pool().clone(), deposit_keys());
    let users = users_with_addresses(db.pool(), BTC, 2).await;
    let (alice, bob) = (users[0].0, users[1].0);
    let alice_wallet = wallets.list(alice).await.expect("wallets").remove(0);
    let mut alice_addresses = vec![users[0].1.clone()];
    for _ in 1..25 {
        alice_addresses.push(
            wallets
                .new_address(&alice_wallet)
                .await
                .expect("address")
                .address,
        );
    }
    let bob_wallet = wallets.list(bob).await.expect("wallets").remove(0);
    let bob_address = wallets
        .new_address(&bob_wallet)
        .await
        .expect("address")
        .address;
    // Derived from the xpub beyond the last issued index, never issued.
    let never_issued = deposit_keys().address(BTC, 40).expect("derive").address;

    let start_height = tip(&node).await.0 + 1;
    let running = start(&node, &db, config(start_height, 3));
    let (outpoint, value) = node.coinbase_output(1).await.expect("coinbase");
    let txid = node
        .pay(
            outpoint,
            value,
            &[
                (address(&alice_addresses[0]), Amount::from_sat(10_000_000)),
                (address(&alice_addresses[22]), Amount::from_sat(2_500_000)),
                (address(&bob_address), Amount::from_sat(700_000)),
                (address(&never_issued), Amount::from_sat(1_000_000)),
            ],
        )
        .await
        .expect("pay");
    node.generate(1).await.expect("mine");
    wait_synced(&node, &db, 3).await;
    // Balances are per user: alice's two addresses share hers.
    assert_eq!(
        btc_balance(&db, &alice_addresses[0]).await,
        ("0".into(), "12500000".into())
    );
    assert_eq!(
        btc_balance(&db, &bob_address).await,
        ("0".into(), "700000".into())
    );

    node.generate(1).await.expect("mine");
    wait_synced(&node, &db, 3).await;
    assert_eq!(
        btc_balance(&db, &bob_address).await,
        ("0".into(), "700000".into()),
        "2 of 3 confirmations"
    );
    node.generate(1).await.expect("mine");
    wait_synced(&node, &db, 3).await;
    running.stop().await;
    assert_eq!(
        btc_balance(&db, &alice_addresses[0]).await,
        ("12500000".into(), "0".into())
    );
    assert_eq!(
        btc_balance(&db, &bob_address).await,
        ("700000".into(), "0".into())
    );

    let live = live_deposits(db.pool()).await;
    let positions: Vec<(String, i64, String)> = live
        .iter()
        .map(|d| (d.0.clone(), d.1, d.5.clone()))
        .collect();
    let txid = txid.to_string();
    assert_eq!(
        positions,
        vec![
            (txid.clone(), 0, "credited".into()),
            (txid.clone(), 1, "credited".into()),
            (txid, 2, "credited".into()),
        ],
        "the never-issued address is not credited"
    );
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}

/// Waits until `node` has no peer left: btcd drops a peer asynchronously,
/// and blocks must not cross after a disconnect.
async fn wait_no_peers(node: &Btcd) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while node
        .client()
        .call::<serde_json::Value>("getpeerinfo", vec![])
        .await
        .expect("peers")
        .as_array()
        .is_some_and(|p| !p.is_empty())
    {
        assert!(Instant::now() < deadline, "peers did not disconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_same_tip(a: &Btcd, b: &Btcd) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tip(a).await == tip(b).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge: {:?} vs {:?}",
            tip(a).await,
            tip(b).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_node_reorgs_of_depth_one_to_six_unwind_deposits() {
    let a = mature_node().await;
    let b = Btcd::spawn().await.expect("second btcd");
    b.connect(&a).await.expect("connect");
    wait_same_tip(&a, &b).await;

    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses(db.pool(), BTC, 3).await;
    let start_height = tip(&a).await.0 + 1;
    let confirmations = 3;
    let running = start(&a, &db, config(start_height, confirmations));
    let mut credited_then_orphaned = 0;
    for depth in 1..=6u32 {
        b.disconnect(&a).await.expect("disconnect");
        wait_no_peers(&b).await;
        let (outpoint, value) = a.coinbase_output(u64::from(depth)).await.expect("coinbase");
        let who = &users[(depth % 3) as usize].1;
        a.pay(
            outpoint,
            value,
            &[(address(who), Amount::from_sat(100_000 * u64::from(depth)))],
        )
        .await
        .expect("pay");
        a.generate(depth).await.expect("mine on a");
        wait_synced(&a, &db, confirmations).await;
        let credited: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deposits WHERE status = 'credited'")
                .fetch_one(db.pool())
                .await
                .expect("count");
        let doomed_credited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM deposits WHERE status = 'credited' AND block_height > $1",
        )
        .bind(tip(&a).await.0 as i64 - i64::from(depth))
        .fetch_one(db.pool())
        .await
        .expect("count");
        credited_then_orphaned += doomed_credited;
        assert!(credited >= doomed_credited);

        // b mines a longer branch without the payment; a follows it.
        b.generate(depth + 1).await.expect("mine on b");
        b.connect(&a).await.expect("reconnect");
        wait_same_tip(&a, &b).await;
        wait_synced(&a, &db, confirmations).await;
        let orphaned: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deposits WHERE status = 'orphaned'")
                .fetch_one(db.pool())
                .await
                .expect("count");
        assert!(
            orphaned >= i64::from(depth),
            "depth {depth}: only {orphaned} orphaned so far"
        );
    }
    // The unwound payments went back to a's mempool: mine them for good.
    a.generate(confirmations as u32).await.expect("mine");
    wait_same_tip(&a, &b).await;
    wait_synced(&a, &db, confirmations).await;
    running.stop().await;
    assert!(
        credited_then_orphaned > 0,
        "some reorgs took back credited deposits"
    );

    let scratch = TestDb::new().await.expect("scratch database");
    let _ = users_with_addresses(scratch.pool(), BTC, 3).await;
    let rerun = start(&a, &scratch, config(start_height, confirmations));
    wait_synced(&a, &scratch, confirmations).await;
    rerun.stop().await;
    assert_same_ledgers(db.pool(), scratch.pool(), BTC).await;
    assert_eq!(
        live_deposits(db.pool()).await.len(),
        6,
        "every payment, once, on the final chain"
    );
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}

#[tokio::test]
async fn a_zero_value_output_is_refused_and_the_batch_beside_it_commits() {
    let (node, db, users, running) = watched_node(2).await;
    let (alice, bob) = (&users[0].1, &users[1].1);
    let (outpoint, value) = node.coinbase_output(1).await.expect("coinbase");
    // Non-standard for Bitcoin Core, relayed by btcd's regtest: a 0-sat
    // output to an issued address beside a real payment.
    let txid = node
        .pay(
            outpoint,
            value,
            &[
                (address(alice), Amount::ZERO),
                (address(bob), Amount::from_sat(500_000)),
            ],
        )
        .await
        .expect("pay");
    node.generate(2).await.expect("mine");
    wait_synced(&node, &db, 2).await;
    running.stop().await;

    assert_eq!(btc_balance(&db, bob).await, ("500000".into(), "0".into()));
    assert_eq!(btc_balance(&db, alice).await, ("0".into(), "0".into()));
    let refused: Vec<(String, i64, String, String, String)> = sqlx::query_as(
        "SELECT tx_id, position, address, amount::text, reason FROM refused_deposits WHERE orphaned_at IS NULL",
    )
    .fetch_all(db.pool())
    .await
    .expect("refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    let (tx_id, position, to, amount, reason) = &refused[0];
    assert_eq!(
        (tx_id.as_str(), *position, to.as_str(), amount.as_str()),
        (txid.to_string().as_str(), 0, alice.as_str(), "0")
    );
    assert!(reason.contains("zero"), "{reason}");
    let live = live_deposits(db.pool()).await;
    assert_eq!(live.len(), 1, "only bob's output is a deposit: {live:?}");
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}

/// A custody output as recorded: (txid, vout, value, keychain, index,
/// deposit, spent by).
type Utxo = (String, i32, i64, String, i64, bool, Option<String>);

async fn custody_utxos(db: &TestDb) -> Vec<Utxo> {
    sqlx::query_as(
        "SELECT txid, vout, value_sat, keychain, derivation_index, deposit, spent_txid FROM bitcoin_utxos
         ORDER BY block_height, txid, vout",
    )
    .fetch_all(db.pool())
    .await
    .expect("custody utxos")
}

async fn derivation_index(db: &TestDb, address: &str) -> u32 {
    let index: i64 =
        sqlx::query_scalar("SELECT derivation_index FROM deposit_addresses WHERE address = $1")
            .bind(address)
            .fetch_one(db.pool())
            .await
            .expect("index");
    u32::try_from(index).expect("index")
}

fn change_address(index: u32) -> Address {
    signer::bitcoin::p2wpkh_address(
        &deposit_keys().bitcoin_account_xpub(),
        Network::Regtest,
        true,
        index,
    )
    .expect("change address")
}

/// Spends custody outputs with Coffer's keys through the signer, as a
/// payout does: a replaceable P2WPKH transaction paying `outputs`.
async fn spend_custody(
    node: &Btcd,
    inputs: &[(::bitcoin::OutPoint, CustodyInput)],
    outputs: &[(Address, u64)],
) -> ::bitcoin::Txid {
    let unsigned = ::bitcoin::Transaction {
        version: ::bitcoin::transaction::Version::TWO,
        lock_time: ::bitcoin::absolute::LockTime::ZERO,
        input: inputs
            .iter()
            .map(|(outpoint, _)| ::bitcoin::TxIn {
                previous_output: *outpoint,
                script_sig: ::bitcoin::ScriptBuf::new(),
                sequence: MAX_REPLACEABLE_SEQUENCE,
                witness: ::bitcoin::Witness::new(),
            })
            .collect(),
        output: outputs
            .iter()
            .map(|(to, sat)| ::bitcoin::TxOut {
                value: Amount::from_sat(*sat),
                script_pubkey: to.script_pubkey(),
            })
            .collect(),
    };
    let described: Vec<CustodyInput> = inputs.iter().map(|(_, input)| *input).collect();
    let signed = deposit_keys()
        .sign_bitcoin(unsigned, &described)
        .expect("sign");
    let txid = node
        .client()
        .send_raw_transaction(&signed.tx)
        .await
        .expect("btcd accepts the signer's transaction");
    assert_eq!(txid, signed.txid);
    txid
}

/// Every unspent custody output is unspent on the node with its recorded
/// value, and every spent one is gone from the node's UTXO set.
async fn assert_utxos_match_the_node(node: &Btcd, db: &TestDb) {
    for (txid, vout, value, _, _, _, spent_by) in custody_utxos(db).await {
        let found = node
            .client()
            .call::<serde_json::Value>(
                "gettxout",
                vec![serde_json::json!(txid), serde_json::json!(vout)],
            )
            .await
            .expect("gettxout");
        match spent_by {
            None => {
                // The node's BTC figure as written, not through a float.
                let btc = found["value"].to_string();
                let sat = Amount::from_str_in(&btc, ::bitcoin::Denomination::Bitcoin)
                    .unwrap_or_else(|e| panic!("{txid}:{vout} unspent on the node ({btc}): {e}"));
                assert_eq!(sat.to_sat() as i64, value, "{txid}:{vout}");
            }
            Some(_) => assert!(found.is_null(), "{txid}:{vout} is spent on the node"),
        }
    }
}

/// The ledger's BTC custody, in sats held.
async fn ledger_custody(db: &TestDb) -> i64 {
    system_balances(db.pool())
        .await
        .get(&("BTC".into(), "custody".into()))
        .map_or(0, |b| -b.parse::<i64>().expect("balance"))
}

#[tokio::test]
async fn custody_outputs_and_their_spends_follow_the_chain() {
    let (node, db, users, running) = watched_node(2).await;
    let (alice, bob) = (&users[0].1, &users[1].1);
    let (outpoint, value) = node.coinbase_output(1).await.expect("coinbase");
    let paid = node
        .pay(
            outpoint,
            value,
            &[
                (address(alice), Amount::from_sat(10_000_000)),
                (address(bob), Amount::from_sat(700_000)),
            ],
        )
        .await
        .expect("pay")
        .to_string();
    node.generate(2).await.expect("mine");
    wait_synced(&node, &db, 2).await;
    let (alice_index, bob_index) = (
        derivation_index(&db, alice).await,
        derivation_index(&db, bob).await,
    );
    assert_eq!(
        custody_utxos(&db).await,
        vec![
            (
                paid.clone(),
                0,
                10_000_000,
                "external".into(),
                alice_index.into(),
                true,
                None
            ),
            (
                paid.clone(),
                1,
                700_000,
                "external".into(),
                bob_index.into(),
                true,
                None
            ),
        ],
        "each deposit output is a custody output"
    );
    assert_eq!(ledger_custody(&db).await, 10_700_000);

    // Coffer's key spends alice's output: to an outside address, to bob's
    // deposit address and to change. Neither Coffer-bound output is a deposit.
    let alice_coin = ::bitcoin::OutPoint {
        txid: paid.parse().expect("txid"),
        vout: 0,
    };
    let own = spend_custody(
        &node,
        &[(
            alice_coin,
            CustodyInput {
                keychain: Keychain::External,
                index: alice_index,
                value: Amount::from_sat(10_000_000),
            },
        )],
        &[
            (Btcd::mining_address(), 3_000_000),
            (address(bob), 2_000_000),
            (change_address(0), 4_995_000),
        ],
    )
    .await
    .to_string();
    node.generate(2).await.expect("mine");
    wait_synced(&node, &db, 2).await;
    // Then bob's output of that transaction pays change index 20: only
    // watched once change index 0 was seen (the lookahead is 20).
    let second = spend_custody(
        &node,
        &[(
            ::bitcoin::OutPoint {
                txid: own.parse().expect("txid"),
                vout: 1,
            },
            CustodyInput {
                keychain: Keychain::External,
                index: bob_index,
                value: Amount::from_sat(2_000_000),
            },
        )],
        &[(change_address(20), 1_990_000)],
    )
    .await
    .to_string();
    node.generate(2).await.expect("mine");
    wait_synced(&node, &db, 2).await;
    running.stop().await;

    assert_eq!(
        custody_utxos(&db).await,
        vec![
            (
                paid.clone(),
                0,
                10_000_000,
                "external".into(),
                alice_index.into(),
                true,
                Some(own.clone())
            ),
            (
                paid.clone(),
                1,
                700_000,
                "external".into(),
                bob_index.into(),
                true,
                None
            ),
            (
                own.clone(),
                1,
                2_000_000,
                "external".into(),
                bob_index.into(),
                false,
                Some(second.clone())
            ),
            (own.clone(), 2, 4_995_000, "internal".into(), 0, false, None),
            (second, 0, 1_990_000, "internal".into(), 20, false, None),
        ]
    );
    let spender: (i32, i64) = sqlx::query_as(
        "SELECT spent_vin, spent_height - block_height FROM bitcoin_utxos WHERE txid = $1 AND vout = 0",
    )
    .bind(&paid)
    .fetch_one(db.pool())
    .await
    .expect("spend");
    assert_eq!(spender, (0, 2), "spent by input 0, two blocks later");
    assert_eq!(
        btc_balance(&db, bob).await,
        ("700000".into(), "0".into()),
        "Coffer's own payment to bob's address is no deposit"
    );
    assert_eq!(live_deposits(db.pool()).await.len(), 2);
    assert_utxos_match_the_node(&node, &db).await;
    // The chain holds what the ledger's custody holds, less exactly what
    // left behind the ledger's back: 3,000,000 out and two fees.
    let totals = custody_totals(db.pool()).await.expect("totals");
    assert_eq!((totals.unspent, totals.spent), (3, 2));
    assert_eq!(
        ledger_custody(&db).await - totals.unspent_sat as i64,
        3_000_000 + 5_000 + 10_000
    );
}

#[tokio::test]
async fn a_reorg_unwinds_custody_outputs_and_their_spends() {
    let a = mature_node().await;
    let b = Btcd::spawn().await.expect("second btcd");
    b.connect(&a).await.expect("connect");
    wait_same_tip(&a, &b).await;
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses(db.pool(), BTC, 1).await;
    let alice = &users[0].1;
    let start_height = tip(&a).await.0 + 1;
    let running = start(&a, &db, config(start_height, 2));
    let (outpoint, value) = a.coinbase_output(1).await.expect("coinbase");
    let paid = a
        .pay(
            outpoint,
            value,
            &[(address(alice), Amount::from_sat(5_000_000))],
        )
        .await
        .expect("pay");
    a.generate(1).await.expect("mine");
    wait_same_tip(&a, &b).await;
    wait_synced(&a, &db, 2).await;
    let deposit_only = custody_utxos(&db).await;
    assert_eq!(deposit_only.len(), 1);

    b.disconnect(&a).await.expect("disconnect");
    wait_no_peers(&b).await;
    let input = CustodyInput {
        keychain: Keychain::External,
        index: derivation_index(&db, alice).await,
        value: Amount::from_sat(5_000_000),
    };
    let own = spend_custody(
        &a,
        &[(
            ::bitcoin::OutPoint {
                txid: paid,
                vout: 0,
            },
            input,
        )],
        &[
            (Btcd::mining_address(), 1_000_000),
            (change_address(0), 3_990_000),
        ],
    )
    .await
    .to_string();
    a.generate(1).await.expect("mine on a");
    wait_synced(&a, &db, 2).await;
    let spent = custody_utxos(&db).await;
    assert_eq!(spent.len(), 2);
    assert_eq!(spent[0].6.as_deref(), Some(own.as_str()));

    // b's longer branch has neither the spend nor its change.
    b.generate(2).await.expect("mine on b");
    b.connect(&a).await.expect("reconnect");
    wait_same_tip(&a, &b).await;
    wait_synced(&a, &db, 2).await;
    assert_eq!(
        custody_utxos(&db).await,
        deposit_only,
        "the spend is cleared and its change removed"
    );
    assert_utxos_match_the_node(&a, &db).await;

    // The spend went back to a's mempool; mined again, it is recorded once.
    a.generate(1).await.expect("mine again");
    wait_same_tip(&a, &b).await;
    wait_synced(&a, &db, 2).await;
    running.stop().await;
    let again = custody_utxos(&db).await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(again[0].6.as_deref(), Some(own.as_str()));
    assert_eq!(again[1].0, own);
    assert_utxos_match_the_node(&a, &db).await;

    // Indexing the final chain from scratch gives the same set.
    let scratch = TestDb::new().await.expect("scratch database");
    let _ = users_with_addresses(scratch.pool(), BTC, 1).await;
    let rerun = start(&a, &scratch, config(start_height, 2));
    wait_synced(&a, &scratch, 2).await;
    rerun.stop().await;
    assert_eq!(custody_utxos(&scratch).await, again);
    assert_same_ledgers(db.pool(), scratch.pool(), BTC).await;
}

#[tokio::test]
async fn coins_selected_from_the_custody_set_pay_and_their_change_returns() {
    let (node, db, users, running) = watched_node(3).await;
    let (outpoint, value) = node.coinbase_output(1).await.expect("coinbase");
    node.pay(
        outpoint,
        value,
        &[
            (address(&users[0].1), Amount::from_sat(1_000_000)),
            (address(&users[1].1), Amount::from_sat(2_500_000)),
            (address(&users[2].1), Amount::from_sat(400_000)),
        ],
    )
    .await
    .expect("pay");
    node.generate(2).await.expect("mine");
    wait_synced(&node, &db, 2).await;
    let height = tip(&node).await.0;
    assert!(
        spendable_coins(db.pool(), height, 3)
            .await
            .expect("coins")
            .is_empty(),
        "two confirmations are not three"
    );
    let coins = spendable_coins(db.pool(), height, 2).await.expect("coins");
    assert_eq!(coins.len(), 3);

    let payments = [::bitcoin::TxOut {
        value: Amount::from_sat(3_000_000),
        script_pubkey: Btcd::mining_address().script_pubkey(),
    }];
    let policy = FeePolicy {
        rate_sat_vb: 3,
        long_term_rate_sat_vb: 1,
    };
    let selection = select(&coins, &payments, policy).expect("select");
    let change = selection.change_sat.expect("change");
    let mut outputs: Vec<(Address, u64)> = vec![(Btcd::mining_address(), 3_000_000)];
    outputs.push((change_address(0), change));
    let inputs: Vec<_> = selection
        .coins
        .iter()
        .map(|c| (c.outpoint, c.custody_input()))
        .collect();
    let paid = spend_custody(&node, &inputs, &outputs).await.to_string();
    let spent: u64 = selection.coins.iter().map(|c| c.value_sat).sum();
    assert_eq!(spent, 3_000_000 + change + selection.fee_sat);
    node.generate(2).await.expect("mine");
    wait_synced(&node, &db, 2).await;
    running.stop().await;

    let raw: String = node
        .client()
        .call("getrawtransaction", vec![serde_json::json!(paid)])
        .await
        .expect("raw");
    let tx: ::bitcoin::Transaction =
        ::bitcoin::consensus::encode::deserialize_hex(&raw).expect("decode");
    assert!(
        selection.fee_sat >= tx.vsize() as u64 * policy.rate_sat_vb,
        "fee {} for {} vB",
        selection.fee_sat,
        tx.vsize()
    );
    let utxos = custody_utxos(&db).await;
    let change_row = utxos
        .iter()
        .find(|u| u.0 == paid)
        .expect("the change is recorded");
    assert_eq!(
        (change_row.2, change_row.3.as_str(), change_row.5),
        (change as i64, "internal", false)
    );
    assert_utxos_match_the_node(&node, &db).await;
    let totals = custody_totals(db.pool()).await.expect("totals");
    assert_eq!(
        ledger_custody(&db).await - totals.unspent_sat as i64,
        (3_000_000 + selection.fee_sat) as i64,
        "custody is short of the ledger by the payment and its fee, to the sat"
    );
}

/// The watch loop's cases on btcd. Reorgs: a second node, cut off at the
/// fork point, mines a longer branch and is reconnected (the first node's
/// abandoned transactions go back to its mempool and are mined again
/// later, as on a real network). A node behind: the watcher reads through
/// a relay that is pointed at the second node while it is cut off. Pruned
/// history cannot be produced: btcd prunes only beyond 1.5 GB of blocks.
pub struct BtcdChain {
    a: Btcd,
    b: Option<Btcd>,
    relay: Relay,
    /// The next coinbase (by height) to spend; neither node spends one twice.
    next_coinbase: u64,
    fork: u64,
}

impl BtcdChain {
    /// The second node, started and synced with the first on first use.
    async fn second(&mut self) -> &Btcd {
        if self.b.is_none() {
            let b = Btcd::spawn().await.expect("second btcd");
            b.connect(&self.a).await.expect("connect");
            wait_same_tip(&self.a, &b).await;
            self.b = Some(b);
        }
        self.b.as_ref().expect("second node")
    }

    /// Cuts the second node off the first.
    async fn cut_off(&mut self) {
        let a_addr = self.a.p2p_addr().to_owned();
        let b = self.second().await;
        let _: serde_json::Value = b
            .client()
            .call("node", vec!["disconnect".into(), a_addr.into()])
            .await
            .expect("disconnect");
        wait_no_peers(b).await;
    }

    /// Reconnects the second node and waits until both agree.
    async fn rejoin(&mut self) {
        let b = self.b.as_ref().expect("second node");
        b.connect(&self.a).await.expect("reconnect");
        wait_same_tip(&self.a, b).await;
    }

    async fn coinbase(&mut self, node_is_b: bool) -> (::bitcoin::OutPoint, Amount) {
        let height = self.next_coinbase;
        self.next_coinbase += 1;
        let node = if node_is_b {
            self.b.as_ref().expect("second node")
        } else {
            &self.a
        };
        node.coinbase_output(height).await.expect("coinbase")
    }
}

fn outputs(payments: &[(String, u64)]) -> Vec<(Address, Amount)> {
    payments
        .iter()
        .map(|(to, sats)| (address(to), Amount::from_sat(*sats)))
        .collect()
}

impl TestChain for BtcdChain {
    type Source = indexer::deposits::bitcoin::BitcoinSource;
    const CHAIN: Chain = BTC;
    const A_FEW_POLLS: Duration = Duration::from_millis(300);

    async fn start(_lane: Lane) -> Self {
        init_logs();
        let a = mature_node().await;
        let relay = Relay::start(a.rpc_url()).await;
        Self {
            a,
            b: None,
            relay,
            next_coinbase: 1,
            fork: 0,
        }
    }

    async fn users(&self, db: &sqlx::PgPool, count: usize) -> Vec<(uuid::Uuid, String)> {
        users_with_addresses(db, BTC, count).await
    }

    async fn pay(&mut self, payments: &[(String, u64)]) {
        let (outpoint, value) = self.coinbase(false).await;
        self.a
            .pay(outpoint, value, &outputs(payments))
            .await
            .expect("pay");
    }

    async fn mine(&mut self, blocks: u64) {
        self.a
            .generate(u32::try_from(blocks).expect("blocks"))
            .await
            .expect("mine");
    }

    async fn tip(&self) -> (u64, String) {
        tip(&self.a).await
    }

    fn watcher(&self, db: &sqlx::PgPool, config: &SuiteConfig) -> BitcoinWatcher {
        let suite = config;
        let mut config = self::config(suite.start_height, suite.confirmations);
        config.watch.max_reorg_depth = suite.max_reorg_depth;
        config.watch.batch_blocks = suite.batch_blocks;
        config.watch.fetch_concurrency = suite.concurrency;
        config.watch.fetch_ahead = suite.fetch_ahead;
        let client = chains::bitcoin::BitcoinClient::new(
            self.relay.url(),
            Btcd::auth(),
            Duration::from_secs(30),
        )
        .expect("client");
        let store = DepositStore::new(Ledger::new(db.clone()), BTC, config.watch.max_reorg_depth);
        BitcoinWatcher::new(
            client,
            deposit_keys().bitcoin_account_xpub(),
            Network::Regtest,
            store,
            config,
        )
    }

    async fn wait_indexed(&self, db: &sqlx::PgPool, config: &SuiteConfig) {
        let tip = tip(&self.a).await;
        let final_height = (tip.0 + 1).saturating_sub(config.confirmations);
        super::wait_synced(db, BTC, tip, final_height).await;
    }
}

impl Forks for BtcdChain {
    const REORG_DEPTHS: u64 = 6;

    async fn fork(&mut self) -> u64 {
        self.cut_off().await;
        self.fork = tip(&self.a).await.0;
        self.fork
    }

    /// The second node mines one block more than the first did since the
    /// fork point, the first of them paying `payments`.
    async fn reorg(&mut self, payments: &[(String, u64)]) {
        if !payments.is_empty() {
            let (outpoint, value) = self.coinbase(true).await;
            let b = self.b.as_ref().expect("second node");
            b.pay(outpoint, value, &outputs(payments))
                .await
                .expect("pay on the branch");
        }
        let depth = tip(&self.a).await.0 - self.fork;
        let b = self.b.as_ref().expect("second node");
        b.generate(u32::try_from(depth + 1).expect("depth"))
            .await
            .expect("mine the branch");
        self.rejoin().await;
    }
}

impl FallsBehind for BtcdChain {
    async fn lag(&mut self) {
        self.cut_off().await;
    }

    async fn serve_lagging(&mut self) {
        let b = self.b.as_ref().expect("second node");
        self.relay.switch(b.rpc_url());
    }

    async fn catch_up(&mut self) {
        self.rejoin().await;
    }
}

suite!(BtcdChain =>
    restart_mid_catch_up,
    reorgs_of_every_depth_match_indexing_from_scratch,
    a_reorg_deeper_than_the_limit_halts_the_watcher,
    a_node_behind_the_cursor_is_waited_for,
);
