//! The daemon's Ethereum payout loop end to end on a real anvil: it runs
//! beside the watcher, sweeps a deposit into the hot wallet, pays a
//! withdrawal from it and completes it over `WithdrawalService`, while a
//! real Prometheus scrapes it for the dashboard's queries.
//!
//! These run the binary: the loop's metrics are per chain and process-wide,
//! and a deposit credited here would count in another test's metrics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use api::grpc::pb::history_service_client::HistoryServiceClient;
use api::grpc::pb::wallet_service_client::WalletServiceClient;
use api::grpc::pb::withdrawal_service_client::WithdrawalServiceClient;
use api::grpc::pb::{self, WithdrawalStatus};
use chains::Chain;
use chains::devnet::{Anvil, TestToken};
use chains::ethereum::BlockNumberOrTag;
use indexer::devnet::TestDb;
use tonic::transport::Channel;

use crate::dashboards::{Prometheus, assert_dashboard_answers};
use crate::support::{
    Coffer, auth_client, bearer, binary_env_on_free_ports, enable_chain, register_and_login,
    sample, scrape, set, wait_for_sample, wait_serving,
};

/// An EIP-55 test vector: a valid checksummed address nobody in Coffer owns.
const OUTSIDE: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
const MILLI_ETH: u64 = 1_000_000_000_000_000;

/// The devnet seed's Ethereum hot wallet.
fn hot_wallet() -> Address {
    api::app::load_deposit_keys(&api::Settings::default())
        .expect("devnet keys")
        .hot_wallet_address(Chain::Ethereum)
        .expect("hot wallet")
        .address
        .parse()
        .expect("an address")
}

async fn eth_balance(anvil: &Anvil, address: Address) -> U256 {
    anvil
        .client()
        .balance(address, BlockNumberOrTag::Latest)
        .await
        .expect("balance")
}

