//! `SettlementService` end to end: the classic double-spend hunts over a
//! real server.

use std::time::Duration;

use api::grpc::pb::history_service_client::HistoryServiceClient;
use api::grpc::pb::settlement_service_client::SettlementServiceClient;
use api::grpc::pb::wallet_service_client::WalletServiceClient;
use api::grpc::pb::{self, OfferStatus, transfer_request::Recipient};
use indexer::users::Role;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::support::{
    Server, bearer, client as auth_client, credit, server, server_with, user_with_role,
};

async fn settlement(server: &Server) -> SettlementServiceClient<Channel> {
    SettlementServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect")
}

async fn available(server: &Server, token: &str, asset: &str) -> String {
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
        .map(|b| b.available)
        .unwrap_or_else(|| "0".into())
}

fn transfer_to(to: Uuid, asset: &str, amount: &str, key: &str) -> pb::TransferRequest {
    pb::TransferRequest {
        recipient: Some(Recipient::ToUserId(to.to_string())),
        asset: asset.into(),
        amount: amount.into(),
        idempotency_key: key.into(),
        memo: Some("lunch".into()),
        user_id: None,
    }
}

/// Sends `request` as `token` and asserts it is refused with `code` and a
/// message starting with `prefix`.
async fn assert_transfer_refused(
    client: &mut SettlementServiceClient<Channel>,
    token: &str,
    request: pb::TransferRequest,
    code: Code,
    prefix: &str,
) {
    let err = client
        .transfer(bearer(request.clone(), token))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), code, "{request:?}: {err:?}");
    assert!(err.message().starts_with(prefix), "{request:?}: {err:?}");
}

/// The caller's offer of `amount` BTC for 1000 ETH, open until cancelled.
fn btc_for_eth(amount: &str, key: &str) -> pb::CreateOfferRequest {
    pb::CreateOfferRequest {
        sell_asset: "BTC".into(),
        sell_amount: amount.into(),
        buy_asset: "ETH".into(),
        buy_amount: "1000".into(),
        expires_at: None,
        idempotency_key: key.into(),
        user_id: None,
    }
}

/// The caller accepting `offer_id`.
fn accept(offer_id: impl Into<String>, key: &str) -> pb::AcceptOfferRequest {
    pb::AcceptOfferRequest {
        offer_id: offer_id.into(),
        idempotency_key: key.into(),
        user_id: None,
    }
}

