//! Deposits end to end: the daemon follows a real node and a user sees the
//! deposit through `WalletService` and `HistoryService`.

use std::time::{Duration, Instant};

use alloy_primitives::U256;
use api::grpc::pb::history_service_client::HistoryServiceClient;
use api::grpc::pb::wallet_service_client::WalletServiceClient;
use api::grpc::pb::{self, Chain};
use chains::HeadSource;
use chains::devnet::{Anvil, TestToken};
use indexer::devnet::TestDb;
use tonic::transport::Channel;

use crate::support::{
    Server, bearer, client, register_and_login, sample, scrape, server_on, wait_for_sample,
};

/// A registered user with a wallet on `chain` and `addresses` deposit
/// addresses, all through the API.
struct Depositor {
    access: String,
    wallets: WalletServiceClient<Channel>,
    addresses: Vec<String>,
}

async fn depositor(server: &Server, email: &str, chain: Chain, addresses: usize) -> Depositor {
    let mut auth = client(server).await;
    let access = register_and_login(&mut auth, email, "correct horse battery")
        .await
        .access_token;
    let mut wallets = WalletServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect");
    let wallet = wallets
        .create_wallet(bearer(
            pb::CreateWalletRequest {
                chain: chain.into(),
                user_id: None,
            },
            &access,
        ))
        .await
        .expect("wallet")
        .into_inner();
    let mut issued = Vec::with_capacity(addresses);
    for _ in 0..addresses {
        issued.push(
            wallets
                .new_deposit_address(bearer(
                    pb::NewDepositAddressRequest {
                        wallet_id: wallet.id.clone(),
                    },
                    &access,
                ))
                .await
                .expect("address")
                .into_inner()
                .address,
        );
    }
    Depositor {
        access,
        wallets,
        addresses: issued,
    }
}

/// The user's transactions, newest first, filtered as asked.
async fn history(
    server: &Server,
    access: &str,
    asset: Option<&str>,
    kind: Option<&str>,
) -> Vec<pb::Transaction> {
    HistoryServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect")
        .list_transactions(bearer(
            pb::ListTransactionsRequest {
                user_id: None,
                asset: asset.map(Into::into),
                kind: kind.map(Into::into),
                page_size: 10,
                page_token: String::new(),
            },
            access,
        ))
        .await
        .expect("history")
        .into_inner()
        .transactions
}

async fn balances(
    wallets: &mut WalletServiceClient<Channel>,
    token: &str,
) -> Vec<(String, String, String, u32)> {
    let mut out: Vec<_> = wallets
        .get_balances(bearer(pb::GetBalancesRequest { user_id: None }, token))
        .await
        .expect("balances")
        .into_inner()
        .balances
        .into_iter()
        .map(|b| (b.asset, b.available, b.pending, b.decimals))
        .collect();
    out.sort();
    out
}

