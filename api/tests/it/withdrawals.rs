//! `WithdrawalService` end to end on a real server and database: holds,
//! idempotency, the four-eyes rule, paging, destinations, the policy's
//! limits and a race for one balance.

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Output};

use api::config::{AssetPolicies, AssetPolicySettings};
use api::grpc::pb::history_service_client::HistoryServiceClient;
use api::grpc::pb::wallet_service_client::WalletServiceClient;
use api::grpc::pb::withdrawal_service_client::WithdrawalServiceClient;
use api::grpc::pb::{self, Chain, WithdrawalStatus};
use indexer::ledger::Amount;
use indexer::users::{Role, Users};
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::support::{
    Daemon, Server, api_only_settings, bearer, credit, server_with, user_with_role,
};

/// An EIP-55 test vector: a valid checksummed address nobody in Coffer owns.
const OUTSIDE: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
/// ETH's policy in these tests: fee, approval threshold, daily limit.
const FEE: u64 = 10;
const THRESHOLD: u64 = 1_000;
const DAILY_LIMIT: u64 = 100_000;

fn policy(fee: u64, threshold: u64, daily_limit: u64) -> AssetPolicySettings {
    AssetPolicySettings {
        fee: Some(Amount::from_u64(fee)),
        approval_threshold: Some(Amount::from_u64(threshold)),
        daily_limit: Some(Amount::from_u64(daily_limit)),
    }
}

/// A server where ETH and BTC can be withdrawn (SOL cannot).
async fn withdrawal_server() -> Server {
    server_with(|settings| {
        settings.withdrawals.assets = AssetPolicies(BTreeMap::from([
            ("ETH".to_owned(), policy(FEE, THRESHOLD, DAILY_LIMIT)),
            ("BTC".to_owned(), policy(1, THRESHOLD, DAILY_LIMIT)),
        ]));
    })
    .await
}

async fn withdrawals(server: &Server) -> WithdrawalServiceClient<Channel> {
    WithdrawalServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect")
}

fn eth(amount: &str, destination: &str, key: &str) -> pb::RequestWithdrawalRequest {
    pb::RequestWithdrawalRequest {
        asset: "ETH".into(),
        amount: amount.into(),
        destination: destination.into(),
        idempotency_key: key.into(),
        user_id: None,
    }
}

fn id_of(id: &str) -> pb::GetWithdrawalRequest {
    pb::GetWithdrawalRequest { id: id.into() }
}

fn status(withdrawal: &pb::Withdrawal) -> WithdrawalStatus {
    WithdrawalStatus::try_from(withdrawal.status).expect("known status")
}

/// `(available, held)` of `asset` for the token's user.
async fn balance(server: &Server, token: &str, asset: &str) -> (String, String) {
    let mut wallets = WalletServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect");
    let balances = wallets
        .get_balances(bearer(pb::GetBalancesRequest { user_id: None }, token))
        .await
        .expect("balances")
        .into_inner()
        .balances;
    balances
        .into_iter()
        .find(|b| b.asset == asset)
        .map(|b| (b.available, b.held))
        .unwrap_or_else(|| ("0".into(), "0".into()))
}

/// Asserts `result` failed with `code` and a message starting with `prefix`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    prefix: &str,
) -> tonic::Status {
    let err = result.expect_err("refused");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(err.message().starts_with(prefix), "{prefix}: {err:?}");
    err
}