/// Mines a block every 200 ms until `done` holds, for up to 60 s.
async fn mine_until<F, Fut>(anvil: &Anvil, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within 60 s");
        anvil.mine(1).await.expect("mine");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `(available, held)` of ETH for the token's user.
async fn eth_of(wallets: &mut WalletServiceClient<Channel>, token: &str) -> (String, String) {
    balance_of(wallets, token, "ETH").await
}

/// `(available, held)` of `asset` for the token's user.
async fn balance_of(
    wallets: &mut WalletServiceClient<Channel>,
    token: &str,
    asset: &str,
) -> (String, String) {
    wallets
        .get_balances(bearer(pb::GetBalancesRequest { user_id: None }, token))
        .await
        .expect("balances")
        .into_inner()
        .balances
        .into_iter()
        .find(|b| b.asset == asset)
        .map(|b| (b.available, b.held))
        .unwrap_or_else(|| ("0".into(), "0".into()))
}

/// The daemon's environment for payouts on `anvil`: fast polls, two
/// confirmations, and ETH's terms (0.1 mETH fee, approved at once up to
/// 1 ETH, 10 ETH a day).
fn payout_env(db: &TestDb, anvil: &Anvil) -> (SocketAddr, SocketAddr, Vec<(&'static str, String)>) {
    let (grpc, metrics, mut env) = binary_env_on_free_ports(&db.url());
    enable_chain(&mut env, Chain::Ethereum, anvil.rpc_url());
    for (key, value) in [
        ("COFFER__CHAINS__ETHEREUM__POLL_INTERVAL_MS", "100"),
        // anvil's `finalized` trails the tip by 64 blocks.
        ("COFFER__CHAINS__ETHEREUM__USE_FINALIZED_TAG", "false"),
        ("COFFER__CHAINS__ETHEREUM__CONFIRMATIONS", "2"),
        ("COFFER__WITHDRAWALS__ASSETS__ETH__FEE", "100000000000000"),
        (
            "COFFER__WITHDRAWALS__ASSETS__ETH__APPROVAL_THRESHOLD",
            "1000000000000000000",
        ),
        (
            "COFFER__WITHDRAWALS__ASSETS__ETH__DAILY_LIMIT",
            "10000000000000000000",
        ),
        ("COFFER__WITHDRAWALS__ETHEREUM__POLL_INTERVAL_MS", "100"),
        ("COFFER__WITHDRAWALS__ETHEREUM__REPLACE_AFTER_BLOCKS", "3"),
    ] {
        set(&mut env, key, value);
    }
    (grpc, metrics, env)
}

/// A registered user with an Ethereum deposit address, over gRPC: its
/// access token, a wallet client and the address.
async fn user_with_deposit_address(
    grpc: SocketAddr,
    email: &str,
) -> (String, WalletServiceClient<Channel>, Address) {
    let mut auth = auth_client(grpc).await;
    let token = register_and_login(&mut auth, email, "correct horse battery")
        .await
        .access_token;
    let mut wallets = WalletServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let wallet = wallets
        .create_wallet(bearer(
            pb::CreateWalletRequest {
                chain: pb::Chain::Ethereum.into(),
                user_id: None,
            },
            &token,
        ))
        .await
        .expect("wallet")
        .into_inner();
    let deposit: Address = wallets
        .new_deposit_address(bearer(
            pb::NewDepositAddressRequest {
                wallet_id: wallet.id,
            },
            &token,
        ))
        .await
        .expect("address")
        .into_inner()
        .address
        .parse()
        .expect("an address");
    (token, wallets, deposit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_sweeps_a_deposit_and_pays_a_withdrawal_on_ethereum() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let db = TestDb::new().await.expect("database");
    let (grpc, metrics, mut env) = payout_env(&db, &anvil);
    // Sweep from 10 mETH.
    set(
        &mut env,
        "COFFER__WITHDRAWALS__ETHEREUM__SWEEP_THRESHOLDS__ETH",
        "10000000000000000",
    );
    let hot = hot_wallet();
    assert_eq!(eth_balance(&anvil, hot).await, U256::ZERO, "a fresh chain");
    let coffer = Coffer::run(&env);
    wait_serving(grpc, Duration::from_secs(60)).await;
    // Prometheus scrapes the whole story, for the dashboard's queries.
    let prometheus = Prometheus::scraping(metrics).await;

    // The loop runs beside the watcher and looks at the empty hot wallet.
    wait_for_sample(metrics, "coffer_payout_loop_up{chain=\"ethereum\"}", |v| {
        v == 1.0
    })
    .await;
    wait_for_sample(
        metrics,
        "coffer_hot_wallet_balance{chain=\"ethereum\",asset=\"ETH\"}",
        |v| v == 0.0,
    )
    .await;
    wait_for_sample(
        metrics,
        "coffer_withdrawals{chain=\"ethereum\",kind=\"withdrawal\",status=\"completed\"}",
        |v| v == 0.0,
    )
    .await;

    // A user deposits 50 mETH ...
    let (token, mut wallets, deposit) = user_with_deposit_address(grpc, "payee@example.com").await;
    let tx = anvil
        .send(
            Anvil::DEV_ACCOUNT,
            deposit,
            U256::from(50 * MILLI_ETH),
            &[],
            None,
        )
        .await
        .expect("deposit");
    anvil.mined(tx).await.expect("mined");
    let credited = (50 * MILLI_ETH).to_string();
    mine_until(&anvil, "the deposit is credited", || {
        let (mut wallets, token) = (wallets.clone(), token.clone());
        let credited = credited.clone();
        async move { eth_of(&mut wallets, &token).await == (credited, "0".into()) }
    })
    .await;

    // ... which the loop sweeps into the hot wallet, less the sweep's gas.
    mine_until(&anvil, "the deposit address is swept", || async {
        eth_balance(&anvil, hot).await > U256::ZERO
    })
    .await;
    let swept = eth_balance(&anvil, hot).await;
    let left = eth_balance(&anvil, deposit).await;
    assert!(
        swept > U256::from(49 * MILLI_ETH) && left < U256::from(MILLI_ETH),
        "swept {swept}, left {left}"
    );
    assert_eq!(
        eth_of(&mut wallets, &token).await,
        (credited.clone(), "0".into()),
        "a sweep moves Coffer's money, not the user's"
    );

    // A withdrawal of 20 mETH is then paid from the hot wallet.
    let mut withdrawals = WithdrawalServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let requested = withdrawals
        .request_withdrawal(bearer(
            pb::RequestWithdrawalRequest {
                asset: "ETH".into(),
                amount: (20 * MILLI_ETH).to_string(),
                destination: OUTSIDE.into(),
                idempotency_key: "payout-1".into(),
                user_id: None,
            },
            &token,
        ))
        .await
        .expect("request")
        .into_inner();
    assert_eq!(requested.status, i32::from(WithdrawalStatus::Approved));
    let get = || {
        let mut withdrawals = withdrawals.clone();
        let (id, token) = (requested.id.clone(), token.clone());
        async move {
            withdrawals
                .get_withdrawal(bearer(pb::GetWithdrawalRequest { id }, &token))
                .await
                .expect("get")
                .into_inner()
        }
    };
    mine_until(&anvil, "the withdrawal completes", || async {
        get().await.status == i32::from(WithdrawalStatus::Completed)
    })
    .await;
    let done = get().await;
    assert!(!done.tx_hash.is_empty() && done.tx_hashes.contains(&done.tx_hash));
    assert!(done.confirmations >= 2, "{done:?}");
    let outside: Address = OUTSIDE.parse().expect("address");
    assert_eq!(
        eth_balance(&anvil, outside).await,
        U256::from(20 * MILLI_ETH),
        "the destination got the amount"
    );
    assert_eq!(
        eth_of(&mut wallets, &token).await,
        (
            (50 * MILLI_ETH - 20 * MILLI_ETH - MILLI_ETH / 10).to_string(),
            "0".into()
        ),
        "the hold settled: amount and fee gone, nothing held"
    );

    // The loop's metrics tell the same story.
    let hot_now = eth_balance(&anvil, hot).await.to::<u128>() as f64;
    wait_for_sample(
        metrics,
        "coffer_hot_wallet_balance{chain=\"ethereum\",asset=\"ETH\"}",
        |v| v == hot_now,
    )
    .await;
    wait_for_sample(
        metrics,
        "coffer_withdrawals{chain=\"ethereum\",kind=\"withdrawal\",status=\"completed\"}",
        |v| v == 1.0,
    )
    .await;
    let body = scrape(metrics).await;
    for series in [
        "coffer_withdrawals{chain=\"ethereum\",kind=\"sweep\",status=\"completed\"}",
        "coffer_sweeps_total{chain=\"ethereum\",asset=\"ETH\",kind=\"sweep\"}",
    ] {
        assert_eq!(sample(&body, series), Some(1.0), "{series}:\n{body}");
    }
    assert_eq!(
        sample(&body, "coffer_withdrawals_waiting{chain=\"ethereum\"}"),
        Some(0.0),
        "{body}"
    );
    assert!(
        body.contains(
            "coffer_withdrawal_request_to_completion_seconds_bucket{chain=\"ethereum\",le="
        ) && body
            .contains("coffer_withdrawal_sends_total{chain=\"ethereum\",outcome=\"accepted\"}"),
        "latencies export buckets, sends are counted:\n{body}"
    );
    // Every dashboard query evaluates; the daemon's, chain's, deposit and
    // payout panels show this run.
    assert_dashboard_answers(
        &prometheus,
        &[
            (1, "A"),
            (2, "A"),
            (3, "A"),
            (4, "A"),
            (7, "A"),
            (8, "A"),
            (9, "A"),
            (11, "A"),
            (12, "A"),
            (14, "B"),
            (15, "A"),
            (16, "A"),
            (16, "B"),
            (16, "C"),
            (17, "A"),
            (17, "B"),
            (18, "A"),
            (19, "A"),
            (19, "B"),
            (21, "A"),
        ],
    )
    .await;

    let log = coffer.stop().await;
    let hot_text = hot.to_string().to_lowercase();
    assert!(
        log.lines()
            .any(|line| line.contains("payout loop enabled")
                && line.to_lowercase().contains(&hot_text)),
        "the hot wallet is logged at start:\n{log}"
    );
}

/// With `withdrawals.ethereum.enabled = false` the loop does not run; the
/// watcher does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payout_loop_can_be_turned_off() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let db = TestDb::new().await.expect("database");
    let (grpc, metrics, mut env) = binary_env_on_free_ports(&db.url());
    enable_chain(&mut env, Chain::Ethereum, anvil.rpc_url());
    set(&mut env, "COFFER__WITHDRAWALS__ETHEREUM__ENABLED", "false");
    let coffer = Coffer::run(&env);
    wait_serving(grpc, Duration::from_secs(60)).await;
    wait_for_sample(metrics, "coffer_watcher_up{chain=\"ethereum\"}", |v| {
        v == 1.0
    })
    .await;
    let body = scrape(metrics).await;
    assert!(!body.contains("coffer_payout_loop_up{"), "{body}");
    let log = coffer.stop().await;
    assert!(!log.contains("payout loop"), "{log}");
}

const TOKEN_CONFIG: &str = r#"
[[chains.ethereum.tokens]]
contract = "{contract}"
asset = "TUSD"
decimals = 6

[withdrawals.assets.TUSD]
fee = "10000"
approval_threshold = "1000000000"
daily_limit = "1000000000000"

[withdrawals.ethereum.sweep_thresholds]
ETH = "10000000000000000"
TUSD = "1000000"
"#;

/// Statuses of the rows `kind` names, by id.
async fn payout_statuses(db: &TestDb, kind: &str) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT id, status::text FROM withdrawals WHERE kind = $1::payout_kind ORDER BY id",
    )
    .bind(kind)
    .fetch_all(db.pool())
    .await
    .expect("statuses")
}