async fn wait_balances(
    wallets: &mut WalletServiceClient<Channel>,
    token: &str,
    expected: &[(&str, &str, &str, u32)],
) {
    let expected: Vec<(String, String, String, u32)> = expected
        .iter()
        .map(|(a, v, p, d)| ((*a).into(), (*v).into(), (*p).into(), *d))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = balances(wallets, token).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "balances {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eth_and_a_token_deposit_show_pending_then_available_over_grpc() {
    let anvil = Anvil::spawn().await.expect("anvil");
    let token = anvil
        .deploy_minted_token(6, U256::from(1_000_000_000u64))
        .await
        .expect("token");
    let from = Anvil::DEV_ACCOUNT;
    anvil.mine(1).await.expect("mine");
    let db = TestDb::new().await.expect("database");
    let rpc_url = anvil.rpc_url().to_owned();
    let contract = token.address.to_checksum(None);
    let server = server_on(
        |s| {
            s.chains.ethereum.enabled = true;
            s.chains.ethereum.rpc_url = rpc_url.into();
            s.chains.ethereum.poll_interval_ms = 100;
            s.chains.ethereum.chain.tokens = vec![api::config::TokenSettings {
                contract,
                asset: "TUSD".into(),
                decimals: 6,
            }];
        },
        db,
    )
    .await;

    let Depositor {
        access,
        mut wallets,
        addresses,
    } = depositor(&server, "depositor@example.com", Chain::Ethereum, 1).await;
    let to = addresses[0].parse().expect("address");

    // The watcher started at the tip; wait until it stands there.
    let tip = anvil.client().head().await.expect("head").height;
    wait_for_sample(
        server.metrics(),
        "coffer_chain_indexed_height{chain=\"ethereum\"}",
        |h| h >= tip as f64,
    )
    .await;
    let eth_tx = anvil
        .send(
            from,
            to,
            U256::from(2_500_000_000_000_000_000u128),
            &[],
            None,
        )
        .await
        .expect("eth");
    let token_tx = anvil
        .send(
            from,
            token.address,
            U256::ZERO,
            &TestToken::transfer(to, U256::from(12_340_000)),
            None,
        )
        .await
        .expect("token");
    let eth_block = mined_in(&anvil, eth_tx).await;
    let token_block = mined_in(&anvil, token_tx).await;

    wait_balances(
        &mut wallets,
        &access,
        &[
            ("ETH", "0", "2500000000000000000", 18),
            ("TUSD", "0", "12340000", 6),
        ],
    )
    .await;
    let listed = history(&server, &access, Some("ETH"), None).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let pending = &listed[0];
    assert_eq!(pending.kind, "deposit_pending");
    let deposit = pending.deposit.as_ref().expect("deposit details");
    assert_eq!(
        (
            deposit.chain.as_str(),
            deposit.status.as_str(),
            deposit.position
        ),
        ("ethereum", "pending", -1)
    );
    assert!(
        deposit.tx_id.starts_with("0x") && deposit.tx_id.len() == 66,
        "{}",
        deposit.tx_id
    );
    assert!(deposit.confirmations >= 1, "{deposit:?}");

    // anvil finalizes latest - 64.
    anvil.mine(64).await.expect("mine");
    wait_balances(
        &mut wallets,
        &access,
        &[
            ("ETH", "2500000000000000000", "0", 18),
            ("TUSD", "12340000", "0", 6),
        ],
    )
    .await;
    let listed = history(&server, &access, None, Some("deposit_credit")).await;
    assert_eq!(listed.len(), 2);
    for credit in &listed {
        let deposit = credit.deposit.as_ref().expect("deposit details");
        assert_eq!(deposit.status, "credited");
        let asset = credit
            .changes
            .iter()
            .find(|c| c.bucket == "available")
            .map(|c| c.asset.as_str());
        let block = if asset == Some("ETH") {
            eth_block
        } else {
            token_block
        };
        assert_eq!(deposit.block_height, block, "{credit:?}");
        assert!(deposit.confirmations >= 65, "{deposit:?}");
    }
    let body = scrape(server.metrics()).await;
    assert_eq!(
        sample(
            &body,
            "coffer_deposits_total{chain=\"ethereum\",asset=\"ETH\",status=\"credited\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert!(
        sample(&body, "coffer_chain_finalized_height{chain=\"ethereum\"}")
            .is_some_and(|h| h >= token_block as f64)
    );
    assert_eq!(
        sample(&body, "coffer_watcher_halted{chain=\"ethereum\"}"),
        Some(0.0)
    );
    assert!(
        body.contains("coffer_deposit_detection_seconds_bucket{chain=\"ethereum\",le=")
            && body.contains(
                "coffer_chain_rpc_duration_seconds_bucket{chain=\"ethereum\",method=\"eth_getBlockByNumber\",le="
            ),
        "histograms export buckets:\n{body}"
    );
}

/// The block a transaction was mined in, from its receipt.
async fn mined_in(anvil: &Anvil, tx: alloy_primitives::B256) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let receipt = anvil
            .request("eth_getTransactionReceipt", serde_json::json!([tx]))
            .await
            .expect("receipt");
        if let Some(number) = receipt["blockNumber"].as_str() {
            return u64::from_str_radix(number.trim_start_matches("0x"), 16).expect("block number");
        }
        assert!(Instant::now() < deadline, "{tx} not mined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitcoin_payment_shows_pending_at_one_confirmation_then_available_over_grpc() {
    use chains::devnet::Btcd;

    let node = Btcd::spawn().await.expect("btcd");
    // Segwit activates on btcd's regtest after three 144-block windows.
    node.generate(432).await.expect("mine");
    let db = TestDb::new().await.expect("database");
    let rpc_url = node.rpc_url().to_owned();
    let server = server_on(
        |s| {
            s.chains.bitcoin.enabled = true;
            s.chains.bitcoin.rpc_url = rpc_url.into();
            s.chains.bitcoin.poll_interval_ms = 100;
            s.chains.bitcoin.chain.confirmations = 2;
        },
        db,
    )
    .await;
    let Depositor {
        access,
        mut wallets,
        addresses,
    } = depositor(&server, "saver@example.com", Chain::Bitcoin, 2).await;
    let addresses: Vec<bitcoin::Address> = addresses
        .iter()
        .map(|a| {
            a.parse::<bitcoin::Address<_>>()
                .expect("address")
                .require_network(bitcoin::Network::Regtest)
                .expect("regtest")
        })
        .collect();
    let tip = node.client().head().await.expect("head").height;
    wait_for_sample(
        server.metrics(),
        "coffer_chain_indexed_height{chain=\"bitcoin\"}",
        |h| h >= tip as f64,
    )
    .await;

    let (outpoint, value) = node.coinbase_output(1).await.expect("coinbase");
    let txid = node
        .pay(
            outpoint,
            value,
            &[
                (addresses[0].clone(), bitcoin::Amount::from_sat(40_000_000)),
                (addresses[1].clone(), bitcoin::Amount::from_sat(2_000_000)),
            ],
        )
        .await
        .expect("pay");
    node.generate(1).await.expect("mine");
    wait_balances(&mut wallets, &access, &[("BTC", "0", "42000000", 8)]).await;
    node.generate(1).await.expect("mine");
    wait_balances(&mut wallets, &access, &[("BTC", "42000000", "0", 8)]).await;

    let credits = history(&server, &access, None, Some("deposit_credit")).await;
    let mut outputs: Vec<(String, i64, String)> = credits
        .iter()
        .map(|t| {
            let d = t.deposit.as_ref().expect("deposit details");
            assert!(d.confirmations >= 2, "{d:?}");
            (d.tx_id.clone(), d.position, d.status.clone())
        })
        .collect();
    outputs.sort();
    let txid = txid.to_string();
    assert_eq!(
        outputs,
        vec![
            (txid.clone(), 0, "credited".into()),
            (txid, 1, "credited".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sol_deposit_shows_pending_at_confirmed_then_available_at_finalized_over_grpc() {
    use chains::devnet::SolanaValidator;
    use chains::devnet::solana_tx::{Keypair, system_transfer};

    let validator = SolanaValidator::shared()
        .await
        .expect("solana-test-validator");
    let db = TestDb::new().await.expect("database");
    // This binary's other tests issue Solana addresses from index 0.
    sqlx::query("UPDATE address_counters SET next_index = 500 WHERE chain = 'solana'")
        .execute(db.pool())
        .await
        .expect("counter");
    let rpc_url = validator.rpc_url().to_owned();
    let server = server_on(
        |s| {
            s.chains.solana.enabled = true;
            s.chains.solana.rpc_url = rpc_url.into();
            s.chains.solana.poll_interval_ms = 100;
        },
        db,
    )
    .await;
    let Depositor {
        access,
        mut wallets,
        addresses,
    } = depositor(&server, "sol@example.com", Chain::Solana, 1).await;
    let address = &addresses[0];
    wait_for_sample(
        server.metrics(),
        "coffer_chain_indexed_height{chain=\"solana\"}",
        |h| h > 0.0,
    )
    .await;

    let payer = Keypair::from_seed([0x71; 32]);
    validator
        .airdrop(&payer.pubkey(), 5_000_000_000)
        .await
        .expect("airdrop");
    let to = address.parse().expect("pubkey");
    let (signature, ok) = validator
        .send(
            &[system_transfer(&payer.pubkey(), &to, 1_250_000_000)],
            &[&payer],
        )
        .await
        .expect("transfer");
    assert!(ok);
    wait_balances(&mut wallets, &access, &[("SOL", "0", "1250000000", 9)]).await;
    wait_balances(&mut wallets, &access, &[("SOL", "1250000000", "0", 9)]).await;

    let listed = history(&server, &access, Some("SOL"), None).await;
    let kinds: Vec<&str> = listed.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, ["deposit_credit", "deposit_pending"]);
    let deposit = listed[0].deposit.as_ref().expect("deposit details");
    assert_eq!(
        (
            deposit.chain.as_str(),
            deposit.tx_id.as_str(),
            deposit.position,
            deposit.status.as_str()
        ),
        // The credited account's index in the transaction: after the payer.
        ("solana", signature.as_str(), 1, "credited")
    );
}