/// Claims row `id` in `status` as the payout loop would. A refused call's
/// transaction rolls back as its connection goes back to the pool, so its
/// row lock may outlive the reply briefly: this waits up to 2 s for it.
async fn claim_when_free(
    store: &indexer::withdrawals::Withdrawals,
    id: i64,
    status: indexer::withdrawals::WithdrawalStatus,
) -> indexer::withdrawals::Claimed {
    for _ in 0..100 {
        if let Some(claimed) = store.claim(id, &[status]).await.expect("claim") {
            return claimed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("row {id} still locked 2 s after the refused call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_holds_amount_plus_fee_once_per_key() {
    let server = withdrawal_server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (_, service) = user_with_role(&server, "backend@example.com", Role::Service).await;
    let (_, bob_token) = user_with_role(&server, "bob@example.com", Role::User).await;
    credit(&server, alice, "ETH", 10_000).await;
    let mut client = withdrawals(&server).await;

    let first = client
        .request_withdrawal(bearer(eth("500", OUTSIDE, "w-1"), &alice_token))
        .await
        .expect("request")
        .into_inner();
    assert_eq!(
        status(&first),
        WithdrawalStatus::Approved,
        "under the threshold"
    );
    assert_eq!(
        (
            first.amount.as_str(),
            first.fee.as_str(),
            first.asset.as_str()
        ),
        ("500", "10", "ETH")
    );
    assert_eq!(first.chain, i32::from(Chain::Ethereum));
    assert_eq!(first.user_id, alice.to_string());
    assert_eq!(first.requested_by, alice.to_string());
    assert_eq!(first.destination, OUTSIDE);
    assert!(first.approved_at.is_some() && first.approved_by.is_empty());
    assert!(first.tx_hashes.is_empty() && first.tx_hash.is_empty());
    assert_eq!(first.confirmations, 0);
    assert_eq!(
        balance(&server, &alice_token, "ETH").await,
        ("9490".into(), "510".into())
    );

    // The hold is in the history: amount plus fee from available to held.
    let mut history = HistoryServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect");
    let holds = history
        .list_transactions(bearer(
            pb::ListTransactionsRequest {
                user_id: None,
                asset: None,
                kind: Some("withdrawal_hold".into()),
                page_size: 0,
                page_token: String::new(),
            },
            &alice_token,
        ))
        .await
        .expect("history")
        .into_inner()
        .transactions;
    assert_eq!(holds.len(), 1, "{holds:?}");
    let mut changes: Vec<(String, String)> = holds[0]
        .changes
        .iter()
        .map(|c| (c.bucket.clone(), c.amount.clone()))
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            ("available".to_owned(), "-510".to_owned()),
            ("held".to_owned(), "510".to_owned())
        ]
    );

    // The same request under the key, in another spelling of the same
    // address, is the same withdrawal; a different one is refused.
    let replay = client
        .request_withdrawal(bearer(
            eth("500", &OUTSIDE.to_lowercase(), "w-1"),
            &alice_token,
        ))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay, first);
    assert_refused(
        client
            .request_withdrawal(bearer(eth("501", OUTSIDE, "w-1"), &alice_token))
            .await,
        Code::AlreadyExists,
        "idempotency_key:",
    );
    assert_eq!(
        balance(&server, &alice_token, "ETH").await,
        ("9490".into(), "510".into())
    );

    // A service acts for alice; a user cannot.
    let for_alice = pb::RequestWithdrawalRequest {
        user_id: Some(alice.to_string()),
        ..eth("100", OUTSIDE, "svc-1")
    };
    let by_service = client
        .request_withdrawal(bearer(for_alice.clone(), &service))
        .await
        .expect("service acts for alice")
        .into_inner();
    assert_eq!(by_service.user_id, alice.to_string());
    assert_ne!(by_service.requested_by, alice.to_string());
    assert_refused(
        client
            .request_withdrawal(bearer(for_alice, &bob_token))
            .await,
        Code::PermissionDenied,
        "user_id:",
    );
    assert_refused(
        client
            .request_withdrawal(tonic::Request::new(eth("1", OUTSIDE, "anon")))
            .await,
        Code::Unauthenticated,
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_threshold_an_operator_other_than_the_requester_decides() {
    let server = withdrawal_server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (operator, operator_token) =
        user_with_role(&server, "ops@example.com", Role::Operator).await;
    let (_, admin_token) = user_with_role(&server, "admin@example.com", Role::Admin).await;
    credit(&server, alice, "ETH", 10_000).await;
    credit(&server, operator, "ETH", 10_000).await;
    let mut client = withdrawals(&server).await;

    let big = client
        .request_withdrawal(bearer(eth("2000", OUTSIDE, "big"), &alice_token))
        .await
        .expect("request")
        .into_inner();
    assert_eq!(status(&big), WithdrawalStatus::Requested);
    assert!(big.approved_at.is_none());
    let approve = |id: &str| pb::ApproveWithdrawalRequest { id: id.into() };
    assert_refused(
        client
            .approve_withdrawal(bearer(approve(&big.id), &alice_token))
            .await,
        Code::PermissionDenied,
        "",
    );

    // An operator's own withdrawal needs another approver.
    let own = client
        .request_withdrawal(bearer(eth("3000", OUTSIDE, "ops-own"), &operator_token))
        .await
        .expect("operator's request")
        .into_inner();
    assert_refused(
        client
            .approve_withdrawal(bearer(approve(&own.id), &operator_token))
            .await,
        Code::PermissionDenied,
        "id: a withdrawal cannot be approved, rejected or resolved by its requester",
    );
    assert_refused(
        client
            .reject_withdrawal(bearer(
                pb::RejectWithdrawalRequest {
                    id: own.id.clone(),
                    reason: "no".into(),
                },
                &operator_token,
            ))
            .await,
        Code::PermissionDenied,
        "id: a withdrawal cannot be approved",
    );

    let approved = client
        .approve_withdrawal(bearer(approve(&big.id), &operator_token))
        .await
        .expect("operator approves")
        .into_inner();
    assert_eq!(status(&approved), WithdrawalStatus::Approved);
    assert_eq!(approved.approved_by, operator.to_string());
    assert!(approved.approved_at.is_some());
    assert_refused(
        client
            .approve_withdrawal(bearer(approve(&big.id), &admin_token))
            .await,
        Code::FailedPrecondition,
        "id: the withdrawal is approved",
    );
    assert_refused(
        client
            .approve_withdrawal(bearer(approve("999999"), &admin_token))
            .await,
        Code::NotFound,
        "id:",
    );
    assert_refused(
        client
            .approve_withdrawal(bearer(approve("nope"), &admin_token))
            .await,
        Code::InvalidArgument,
        "id:",
    );

    // Rejecting releases the hold; a reason is required.
    assert_eq!(
        balance(&server, &operator_token, "ETH").await,
        ("6990".into(), "3010".into())
    );
    let reject = |reason: &str| pb::RejectWithdrawalRequest {
        id: own.id.clone(),
        reason: reason.into(),
    };
    assert_refused(
        client
            .reject_withdrawal(bearer(reject("  "), &admin_token))
            .await,
        Code::InvalidArgument,
        "reason:",
    );
    let rejected = client
        .reject_withdrawal(bearer(reject("unknown destination"), &admin_token))
        .await
        .expect("admin rejects")
        .into_inner();
    assert_eq!(status(&rejected), WithdrawalStatus::Rejected);
    assert_eq!(rejected.reason, "unknown destination");
    assert!(rejected.finished_at.is_some());
    assert_eq!(
        balance(&server, &operator_token, "ETH").await,
        ("10000".into(), "0".into())
    );
    assert_refused(
        client
            .approve_withdrawal(bearer(approve(&own.id), &admin_token))
            .await,
        Code::FailedPrecondition,
        "id: the withdrawal is rejected",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_before_signing_releases_the_hold() {
    let server = withdrawal_server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (_, bob_token) = user_with_role(&server, "bob@example.com", Role::User).await;
    let (_, operator_token) = user_with_role(&server, "ops@example.com", Role::Operator).await;
    let (_, service_token) = user_with_role(&server, "svc@example.com", Role::Service).await;
    credit(&server, alice, "ETH", 10_000).await;
    let mut client = withdrawals(&server).await;
    let cancel = |id: &str, reason: Option<&str>| pb::CancelWithdrawalRequest {
        id: id.into(),
        reason: reason.map(Into::into),
    };

    let approved = client
        .request_withdrawal(bearer(eth("700", OUTSIDE, "c-1"), &alice_token))
        .await
        .expect("request")
        .into_inner();
    assert_refused(
        client
            .cancel_withdrawal(bearer(cancel(&approved.id, None), &bob_token))
            .await,
        Code::NotFound,
        "id: no such withdrawal",
    );
    assert_refused(
        client
            .cancel_withdrawal(bearer(cancel(&approved.id, None), &operator_token))
            .await,
        Code::PermissionDenied,
        "id:",
    );
    let cancelled = client
        .cancel_withdrawal(bearer(
            cancel(&approved.id, Some("changed my mind")),
            &alice_token,
        ))
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(status(&cancelled), WithdrawalStatus::Cancelled);
    assert_eq!(cancelled.reason, "changed my mind");
    assert!(cancelled.finished_at.is_some());
    assert_eq!(
        balance(&server, &alice_token, "ETH").await,
        ("10000".into(), "0".into())
    );
    assert_refused(
        client
            .cancel_withdrawal(bearer(cancel(&approved.id, None), &alice_token))
            .await,
        Code::FailedPrecondition,
        "id: the withdrawal is cancelled",
    );

    // A requested one too, by a service acting for its customer.
    let waiting = client
        .request_withdrawal(bearer(eth("5000", OUTSIDE, "c-2"), &alice_token))
        .await
        .expect("request")
        .into_inner();
    assert_eq!(status(&waiting), WithdrawalStatus::Requested);
    let cancelled = client
        .cancel_withdrawal(bearer(cancel(&waiting.id, None), &service_token))
        .await
        .expect("service cancels")
        .into_inner();
    assert_eq!(status(&cancelled), WithdrawalStatus::Cancelled);
    assert_eq!(
        balance(&server, &alice_token, "ETH").await,
        ("10000".into(), "0".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_by_keyset_filter_by_status_and_stay_private() {
    let server = withdrawal_server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (bob, bob_token) = user_with_role(&server, "bob@example.com", Role::User).await;
    let (_, operator_token) = user_with_role(&server, "ops@example.com", Role::Operator).await;
    credit(&server, alice, "ETH", 10_000).await;
    credit(&server, bob, "ETH", 10_000).await;
    let mut client = withdrawals(&server).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let made = client
            .request_withdrawal(bearer(eth("100", OUTSIDE, &format!("l-{i}")), &alice_token))
            .await
            .expect("request")
            .into_inner();
        ids.push(made.id);
    }
    let bobs = client
        .request_withdrawal(bearer(eth("100", OUTSIDE, "bob-1"), &bob_token))
        .await
        .expect("bob's request")
        .into_inner();
    client
        .cancel_withdrawal(bearer(
            pb::CancelWithdrawalRequest {
                id: ids[1].clone(),
                reason: None,
            },
            &alice_token,
        ))
        .await
        .expect("cancel");
    let list = |status: WithdrawalStatus, page_size: u32, token: &str, user: Option<String>| {
        pb::ListWithdrawalsRequest {
            status: status.into(),
            page_size,
            page_token: token.into(),
            user_id: user,
        }
    };

    // Alice's pages: newest first, none twice, none left out.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_withdrawals(bearer(
                list(WithdrawalStatus::Unspecified, 2, &token, None),
                &alice_token,
            ))
            .await
            .expect("page")
            .into_inner();
        assert!(page.withdrawals.len() <= 2);
        assert!(
            page.withdrawals
                .iter()
                .all(|w| w.user_id == alice.to_string())
        );
        seen.extend(page.withdrawals.into_iter().map(|w| w.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let cancelled = client
        .list_withdrawals(bearer(
            list(WithdrawalStatus::Cancelled, 0, "", None),
            &alice_token,
        ))
        .await
        .expect("filtered")
        .into_inner()
        .withdrawals;
    let cancelled: Vec<&str> = cancelled.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(cancelled, [ids[1].as_str()]);

    // Bob sees only his own and nothing of alice's.
    let bob_sees = client
        .list_withdrawals(bearer(
            list(WithdrawalStatus::Unspecified, 0, "", None),
            &bob_token,
        ))
        .await
        .expect("bob's list")
        .into_inner()
        .withdrawals;
    let bob_sees: Vec<&str> = bob_sees.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(bob_sees, [bobs.id.as_str()]);
    assert_refused(
        client
            .get_withdrawal(bearer(id_of(&ids[0]), &bob_token))
            .await,
        Code::NotFound,
        "id: no such withdrawal",
    );
    assert_refused(
        client
            .list_withdrawals(bearer(
                list(
                    WithdrawalStatus::Unspecified,
                    0,
                    "",
                    Some(alice.to_string()),
                ),
                &bob_token,
            ))
            .await,
        Code::PermissionDenied,
        "user_id:",
    );
    let alices = client
        .get_withdrawal(bearer(id_of(&ids[0]), &alice_token))
        .await
        .expect("her own")
        .into_inner();
    assert_eq!(alices.id, ids[0]);

    // Staff see everyone's, or one user's.
    let all = client
        .list_withdrawals(bearer(
            list(WithdrawalStatus::Unspecified, 0, "", None),
            &operator_token,
        ))
        .await
        .expect("operator lists all")
        .into_inner()
        .withdrawals;
    assert_eq!(all.len(), 6);
    let of_alice = client
        .list_withdrawals(bearer(
            list(
                WithdrawalStatus::Unspecified,
                0,
                "",
                Some(alice.to_string()),
            ),
            &operator_token,
        ))
        .await
        .expect("operator filters by user")
        .into_inner()
        .withdrawals;
    assert_eq!(of_alice.len(), 5);
    client
        .get_withdrawal(bearer(id_of(&bobs.id), &operator_token))
        .await
        .expect("operator reads bob's");
    assert_refused(
        client
            .list_withdrawals(bearer(
                list(WithdrawalStatus::Unspecified, 0, "garbage", None),
                &alice_token,
            ))
            .await,
        Code::InvalidArgument,
        "page_token:",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_checked_and_coffer_addresses_refused() {
    let server = withdrawal_server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (_, bob_token) = user_with_role(&server, "bob@example.com", Role::User).await;
    credit(&server, alice, "ETH", 10_000).await;
    credit(&server, alice, "BTC", 10_000).await;
    let mut client = withdrawals(&server).await;

    // Bob's deposit addresses on Ethereum and Bitcoin.
    let mut wallets = WalletServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect");
    let mut deposit_address = async |chain: Chain| {
        let wallet = wallets
            .create_wallet(bearer(
                pb::CreateWalletRequest {
                    chain: chain.into(),
                    user_id: None,
                },
                &bob_token,
            ))
            .await
            .expect("wallet")
            .into_inner();
        wallets
            .new_deposit_address(bearer(
                pb::NewDepositAddressRequest {
                    wallet_id: wallet.id,
                },
                &bob_token,
            ))
            .await
            .expect("address")
            .into_inner()
            .address
    };
    let bob_eth = deposit_address(Chain::Ethereum).await;
    let bob_btc = deposit_address(Chain::Bitcoin).await;
    let keys = api::app::load_deposit_keys(&api::Settings::default()).expect("devnet keys");
    let hot_eth = keys
        .hot_wallet_address(chains::Chain::Ethereum)
        .expect("hot wallet")
        .address;
    let hot_btc = keys
        .hot_wallet_address(chains::Chain::Bitcoin)
        .expect("hot wallet")
        .address;

    let flipped = OUTSIDE.replacen('a', "A", 1);
    let cases: [(&str, &str, &str); 10] = [
        ("ETH", "", "destination: is required"),
        (
            "ETH",
            "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "destination: must be an Ethereum address",
        ),
        (
            "ETH",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeZ",
            "destination: must be an Ethereum address",
        ),
        ("ETH", &flipped, "destination: fails its EIP-55 checksum"),
        (
            "ETH",
            "0x0000000000000000000000000000000000000000",
            "destination: is the zero address",
        ),
        (
            "ETH",
            &bob_eth,
            "destination: is one of Coffer's own addresses",
        ),
        (
            "ETH",
            &hot_eth,
            "destination: is one of Coffer's own addresses",
        ),
        (
            "BTC",
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            "destination: must be an address for Bitcoin regtest",
        ),
        (
            "BTC",
            &bob_btc,
            "destination: is one of Coffer's own addresses",
        ),
        (
            "BTC",
            &hot_btc,
            "destination: is one of Coffer's own addresses",
        ),
    ];
    for (i, (asset, destination, prefix)) in cases.into_iter().enumerate() {
        let request = pb::RequestWithdrawalRequest {
            asset: asset.into(),
            ..eth("100", destination, &format!("d-{i}"))
        };
        let err = assert_refused(
            client
                .request_withdrawal(bearer(request, &alice_token))
                .await,
            Code::InvalidArgument,
            prefix,
        );
        if prefix.contains("own addresses") {
            assert!(
                err.message()
                    .contains("P2P transfer (use SettlementService.Transfer)"),
                "{err:?}"
            );
        }
    }
    // Own addresses in any case are still own.
    for spelling in [
        bob_eth.to_lowercase(),
        format!("0x{}", bob_eth[2..].to_uppercase()),
    ] {
        assert_refused(
            client
                .request_withdrawal(bearer(eth("100", &spelling, "d-case"), &alice_token))
                .await,
            Code::InvalidArgument,
            "destination: is one of Coffer's own addresses",
        );
    }
    assert_eq!(
        balance(&server, &alice_token, "ETH").await,
        ("10000".into(), "0".into()),
        "nothing was held"
    );

    // A valid outside Bitcoin address goes through.
    let btc = client
        .request_withdrawal(bearer(
            pb::RequestWithdrawalRequest {
                asset: "btc".into(),
                ..eth(
                    "100",
                    "BCRT1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KYGT080",
                    "d-btc",
                )
            },
            &alice_token,
        ))
        .await
        .expect("bitcoin withdrawal")
        .into_inner();
    assert_eq!(
        btc.destination,
        "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    );
    assert_eq!(
        (btc.asset.as_str(), btc.chain),
        ("BTC", i32::from(Chain::Bitcoin))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_amounts_limits_and_funds_are_checked() {
    let server = withdrawal_server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (poor, poor_token) = user_with_role(&server, "poor@example.com", Role::User).await;
    credit(&server, alice, "ETH", 1_000_000).await;
    credit(&server, alice, "SOL", 1_000_000).await;
    credit(&server, poor, "ETH", 100).await;
    let mut client = withdrawals(&server).await;

    assert_refused(
        client
            .request_withdrawal(bearer(
                pb::RequestWithdrawalRequest {
                    asset: "NOPE".into(),
                    ..eth("1", OUTSIDE, "a-1")
                },
                &alice_token,
            ))
            .await,
        Code::InvalidArgument,
        "asset: unknown asset",
    );
    assert_refused(
        client
            .request_withdrawal(bearer(
                pb::RequestWithdrawalRequest {
                    asset: "SOL".into(),
                    ..eth("1", "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T", "a-2")
                },
                &alice_token,
            ))
            .await,
        Code::FailedPrecondition,
        "asset: withdrawals of `SOL` are not enabled",
    );
    for amount in ["0", "-5", "abc", "1.5", ""] {
        assert_refused(
            client
                .request_withdrawal(bearer(eth(amount, OUTSIDE, "a-3"), &alice_token))
                .await,
            Code::InvalidArgument,
            "amount:",
        );
    }

    // The daily limit counts approved and waiting withdrawals alike.
    client
        .request_withdrawal(bearer(eth("60000", OUTSIDE, "lim-1"), &alice_token))
        .await
        .expect("under the limit");
    let over = assert_refused(
        client
            .request_withdrawal(bearer(eth("50000", OUTSIDE, "lim-2"), &alice_token))
            .await,
        Code::FailedPrecondition,
        "amount: the daily withdrawal limit",
    );
    assert!(over.message().contains("100000"), "{over:?}");
    client
        .request_withdrawal(bearer(eth("40000", OUTSIDE, "lim-3"), &alice_token))
        .await
        .expect("exactly up to the limit");

    // 95 plus the fee of 10 is more than 100.
    assert_refused(
        client
            .request_withdrawal(bearer(eth("95", OUTSIDE, "f-1"), &poor_token))
            .await,
        Code::FailedPrecondition,
        "amount: insufficient",
    );
    client
        .request_withdrawal(bearer(eth("90", OUTSIDE, "f-2"), &poor_token))
        .await
        .expect("90 plus 10 fits");
    assert_eq!(
        balance(&server, &poor_token, "ETH").await,
        ("0".into(), "100".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_cannot_request_for_a_missing_or_disabled_user() {
    let server = withdrawal_server().await;
    let (_, service) = user_with_role(&server, "backend@example.com", Role::Service).await;
    let (carol, _) = user_with_role(&server, "carol@example.com", Role::User).await;
    credit(&server, carol, "ETH", 1_000_000).await;
    let mut client = withdrawals(&server).await;
    let for_user = |user: Uuid, key: &str| pb::RequestWithdrawalRequest {
        user_id: Some(user.to_string()),
        ..eth("1000", OUTSIDE, key)
    };
    assert_refused(
        client
            .request_withdrawal(bearer(for_user(Uuid::new_v4(), "m-1"), &service))
            .await,
        Code::NotFound,
        "user_id: no such user",
    );
    Users::new(server.db.pool().clone())
        .disable(carol)
        .await
        .expect("disable");
    assert_refused(
        client
            .request_withdrawal(bearer(for_user(carol, "m-2"), &service))
            .await,
        Code::FailedPrecondition,
        "user_id: the user is disabled",
    );
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM withdrawals")
        .fetch_one(server.db.pool())
        .await
        .expect("count");
    assert_eq!(held, 0, "nothing requested, nothing held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_over_a_balance_for_seven() {
    let server = withdrawal_server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    // Each takes 90 + 10; 750 covers seven, with 50 left.
    credit(&server, alice, "ETH", 750).await;
    let client = withdrawals(&server).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (mut client, token) = (client.clone(), alice_token.clone());
        tasks.push(tokio::spawn(async move {
            client
                .request_withdrawal(bearer(eth("90", OUTSIDE, &format!("race-{i}")), &token))
                .await
        }));
    }
    let mut ids = HashSet::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(made) => {
                ids.insert(made.into_inner().id);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(
                    status.message().starts_with("amount: insufficient"),
                    "{status:?}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!((ids.len(), refused), (7, 13));
    assert_eq!(
        balance(&server, &alice_token, "ETH").await,
        ("50".into(), "700".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_for_an_asset_the_ledger_lacks_stops_startup_naming_the_key() {
    let db = indexer::devnet::TestDb::new().await.expect("database");
    let mut settings = api_only_settings(&db);
    settings.metrics.enabled = false;
    settings.withdrawals.assets =
        AssetPolicies(BTreeMap::from([("DOGE".to_owned(), policy(1, 1, 1))]));
    let daemon = Daemon::start(settings).await;
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(60), daemon.running)
        .await
        .expect("stops within 60 s")
        .expect("run task");
    let err = format!("{:#}", outcome.expect_err("startup fails"));
    assert!(
        err.contains("config key `withdrawals.assets.DOGE`"),
        "{err}"
    );
}

fn check_config(file: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
    for (key, _) in std::env::vars() {
        if key.starts_with("COFFER__") || key == "COFFER_CONFIG" {
            cmd.env_remove(key);
        }
    }
    if let Some(file) = file {
        cmd.args(["--config", file]);
    }
    cmd.arg("check-config").envs(env.iter().copied());
    cmd.output().expect("run coffer")
}

#[test]
fn the_policy_comes_from_file_and_environment_and_bad_values_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("coffer.toml");
    std::fs::write(
        &path,
        "[withdrawals.assets.ETH]\nfee = \"1000\"\napproval_threshold = \"5000\"\ndaily_limit = \"1000000000000000000000\"\n",
    )
    .expect("write config");
    let path = path.to_str().expect("utf-8 path");

    // The environment overrides the file's entry field by field.
    let output = check_config(
        Some(path),
        &[
            ("COFFER__WITHDRAWALS__ASSETS__ETH__FEE", "2000"),
            ("COFFER__WITHDRAWALS__ASSETS__BTC__FEE", "1"),
            ("COFFER__WITHDRAWALS__ASSETS__BTC__APPROVAL_THRESHOLD", "0"),
            ("COFFER__WITHDRAWALS__ASSETS__BTC__DAILY_LIMIT", "100000000"),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    for line in [
        "[withdrawals.assets.ETH]",
        "fee = \"2000\"",
        "approval_threshold = \"5000\"",
        "daily_limit = \"1000000000000000000000\"",
        "[withdrawals.assets.BTC]",
        "daily_limit = \"100000000\"",
    ] {
        assert!(stdout.contains(line), "{line} in:\n{stdout}");
    }
    assert!(!stdout.contains("assets.eth"), "{stdout}");

    for (env, key) in [
        (
            ("COFFER__WITHDRAWALS__ASSETS__ETH__FEE", "1.5"),
            "withdrawals.assets.eth.fee",
        ),
        (
            ("COFFER__WITHDRAWALS__ASSETS__ETH__FEE", "-1"),
            "withdrawals.assets.eth.fee",
        ),
        (
            ("COFFER__WITHDRAWALS__ASSETS__ETH__FEE", "lots"),
            "withdrawals.assets.eth.fee",
        ),
        (
            ("COFFER__WITHDRAWALS__ASSETS__ETH__FEES", "1"),
            "withdrawals.assets.eth.fees",
        ),
        (
            ("COFFER__WITHDRAWALS__ASSETS__SOL__FEE", "1"),
            "withdrawals.assets.SOL.daily_limit",
        ),
        (
            ("COFFER__WITHDRAWALS__ASSETS__ETH__DAILY_LIMIT", "0"),
            "withdrawals.assets.ETH.daily_limit",
        ),
    ] {
        let output = check_config(Some(path), &[env]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.contains(&format!("config key `{key}`")),
            "{env:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_withdrawal_shows_its_transactions_and_confirmations() {
    use indexer::withdrawals::{SignedAttempt, Withdrawals};

    let server = withdrawal_server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    credit(&server, alice, "ETH", 10_000).await;
    let mut client = withdrawals(&server).await;
    let made = client
        .request_withdrawal(bearer(eth("500", OUTSIDE, "s-1"), &alice_token))
        .await
        .expect("request")
        .into_inner();

    // What the pipeline's worker does before sending: reserve, sign, store.
    let pool = server.db.pool().clone();
    let store = Withdrawals::new(
        indexer::ledger::Ledger::new(pool.clone()),
        api::config::WithdrawalsSettings::default().policy(),
    );
    let keys = api::app::load_deposit_keys(&api::Settings::default()).expect("devnet keys");
    let hot = keys
        .hot_wallet_address(chains::Chain::Ethereum)
        .expect("hot wallet")
        .address;
    let (reserved, _) = store
        .reserve_nonce(&hot, 0)
        .await
        .expect("reserve")
        .expect("an approved withdrawal");
    assert_eq!(reserved.id.to_string(), made.id);
    let hash = format!("0x{}", "ab".repeat(32));
    store
        .record_signed(
            reserved.id,
            &SignedAttempt {
                tx_hash: hash.clone(),
                raw_tx: vec![2, 1],
                fee_limit: Amount::from_u64(21_000),
                max_fee_per_gas: Some(Amount::from_u64(1)),
                max_priority_fee_per_gas: Some(Amount::from_u64(1)),
                gas_limit: Some(21_000),
                valid_until_height: None,
            },
        )
        .await
        .expect("signed");

    let signed = client
        .get_withdrawal(bearer(id_of(&made.id), &alice_token))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(status(&signed), WithdrawalStatus::Signed);
    assert_eq!(signed.tx_hashes, [hash.as_str()]);
    assert_eq!(signed.tx_hash, hash);
    assert_eq!(signed.confirmations, 0, "nothing landed");
    assert_refused(
        client
            .cancel_withdrawal(bearer(
                pb::CancelWithdrawalRequest {
                    id: made.id.clone(),
                    reason: None,
                },
                &alice_token,
            ))
            .await,
        Code::FailedPrecondition,
        "id: the withdrawal is signed; it cannot be cancelled",
    );

    // Landed at 100 with the watcher's head at 111: 12 confirmations.
    let claimed = claim_when_free(
        &store,
        reserved.id,
        indexer::withdrawals::WithdrawalStatus::Signed,
    )
    .await;
    let attempt_id = claimed.current().expect("an attempt").id;
    claimed
        .record_landed(&indexer::withdrawals::Landing {
            attempt_id,
            block_hash: "0x01".into(),
            block_height: 100,
            success: true,
            fee_paid: Amount::from_u64(21_000),
        })
        .await
        .expect("land the attempt");
    let head = |height| chains::ChainHead {
        height,
        hash: Some(format!("0x{height:x}")),
    };
    indexer::chain_heads::record_head(&pool, chains::Chain::Ethereum, &head(111))
        .await
        .expect("head");
    let landed = client
        .list_withdrawals(bearer(
            pb::ListWithdrawalsRequest {
                status: WithdrawalStatus::Confirming.into(),
                page_size: 0,
                page_token: String::new(),
                user_id: None,
            },
            &alice_token,
        ))
        .await
        .expect("list")
        .into_inner()
        .withdrawals;
    assert_eq!(landed.len(), 1);
    assert_eq!(landed[0].confirmations, 12);
    indexer::chain_heads::record_head(&pool, chains::Chain::Ethereum, &head(100))
        .await
        .expect("head");
    let just_landed = client
        .get_withdrawal(bearer(id_of(&made.id), &alice_token))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(just_landed.confirmations, 1);
}

/// A withdrawal whose outcome the payout loop could not tell waits in
/// manual, held, until an admin who neither asked for nor owns it says
/// what the chain shows, once, and the loop applies it; everyone else is
/// refused with the right code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_another_admin_resolves_a_manual_withdrawal() {
    use indexer::withdrawals::{SignedAttempt, Withdrawals};

    let server = withdrawal_server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (_, operator_token) = user_with_role(&server, "ops@example.com", Role::Operator).await;
    let (_, acting_admin) = user_with_role(&server, "admin1@example.com", Role::Admin).await;
    let (_, other_admin) = user_with_role(&server, "admin2@example.com", Role::Admin).await;
    credit(&server, alice, "ETH", 10_000).await;
    let mut client = withdrawals(&server).await;
    let mut for_alice = eth("500", OUTSIDE, "m-1");
    for_alice.user_id = Some(alice.to_string());
    let made = client
        .request_withdrawal(bearer(for_alice, &acting_admin))
        .await
        .expect("request for alice")
        .into_inner();
    let resolve = |resolution: pb::ManualResolution, reason: &str| pb::ResolveWithdrawalRequest {
        id: made.id.clone(),
        resolution: resolution.into(),
        reason: reason.into(),
    };
    assert_refused(
        client
            .resolve_withdrawal(bearer(
                resolve(pb::ManualResolution::Release, "not manual"),
                &other_admin,
            ))
            .await,
        Code::FailedPrecondition,
        "id: the withdrawal is approved; it cannot be resolved",
    );

    // What the payout loop does when the nonce went to a transaction that
    // is none of the row's attempts: reserve, sign, then manual.
    let store = Withdrawals::new(
        indexer::ledger::Ledger::new(server.db.pool().clone()),
        api::config::WithdrawalsSettings::default().policy(),
    );
    let (reserved, _) = store
        .reserve_nonce("0x00000000000000000000000000000000000000bb", 0)
        .await
        .expect("reserve")
        .expect("an approved withdrawal");
    store
        .record_signed(
            reserved.id,
            &SignedAttempt {
                tx_hash: format!("0x{}", "cd".repeat(32)),
                raw_tx: vec![2, 1],
                fee_limit: Amount::from_u64(21_000),
                max_fee_per_gas: Some(Amount::from_u64(1)),
                max_priority_fee_per_gas: Some(Amount::from_u64(1)),
                gas_limit: Some(21_000),
                valid_until_height: None,
            },
        )
        .await
        .expect("signed");
    store
        .claim(
            reserved.id,
            &[indexer::withdrawals::WithdrawalStatus::Signed],
        )
        .await
        .expect("claim")
        .expect("free")
        .to_manual("nonce 0 was used at a final height by another transaction")
        .await
        .expect("to manual");
    let manual = client
        .get_withdrawal(bearer(id_of(&made.id), &alice_token))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(status(&manual), WithdrawalStatus::Manual);
    assert_eq!(
        balance(&server, &alice_token, "ETH").await,
        ("9490".into(), "510".into()),
        "held while manual"
    );

    // Neither the owner nor an operator: resolving is for admins.
    for token in [&alice_token, &operator_token] {
        assert_refused(
            client
                .resolve_withdrawal(bearer(
                    resolve(pb::ManualResolution::Release, "mine"),
                    token,
                ))
                .await,
            Code::PermissionDenied,
            "the ",
        );
    }
    assert_refused(
        client
            .resolve_withdrawal(bearer(
                resolve(pb::ManualResolution::Settle, "I asked for it"),
                &acting_admin,
            ))
            .await,
        Code::PermissionDenied,
        "id: a withdrawal cannot be approved, rejected or resolved by its requester",
    );
    assert_refused(
        client
            .resolve_withdrawal(bearer(
                resolve(pb::ManualResolution::Unspecified, "found it"),
                &other_admin,
            ))
            .await,
        Code::InvalidArgument,
        "resolution:",
    );
    let mut unknown = resolve(pb::ManualResolution::Settle, "found it");
    unknown.resolution = 7;
    assert_refused(
        client
            .resolve_withdrawal(bearer(unknown, &other_admin))
            .await,
        Code::InvalidArgument,
        "resolution: unknown value 7",
    );
    assert_refused(
        client
            .resolve_withdrawal(bearer(
                resolve(pb::ManualResolution::Settle, "  "),
                &other_admin,
            ))
            .await,
        Code::InvalidArgument,
        "reason:",
    );

    let resolved = client
        .resolve_withdrawal(bearer(
            resolve(
                pb::ManualResolution::Settle,
                "paid by tx 0xcdcd… in block 812, found by hand",
            ),
            &other_admin,
        ))
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(
        status(&resolved),
        WithdrawalStatus::Manual,
        "the payout loop applies it"
    );
    assert_eq!(resolved.resolution, i32::from(pb::ManualResolution::Settle));
    assert!(!resolved.resolved_by.is_empty());
    assert_refused(
        client
            .resolve_withdrawal(bearer(
                resolve(pb::ManualResolution::Release, "changed my mind"),
                &other_admin,
            ))
            .await,
        Code::FailedPrecondition,
        "id: the withdrawal is manual; it cannot be resolved twice",
    );

    // What the payout loop does once it found none of the row's
    // transactions landed.
    claim_when_free(
        &store,
        reserved.id,
        indexer::withdrawals::WithdrawalStatus::Manual,
    )
    .await
    .apply_resolution()
    .await
    .expect("apply");
    let settled = client
        .get_withdrawal(bearer(id_of(&made.id), &alice_token))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(status(&settled), WithdrawalStatus::Completed);
    assert_eq!(
        settled.reason,
        "nonce 0 was used at a final height by another transaction; \
         resolved by an admin: paid by tx 0xcdcd… in block 812, found by hand"
    );
    assert!(settled.finished_at.is_some());
    assert_eq!(settled.resolution, i32::from(pb::ManualResolution::Settle));
    assert_eq!(
        balance(&server, &alice_token, "ETH").await,
        ("9490".into(), "0".into()),
        "settled: the amount and the fee are gone"
    );
    assert_refused(
        client
            .resolve_withdrawal(bearer(
                resolve(pb::ManualResolution::Release, "twice"),
                &other_admin,
            ))
            .await,
        Code::FailedPrecondition,
        "id: the withdrawal is completed; it cannot be resolved",
    );
}