/// The daemon is SIGKILLed each time one of two withdrawals (ETH and an
/// allow-listed ERC-20, both over gRPC) is seen in a new in-flight status
/// (reserved, signed, broadcast, confirming), and restarted: each still
/// pays its destination exactly once, the ledger settles both holds, and
/// the ledger's custody equals what Coffer's addresses hold on chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_at_every_step_pay_an_eth_and_a_token_withdrawal_exactly_once() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let db = TestDb::new().await.expect("database");
    let token = anvil
        .deploy_minted_token(6, U256::from(10u64).pow(U256::from(12)))
        .await
        .expect("token");
    let config = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("config file");
    std::fs::write(
        config.path(),
        TOKEN_CONFIG.replace("{contract}", &token.address.to_checksum(None)),
    )
    .expect("write config");
    let (grpc, _metrics, mut env) = payout_env(&db, &anvil);
    set(
        &mut env,
        "COFFER_CONFIG",
        config.path().to_str().expect("utf-8 path"),
    );
    let mut coffer = Coffer::run(&env);
    wait_serving(grpc, Duration::from_secs(60)).await;

    // One user deposits 50 mETH and 5 TUSD to one address.
    let (user, wallets, deposit) = user_with_deposit_address(grpc, "crash@example.com").await;
    let paid = anvil
        .send(
            Anvil::DEV_ACCOUNT,
            deposit,
            U256::from(50 * MILLI_ETH),
            &[],
            None,
        )
        .await
        .expect("ETH deposit");
    anvil.mined(paid).await.expect("mined");
    let paid = anvil
        .send(
            Anvil::DEV_ACCOUNT,
            token.address,
            U256::ZERO,
            &TestToken::transfer(deposit, U256::from(5_000_000u64)),
            None,
        )
        .await
        .expect("token deposit");
    anvil.mined(paid).await.expect("mined");
    let user_balance = |asset: &'static str| {
        let (mut wallets, user) = (wallets.clone(), user.clone());
        async move { balance_of(&mut wallets, &user, asset).await }
    };
    mine_until(&anvil, "both deposits are credited", || async {
        user_balance("ETH").await.0 == (50 * MILLI_ETH).to_string()
            && user_balance("TUSD").await.0 == "5000000"
    })
    .await;

    let mut withdrawals = WithdrawalServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let mut requested = Vec::new();
    for (asset, amount, key) in [
        ("ETH", (10 * MILLI_ETH).to_string(), "crash-eth"),
        ("TUSD", "2000000".to_owned(), "crash-tusd"),
    ] {
        let row = withdrawals
            .request_withdrawal(bearer(
                pb::RequestWithdrawalRequest {
                    asset: asset.into(),
                    amount,
                    destination: OUTSIDE.into(),
                    idempotency_key: key.into(),
                    user_id: None,
                },
                &user,
            ))
            .await
            .expect("request")
            .into_inner();
        requested.push(row.id);
    }

    // Kill on every first sight of a withdrawal in an in-flight status.
    let mut seen = std::collections::HashSet::new();
    let mut kills = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_mine = Instant::now();
    loop {
        let statuses = payout_statuses(&db, "withdrawal").await;
        if statuses.iter().all(|(_, s)| s == "completed") {
            break;
        }
        assert!(
            statuses.iter().all(|(_, s)| s != "failed" && s != "manual"),
            "{statuses:?}\n{}",
            coffer.log()
        );
        let fresh: Vec<(i64, String)> = statuses
            .into_iter()
            .filter(|(_, s)| {
                ["reserved", "signed", "broadcast", "confirming"].contains(&s.as_str())
            })
            .filter(|row| seen.insert(row.clone()))
            .collect();
        if !fresh.is_empty() {
            coffer.kill();
            kills.extend(fresh);
            coffer = Coffer::run(&env);
            wait_serving(grpc, Duration::from_secs(60)).await;
        }
        assert!(
            Instant::now() < deadline,
            "withdrawals completed within 120 s; killed at {kills:?}"
        );
        if last_mine.elapsed() > Duration::from_millis(300) {
            anvil.mine(1).await.expect("mine");
            last_mine = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        kills.iter().any(|(_, s)| s == "signed" || s == "broadcast"),
        "a kill landed after signing: {kills:?}"
    );

    // Each destination got its amount once; one attempt of each landed.
    let outside: Address = OUTSIDE.parse().expect("address");
    assert_eq!(
        eth_balance(&anvil, outside).await,
        U256::from(10 * MILLI_ETH)
    );
    assert_eq!(
        anvil
            .client()
            .token_balance(token.address, outside, BlockNumberOrTag::Latest)
            .await
            .expect("token balance"),
        U256::from(2_000_000u64)
    );
    for id in &requested {
        let landed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM withdrawal_attempts
             WHERE withdrawal_id = $1::bigint AND landed_block_hash IS NOT NULL",
        )
        .bind(id.parse::<i64>().expect("numeric id"))
        .fetch_one(db.pool())
        .await
        .expect("attempts");
        assert_eq!(landed, 1, "withdrawal {id}");
    }
    assert_eq!(
        user_balance("ETH").await,
        ((40 * MILLI_ETH - MILLI_ETH / 10).to_string(), "0".into())
    );
    assert_eq!(
        user_balance("TUSD").await,
        ("2990000".to_owned(), "0".into())
    );
    // The token withdrawal's settlement names the hash that landed.
    let token_withdrawal = withdrawals
        .get_withdrawal(bearer(
            pb::GetWithdrawalRequest {
                id: requested[1].clone(),
            },
            &user,
        ))
        .await
        .expect("get")
        .into_inner();
    let mut history = HistoryServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let settled = history
        .list_transactions(bearer(
            pb::ListTransactionsRequest {
                user_id: None,
                asset: Some("TUSD".into()),
                kind: Some("withdrawal_settle".into()),
                page_size: 0,
                page_token: String::new(),
            },
            &user,
        ))
        .await
        .expect("history")
        .into_inner()
        .transactions;
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert!(
        !token_withdrawal.tx_hash.is_empty()
            && settled[0].metadata_json.contains(&token_withdrawal.tx_hash),
        "{settled:?} {token_withdrawal:?}"
    );

    // Once nothing is in flight, custody is what Coffer's addresses hold.
    let ledger = indexer::ledger::Ledger::new(db.pool().clone());
    let hot = hot_wallet();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        anvil.mine(1).await.expect("mine");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let busy: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM withdrawals WHERE status IN ('approved', 'reserved', 'signed', 'broadcast', 'confirming'))
                  + (SELECT count(*) FROM deposits WHERE status = 'pending')",
        )
        .fetch_one(db.pool())
        .await
        .expect("busy");
        let mut reconciled = busy == 0;
        for (asset, contract) in [("ETH", None), ("TUSD", Some(token.address))] {
            let mut on_chain = U256::ZERO;
            for address in [hot, deposit] {
                on_chain += match contract {
                    None => eth_balance(&anvil, address).await,
                    Some(token) => anvil
                        .client()
                        .token_balance(token, address, BlockNumberOrTag::Latest)
                        .await
                        .expect("token balance"),
                };
            }
            let custody = ledger
                .account_balance(&indexer::ledger::AccountRef::system(
                    asset,
                    indexer::ledger::AccountPurpose::Custody,
                ))
                .await
                .expect("custody");
            reconciled &= custody.to_string() == format!("-{on_chain}");
        }
        if reconciled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "custody reconciles with the chain once settled"
        );
    }
    let log = coffer.stop().await;
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("killed at {kills:?}");
}