/// The caller cancelling `offer_id`.
fn cancel(offer_id: impl Into<String>, key: &str) -> pb::CancelOfferRequest {
    pb::CancelOfferRequest {
        offer_id: offer_id.into(),
        idempotency_key: key.into(),
        user_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_transfers_of_a_balance_worth_a_hundred() {
    let server = server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (bob, bob_token) = user_with_role(&server, "bob@example.com", Role::User).await;
    credit(&server, alice, "BTC", 100).await;
    let client = settlement(&server).await;
    let mut tasks = Vec::new();
    for i in 0..1_000 {
        let (mut client, token) = (client.clone(), alice_token.clone());
        tasks.push(tokio::spawn(async move {
            client
                .transfer(bearer(
                    transfer_to(bob, "BTC", "1", &format!("flexcoin-{i}")),
                    &token,
                ))
                .await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => ok += 1,
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
    assert_eq!((ok, refused), (100, 900));
    assert_eq!(available(&server, &alice_token, "BTC").await, "0");
    assert_eq!(available(&server, &bob_token, "BTC").await, "100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_are_idempotent_and_refuse_bad_requests() {
    let server = server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (bob, bob_token) = user_with_role(&server, "bob@example.com", Role::User).await;
    let (_, service) = user_with_role(&server, "backend@example.com", Role::Service).await;
    credit(&server, alice, "ETH", 1_000).await;
    let mut client = settlement(&server).await;

    let first = client
        .transfer(bearer(transfer_to(bob, "ETH", "300", "k1"), &alice_token))
        .await
        .expect("transfer")
        .into_inner();
    let replay = client
        .transfer(bearer(transfer_to(bob, "ETH", "300", "k1"), &alice_token))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(first, replay);
    let conflict = client
        .transfer(bearer(transfer_to(bob, "ETH", "301", "k1"), &alice_token))
        .await
        .expect_err("conflict");
    assert_eq!(conflict.code(), Code::AlreadyExists);
    let by_email = pb::TransferRequest {
        recipient: Some(Recipient::ToEmail("BOB@example.com".into())),
        ..transfer_to(bob, "ETH", "200", "k2")
    };
    client
        .transfer(bearer(by_email, &alice_token))
        .await
        .expect("by email");
    assert_eq!(available(&server, &bob_token, "ETH").await, "500");

    // A service acts for alice; a user cannot act for someone else.
    let on_behalf = pb::TransferRequest {
        user_id: Some(alice.to_string()),
        ..transfer_to(bob, "ETH", "1", "k3")
    };
    client
        .transfer(bearer(on_behalf.clone(), &service))
        .await
        .expect("service acts for alice");
    let denied = client
        .transfer(bearer(on_behalf, &bob_token))
        .await
        .expect_err("bob is not alice");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Offers follow the same rules: service for anyone, operator and user only for themselves.
    let (_, operator) = user_with_role(&server, "ops@example.com", Role::Operator).await;
    let offer_for_alice = pb::CreateOfferRequest {
        sell_asset: "ETH".into(),
        sell_amount: "5".into(),
        buy_asset: "BTC".into(),
        buy_amount: "1".into(),
        expires_at: None,
        idempotency_key: "svc-offer".into(),
        user_id: Some(alice.to_string()),
    };
    let made = client
        .create_offer(bearer(offer_for_alice.clone(), &service))
        .await
        .expect("service makes an offer for alice");
    assert_eq!(made.into_inner().maker_user_id, alice.to_string());
    for token in [&operator, &bob_token] {
        let err = client
            .create_offer(bearer(offer_for_alice.clone(), token))
            .await
            .expect_err("not for alice");
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    let (carol, _) = user_with_role(&server, "carol@example.com", Role::User).await;
    indexer::users::Users::new(server.db.pool().clone())
        .disable(carol)
        .await
        .expect("disable");
    let err = client
        .transfer(bearer(
            transfer_to(carol, "ETH", "1", "to-disabled"),
            &alice_token,
        ))
        .await
        .expect_err("disabled");
    assert!(
        err.code() == Code::FailedPrecondition && err.message().starts_with("to_user_id:"),
        "{err:?}"
    );

    let cases: Vec<(pb::TransferRequest, Code, &str)> = vec![
        (
            transfer_to(bob, "ETH", "0", "z"),
            Code::InvalidArgument,
            "amount:",
        ),
        (
            transfer_to(bob, "ETH", "-5", "z"),
            Code::InvalidArgument,
            "amount:",
        ),
        (
            transfer_to(bob, "ETH", "1.5", "z"),
            Code::InvalidArgument,
            "amount:",
        ),
        (
            transfer_to(bob, "ETH", "ten", "z"),
            Code::InvalidArgument,
            "amount:",
        ),
        (
            transfer_to(bob, "DOGE", "1", "z"),
            Code::InvalidArgument,
            "asset:",
        ),
        (
            transfer_to(bob, "ETH", "1", ""),
            Code::InvalidArgument,
            "idempotency_key:",
        ),
        (
            transfer_to(alice, "ETH", "1", "z"),
            Code::InvalidArgument,
            "to_user_id:",
        ),
        (
            transfer_to(Uuid::new_v4(), "ETH", "1", "z"),
            Code::NotFound,
            "to_user_id:",
        ),
        (
            pb::TransferRequest {
                recipient: None,
                ..transfer_to(bob, "ETH", "1", "z")
            },
            Code::InvalidArgument,
            "to_user_id",
        ),
        (
            pb::TransferRequest {
                recipient: Some(Recipient::ToEmail("nope".into())),
                ..transfer_to(bob, "ETH", "1", "z")
            },
            Code::InvalidArgument,
            "to_email:",
        ),
        (
            transfer_to(bob, "ETH", "100000", "z"),
            Code::FailedPrecondition,
            "amount:",
        ),
    ];
    for (request, code, prefix) in cases {
        assert_transfer_refused(&mut client, &alice_token, request, code, prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_trade_appear_in_both_histories_and_expire() {
    let server = server().await;
    let (maker, maker_token) = user_with_role(&server, "maker@example.com", Role::User).await;
    let (taker, taker_token) = user_with_role(&server, "taker@example.com", Role::User).await;
    credit(&server, maker, "BTC", 50).await;
    credit(&server, taker, "ETH", 5_000).await;
    let mut client = settlement(&server).await;
    let create = |key: &str, expires_at: Option<prost_types::Timestamp>| pb::CreateOfferRequest {
        expires_at,
        ..btc_for_eth("10", key)
    };
    let offer = client
        .create_offer(bearer(create("o1", None), &maker_token))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(offer.status(), OfferStatus::Open);
    assert_eq!(
        available(&server, &maker_token, "BTC").await,
        "40",
        "the sell amount is held"
    );

    let seen_by_taker = client
        .list_offers(bearer(
            pb::ListOffersRequest {
                sell_asset: Some("BTC".into()),
                ..Default::default()
            },
            &taker_token,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(seen_by_taker.offers.len(), 1);
    let seen_by_maker = client
        .list_offers(bearer(pb::ListOffersRequest::default(), &maker_token))
        .await
        .expect("list");
    assert!(
        seen_by_maker.into_inner().offers.is_empty(),
        "makers do not see their own offers"
    );

    let accepted = accept(offer.id.clone(), "a1");
    let filled = client
        .accept_offer(bearer(accepted.clone(), &taker_token))
        .await
        .expect("accept")
        .into_inner();
    assert_eq!(
        (filled.status(), filled.taker_user_id.as_str()),
        (OfferStatus::Filled, taker.to_string().as_str())
    );
    assert_eq!(
        client
            .accept_offer(bearer(accepted, &taker_token))
            .await
            .expect("replay")
            .into_inner(),
        filled
    );
    assert_eq!(available(&server, &taker_token, "BTC").await, "10");
    assert_eq!(available(&server, &maker_token, "ETH").await, "1000");
    let late = client
        .cancel_offer(bearer(cancel(offer.id.clone(), "c1"), &maker_token))
        .await
        .expect_err("already filled");
    assert_eq!(late.code(), Code::FailedPrecondition);

    let mut history = HistoryServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect");
    for token in [&maker_token, &taker_token] {
        let trades = history
            .list_transactions(bearer(
                pb::ListTransactionsRequest {
                    kind: Some("trade".into()),
                    ..Default::default()
                },
                token,
            ))
            .await
            .expect("history")
            .into_inner()
            .transactions;
        assert!(
            trades
                .iter()
                .any(|t| t.reference == format!("offer:{}:trade", offer.id)),
            "{trades:?}"
        );
    }

    // Expiry by the daemon's own task releases the hold.
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1_500);
    let expiring = client
        .create_offer(bearer(
            create(
                "o2",
                Some(prost_types::Timestamp {
                    seconds: soon.timestamp(),
                    nanos: 0,
                }),
            ),
            &maker_token,
        ))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(available(&server, &maker_token, "BTC").await, "30");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let current = client
            .get_offer(bearer(
                pb::GetOfferRequest {
                    offer_id: expiring.id.clone(),
                },
                &maker_token,
            ))
            .await
            .expect("get")
            .into_inner();
        if current.status() == OfferStatus::Expired {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the offer never expired: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(available(&server, &maker_token, "BTC").await, "40");

    for (request, prefix) in [
        (
            pb::CreateOfferRequest {
                sell_amount: "0".into(),
                ..create("bad", None)
            },
            "sell_amount:",
        ),
        (
            pb::CreateOfferRequest {
                buy_asset: "BTC".into(),
                ..create("bad", None)
            },
            "buy_asset:",
        ),
        (
            pb::CreateOfferRequest {
                sell_asset: "XYZ".into(),
                ..create("bad", None)
            },
            "sell_asset:",
        ),
        (
            create(
                "bad",
                Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
            ),
            "expires_at:",
        ),
    ] {
        let err = client
            .create_offer(bearer(request, &maker_token))
            .await
            .expect_err("invalid");
        assert!(
            err.code() == Code::InvalidArgument && err.message().starts_with(prefix),
            "{err:?}"
        );
    }
    let err = client
        .accept_offer(bearer(accept("x", "k"), &taker_token))
        .await
        .expect_err("invalid");
    assert!(
        err.code() == Code::InvalidArgument && err.message().starts_with("offer_id:"),
        "{err:?}"
    );
    let missing = client
        .accept_offer(bearer(
            accept(Uuid::new_v4().to_string(), "k"),
            &taker_token,
        ))
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
}

/// Errors about the recipient name the field the caller sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_errors_name_the_recipient_field_that_was_sent() {
    let server = server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (carol, _) = user_with_role(&server, "carol@example.com", Role::User).await;
    credit(&server, alice, "ETH", 1_000).await;
    indexer::users::Users::new(server.db.pool().clone())
        .disable(carol)
        .await
        .expect("disable");
    let mut client = settlement(&server).await;
    let to = |recipient: Recipient| pb::TransferRequest {
        recipient: Some(recipient),
        ..transfer_to(alice, "ETH", "1", "named")
    };
    for (request, code, prefix) in [
        (
            to(Recipient::ToEmail("nobody@example.com".into())),
            Code::NotFound,
            "to_email: no such recipient",
        ),
        (
            to(Recipient::ToUserId(Uuid::new_v4().to_string())),
            Code::NotFound,
            "to_user_id: no such recipient",
        ),
        (
            to(Recipient::ToEmail("Carol@Example.com".into())),
            Code::FailedPrecondition,
            "to_email:",
        ),
        (
            to(Recipient::ToUserId(carol.to_string())),
            Code::FailedPrecondition,
            "to_user_id:",
        ),
        (
            to(Recipient::ToEmail("alice@example.com".into())),
            Code::InvalidArgument,
            "to_email: cannot be the sender",
        ),
    ] {
        assert_transfer_refused(&mut client, &alice_token, request, code, prefix).await;
    }
}

/// Fees are basis points of the sell amount, rounded up: never zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trade_fees_round_up_and_tiny_offers_are_refused() {
    let server = server_with(|s| s.settlement.trade_fee_bps = 25).await;
    let (maker, maker_token) = user_with_role(&server, "maker@example.com", Role::User).await;
    let (taker, taker_token) = user_with_role(&server, "taker@example.com", Role::User).await;
    credit(&server, maker, "BTC", 10).await;
    credit(&server, taker, "ETH", 1_000).await;
    let mut client = settlement(&server).await;
    let create = btc_for_eth;
    let offer = client
        .create_offer(bearer(create("10", "fee"), &maker_token))
        .await
        .expect("create")
        .into_inner();
    client
        .accept_offer(bearer(accept(offer.id.clone(), "take"), &taker_token))
        .await
        .expect("accept");
    assert_eq!(
        available(&server, &taker_token, "BTC").await,
        "9",
        "25 bps of 10 is 0.025, charged as 1"
    );

    let tiny = client
        .create_offer(bearer(create("1", "tiny"), &maker_token))
        .await
        .expect_err("the fee would take it all");
    assert!(
        tiny.code() == Code::InvalidArgument && tiny.message().starts_with("sell_amount:"),
        "{tiny:?}"
    );
    credit(&server, taker, "BTC", 5).await;
    let own = client
        .create_offer(bearer(create("5", "own"), &taker_token))
        .await
        .expect("create")
        .into_inner();
    let self_trade = client
        .accept_offer(bearer(accept(own.id, "self"), &taker_token))
        .await
        .expect_err("own offer");
    assert!(
        self_trade.code() == Code::InvalidArgument && self_trade.message().starts_with("offer_id:"),
        "{self_trade:?}"
    );
}

/// Nobody acts for a disabled user, and disabling cancels their open
/// offers, returning the held funds; staff can still read their data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_acts_for_a_disabled_user_and_disabling_cancels_their_offers() {
    let server = server().await;
    let (alice, alice_token) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (bob, bob_token) = user_with_role(&server, "bob@example.com", Role::User).await;
    let (_, service) = user_with_role(&server, "backend@example.com", Role::Service).await;
    let (_, admin) = user_with_role(&server, "admin@example.com", Role::Admin).await;
    credit(&server, alice, "BTC", 100).await;
    credit(&server, bob, "ETH", 10_000).await;
    let mut client = settlement(&server).await;
    let sell_btc = |key: &str, user: Option<Uuid>| pb::CreateOfferRequest {
        user_id: user.map(|u| u.to_string()),
        ..btc_for_eth("10", key)
    };
    let mut offers = Vec::new();
    for (key, token, user) in [
        ("own-1", &alice_token, None),
        ("own-2", &alice_token, None),
        ("by-service", &service, Some(alice)),
    ] {
        offers.push(
            client
                .create_offer(bearer(sell_btc(key, user), token))
                .await
                .expect("offer")
                .into_inner()
                .id,
        );
    }
    let bobs = client
        .create_offer(bearer(
            pb::CreateOfferRequest {
                sell_asset: "ETH".into(),
                sell_amount: "1000".into(),
                buy_asset: "BTC".into(),
                buy_amount: "10".into(),
                ..sell_btc("bob", None)
            },
            &bob_token,
        ))
        .await
        .expect("bob's offer")
        .into_inner()
        .id;
    assert_eq!(available(&server, &alice_token, "BTC").await, "70");

    auth_client(&server)
        .await
        .disable_user(bearer(
            pb::DisableUserRequest {
                user_id: alice.to_string(),
            },
            &admin,
        ))
        .await
        .expect("disable");
    for id in &offers {
        let offer = client
            .get_offer(bearer(
                pb::GetOfferRequest {
                    offer_id: id.clone(),
                },
                &admin,
            ))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(offer.status(), OfferStatus::Cancelled, "{offer:?}");
    }
    // Staff still read a disabled user's data: the holds are released.
    let mut wallets = WalletServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect");
    let balances = wallets
        .get_balances(bearer(
            pb::GetBalancesRequest {
                user_id: Some(alice.to_string()),
            },
            &service,
        ))
        .await
        .expect("read")
        .into_inner()
        .balances;
    let btc = balances.iter().find(|b| b.asset == "BTC").expect("BTC");
    assert_eq!((btc.available.as_str(), btc.held.as_str()), ("100", "0"));

    let for_alice = Some(alice.to_string());
    for token in [&service, &admin] {
        let outcomes: Vec<(&str, Result<(), tonic::Status>)> = vec![
            (
                "transfer",
                client
                    .transfer(bearer(
                        pb::TransferRequest {
                            user_id: for_alice.clone(),
                            ..transfer_to(bob, "BTC", "1", "frozen")
                        },
                        token,
                    ))
                    .await
                    .map(|_| ()),
            ),
            (
                "create_offer",
                client
                    .create_offer(bearer(sell_btc("frozen", Some(alice)), token))
                    .await
                    .map(|_| ()),
            ),
            (
                "accept_offer",
                client
                    .accept_offer(bearer(
                        pb::AcceptOfferRequest {
                            user_id: for_alice.clone(),
                            ..accept(bobs.clone(), "frozen")
                        },
                        token,
                    ))
                    .await
                    .map(|_| ()),
            ),
            (
                "cancel_offer",
                client
                    .cancel_offer(bearer(
                        pb::CancelOfferRequest {
                            user_id: for_alice.clone(),
                            ..cancel(offers[0].clone(), "frozen")
                        },
                        token,
                    ))
                    .await
                    .map(|_| ()),
            ),
            (
                "create_wallet",
                wallets
                    .create_wallet(bearer(
                        pb::CreateWalletRequest {
                            chain: pb::Chain::Bitcoin.into(),
                            user_id: for_alice.clone(),
                        },
                        token,
                    ))
                    .await
                    .map(|_| ()),
            ),
        ];
        for (rpc, outcome) in outcomes {
            let err = outcome.expect_err(rpc);
            assert!(
                err.code() == Code::FailedPrecondition && err.message().starts_with("user_id:"),
                "{rpc}: {err:?}"
            );
        }
    }
    let nobody = client
        .transfer(bearer(
            pb::TransferRequest {
                user_id: Some(Uuid::new_v4().to_string()),
                ..transfer_to(bob, "BTC", "1", "ghost")
            },
            &service,
        ))
        .await
        .expect_err("no such user");
    assert!(
        nobody.code() == Code::NotFound && nobody.message().starts_with("user_id:"),
        "{nobody:?}"
    );
    assert_eq!(available(&server, &bob_token, "BTC").await, "0");
}
