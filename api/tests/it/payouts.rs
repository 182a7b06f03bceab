//! The daemon's Ethereum payout loop end to end on a real anvil: it runs
//! beside the watcher, sweeps a deposit into the hot wallet, pays a
//! withdrawal from it and completes it over `WithdrawalService`.
//!
//! These run the binary: the loop's metrics are per chain and process-wide,
//! and a deposit credited here would count in another test's metrics.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use api::grpc::pb::wallet_service_client::WalletServiceClient;
use api::grpc::pb::withdrawal_service_client::WithdrawalServiceClient;
use api::grpc::pb::{self, WithdrawalStatus};
use chains::Chain;
use chains::devnet::Anvil;
use chains::ethereum::BlockNumberOrTag;
use indexer::devnet::TestDb;
use tonic::transport::Channel;

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
    wallets
        .get_balances(bearer(pb::GetBalancesRequest { user_id: None }, token))
        .await
        .expect("balances")
        .into_inner()
        .balances
        .into_iter()
        .find(|b| b.asset == "ETH")
        .map(|b| (b.available, b.held))
        .unwrap_or_else(|| ("0".into(), "0".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_sweeps_a_deposit_and_pays_a_withdrawal_on_ethereum() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let db = TestDb::new().await.expect("database");
    let (grpc, metrics, mut env) = binary_env_on_free_ports(&db.url());
    enable_chain(&mut env, Chain::Ethereum, anvil.rpc_url());
    for (key, value) in [
        ("COFFER__CHAINS__ETHEREUM__POLL_INTERVAL_MS", "100"),
        // anvil's `finalized` trails the tip by 64 blocks.
        ("COFFER__CHAINS__ETHEREUM__USE_FINALIZED_TAG", "false"),
        ("COFFER__CHAINS__ETHEREUM__CONFIRMATIONS", "2"),
        // 0.1 mETH fee, approved at once up to 1 ETH, 10 ETH a day.
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
        // Sweep from 10 mETH.
        (
            "COFFER__WITHDRAWALS__ETHEREUM__SWEEP_THRESHOLDS__ETH",
            "10000000000000000",
        ),
    ] {
        set(&mut env, key, value);
    }
    let hot = hot_wallet();
    assert_eq!(eth_balance(&anvil, hot).await, U256::ZERO, "a fresh chain");
    let coffer = Coffer::run(&env);
    wait_serving(grpc, Duration::from_secs(60)).await;

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
    let mut auth = auth_client(grpc).await;
    let token = register_and_login(&mut auth, "payee@example.com", "correct horse battery")
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
