//! `WalletService` and `HistoryService` end to end, and the RPC × role matrix.

use std::collections::HashSet;

use api::grpc::pb::history_service_client::HistoryServiceClient;
use api::grpc::pb::wallet_service_client::WalletServiceClient;
use api::grpc::pb::{self, Chain};
use indexer::devnet::ledger::credit_entry;
use indexer::ledger::{AccountPurpose, EntryKind, IdempotencyKey, Ledger};
use indexer::users::Role;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::support::{
    Server, bearer, client, credit, register_and_login, server, user_with_role, who_am_i,
};

async fn wallets(server: &Server) -> WalletServiceClient<Channel> {
    WalletServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect")
}

async fn history(server: &Server) -> HistoryServiceClient<Channel> {
    HistoryServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_addresses_and_balances() {
    let server = server().await;
    let mut auth = client(&server).await;
    let token = register_and_login(&mut auth, "wallets@example.com", "correct horse battery")
        .await
        .access_token;
    let me: Uuid = who_am_i(&mut auth, &token)
        .await
        .expect("whoami")
        .user_id
        .parse()
        .expect("uuid");
    let mut api = wallets(&server).await;

    let mut seen = HashSet::new();
    for (chain, check) in [
        (
            Chain::Bitcoin,
            (|a: &str| a.starts_with("bcrt1q") && a.len() == 44) as fn(&str) -> bool,
        ),
        (Chain::Ethereum, |a: &str| {
            a.starts_with("0x") && a.len() == 42 && a.chars().any(|c| c.is_ascii_uppercase())
        }),
        (Chain::Solana, |a: &str| {
            (32..=44).contains(&a.len()) && a.chars().all(|c| c.is_ascii_alphanumeric())
        }),
    ] {
        let wallet = api
            .create_wallet(bearer(
                pb::CreateWalletRequest {
                    chain: chain.into(),
                    user_id: None,
                },
                &token,
            ))
            .await
            .expect("create")
            .into_inner();
        assert_eq!(wallet.user_id, me.to_string());
        let again = api
            .create_wallet(bearer(
                pb::CreateWalletRequest {
                    chain: chain.into(),
                    user_id: None,
                },
                &token,
            ))
            .await
            .expect_err("one per chain");
        assert_eq!(again.code(), Code::AlreadyExists);
        for _ in 0..3 {
            let address = api
                .new_deposit_address(bearer(
                    pb::NewDepositAddressRequest {
                        wallet_id: wallet.id.clone(),
                    },
                    &token,
                ))
                .await
                .expect("address")
                .into_inner();
            assert!(
                check(&address.address),
                "{chain:?} address {}",
                address.address
            );
            assert!(
                seen.insert(address.address.clone()),
                "addresses never repeat"
            );
            let watched: Option<Uuid> =
                sqlx::query_scalar("SELECT user_id FROM watched_addresses WHERE address = $1")
                    .bind(&address.address)
                    .fetch_optional(server.db.pool())
                    .await
                    .expect("watched set");
            assert_eq!(watched, Some(me), "issued addresses are watched at once");
        }
    }
    let listed = api
        .list_wallets(bearer(pb::ListWalletsRequest { user_id: None }, &token))
        .await
        .expect("list");
    assert_eq!(listed.into_inner().wallets.len(), 3);

    let empty = api
        .get_balances(bearer(pb::GetBalancesRequest { user_id: None }, &token))
        .await
        .expect("balances");
    assert!(empty.into_inner().balances.is_empty());
    credit(&server, me, "BTC", 150_000_000).await;
    let balances = api
        .get_balances(bearer(pb::GetBalancesRequest { user_id: None }, &token))
        .await
        .expect("balances")
        .into_inner()
        .balances;
    assert_eq!(balances.len(), 1);
    let btc = &balances[0];
    assert_eq!(
        (
            btc.asset.as_str(),
            btc.available.as_str(),
            btc.pending.as_str(),
            btc.held.as_str(),
            btc.decimals
        ),
        ("BTC", "150000000", "0", "0", 8)
    );

    for (request, field) in [
        (
            pb::CreateWalletRequest {
                chain: 0,
                user_id: None,
            },
            "chain:",
        ),
        (
            pb::CreateWalletRequest {
                chain: 99,
                user_id: None,
            },
            "chain:",
        ),
        (
            pb::CreateWalletRequest {
                chain: Chain::Bitcoin.into(),
                user_id: Some("nope".into()),
            },
            "user_id:",
        ),
    ] {
        let err = api
            .create_wallet(bearer(request, &token))
            .await
            .expect_err("invalid");
        assert!(
            err.code() == Code::InvalidArgument && err.message().starts_with(field),
            "{err:?}"
        );
    }
    for err in [
        api.list_wallets(bearer(
            pb::ListWalletsRequest {
                user_id: Some("42".into()),
            },
            &token,
        ))
        .await
        .map(|_| ()),
        api.get_balances(bearer(
            pb::GetBalancesRequest {
                user_id: Some("42".into()),
            },
            &token,
        ))
        .await
        .map(|_| ()),
    ] {
        let err = err.expect_err("invalid user_id");
        assert!(
            err.code() == Code::InvalidArgument && err.message().starts_with("user_id:"),
            "{err:?}"
        );
    }
    let err = api
        .new_deposit_address(bearer(
            pb::NewDepositAddressRequest {
                wallet_id: "nope".into(),
            },
            &token,
        ))
        .await
        .expect_err("invalid");
    assert!(
        err.code() == Code::InvalidArgument && err.message().starts_with("wallet_id:"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_are_complete_while_entries_arrive() {
    let server = server().await;
    let mut auth = client(&server).await;
    let token = register_and_login(&mut auth, "history@example.com", "correct horse battery")
        .await
        .access_token;
    let me: Uuid = who_am_i(&mut auth, &token)
        .await
        .expect("whoami")
        .user_id
        .parse()
        .expect("uuid");
    let mut existing = Vec::new();
    for i in 0..25 {
        existing.push(
            credit(
                &server,
                me,
                if i % 5 == 0 { "ETH" } else { "BTC" },
                1_000 + i,
            )
            .await,
        );
    }
    let mut api = history(&server).await;

    // Traverse in pages of 4 while new entries keep arriving.
    let writer = {
        let pool = server.db.pool().clone();
        tokio::spawn(async move {
            let ledger = Ledger::new(pool);
            for _ in 0..30 {
                let reference = format!("late-{}", Uuid::new_v4());
                let entry = credit_entry(
                    EntryKind::DepositCredit,
                    AccountPurpose::Custody,
                    me,
                    "BTC",
                    1,
                    reference.clone(),
                );
                ledger
                    .post(&IdempotencyKey::new("late", reference), &entry)
                    .await
                    .expect("late entry");
            }
        })
    };
    let mut listed = Vec::new();
    let mut token_page = String::new();
    loop {
        let page = api
            .list_transactions(bearer(
                pb::ListTransactionsRequest {
                    page_size: 4,
                    page_token: token_page.clone(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("page")
            .into_inner();
        assert!(page.transactions.len() <= 4);
        listed.extend(
            page.transactions
                .iter()
                .map(|t| t.id.parse::<i64>().expect("id")),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token_page = page.next_page_token;
    }
    writer.await.expect("writer");
    let unique: HashSet<i64> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "no duplicates");
    assert!(
        existing.iter().all(|id| unique.contains(id)),
        "every entry that existed at the start is listed"
    );
    assert!(listed.windows(2).all(|w| w[0] > w[1]), "newest first");

    let eth = api
        .list_transactions(bearer(
            pb::ListTransactionsRequest {
                asset: Some("ETH".into()),
                page_size: 1000,
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(eth.transactions.len(), 5);
    let one = &eth.transactions[0];
    assert_eq!(
        (one.kind.as_str(), one.changes[0].bucket.as_str()),
        ("deposit_credit", "available")
    );
    assert!(one.metadata_json.contains("txid"));

    let got = api
        .get_transaction(bearer(
            pb::GetTransactionRequest {
                id: one.id.clone(),
                user_id: None,
            },
            &token,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&got, one);
    let stranger = register_and_login(&mut auth, "stranger@example.com", "correct horse battery")
        .await
        .access_token;
    let hidden = api
        .get_transaction(bearer(
            pb::GetTransactionRequest {
                id: one.id.clone(),
                user_id: None,
            },
            &stranger,
        ))
        .await
        .expect_err("another user's entry");
    assert_eq!(hidden.code(), Code::NotFound);

    for (request, field) in [
        (
            pb::ListTransactionsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token:",
        ),
        (
            pb::ListTransactionsRequest {
                kind: Some("teleport".into()),
                ..Default::default()
            },
            "kind:",
        ),
        (
            pb::ListTransactionsRequest {
                asset: Some("X".into()),
                ..Default::default()
            },
            "asset:",
        ),
    ] {
        let err = api
            .list_transactions(bearer(request, &token))
            .await
            .expect_err("invalid");
        assert!(
            err.code() == Code::InvalidArgument && err.message().starts_with(field),
            "{err:?}"
        );
    }
    let err = api
        .get_transaction(bearer(
            pb::GetTransactionRequest {
                id: "abc".into(),
                user_id: None,
            },
            &token,
        ))
        .await
        .expect_err("invalid");
    assert!(
        err.code() == Code::InvalidArgument && err.message().starts_with("id:"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_role_matrix() {
    let server = server().await;
    let (bob, bob_token) = user_with_role(&server, "bob@example.com", Role::User).await;
    let (_, user) = user_with_role(&server, "alice@example.com", Role::User).await;
    let (_, service) = user_with_role(&server, "service@example.com", Role::Service).await;
    let (_, operator) = user_with_role(&server, "operator@example.com", Role::Operator).await;
    let (_, admin) = user_with_role(&server, "admin@example.com", Role::Admin).await;
    let entry = credit(&server, bob, "BTC", 5).await;
    let mut wallet_api = wallets(&server).await;
    let mut history_api = history(&server).await;
    let mut auth_api = client(&server).await;
    let bob_wallet = wallet_api
        .create_wallet(bearer(
            pb::CreateWalletRequest {
                chain: Chain::Solana.into(),
                user_id: None,
            },
            &bob_token,
        ))
        .await
        .expect("bob's wallet")
        .into_inner()
        .id;
    let bob_id = Some(bob.to_string());

    use Code::{NotFound, Ok as Allowed, PermissionDenied as Denied, Unauthenticated};
    // Acting for bob, per role: (none, user, operator, service, admin).
    type Row = (&'static str, [Code; 5]);
    let matrix: [Row; 8] = [
        (
            "CreateWallet",
            [Unauthenticated, Denied, Denied, Allowed, Allowed],
        ),
        (
            "ListWallets",
            [Unauthenticated, Denied, Allowed, Allowed, Allowed],
        ),
        (
            "NewDepositAddress",
            [Unauthenticated, NotFound, NotFound, Allowed, Allowed],
        ),
        (
            "GetBalances",
            [Unauthenticated, Denied, Allowed, Allowed, Allowed],
        ),
        (
            "ListTransactions",
            [Unauthenticated, Denied, Allowed, Allowed, Allowed],
        ),
        (
            "GetTransaction",
            [Unauthenticated, Denied, Allowed, Allowed, Allowed],
        ),
        (
            "SetRole",
            [Unauthenticated, Denied, Denied, Denied, Allowed],
        ),
        (
            "WhoAmI",
            [Unauthenticated, Allowed, Allowed, Allowed, Allowed],
        ),
    ];
    let tokens = [
        None,
        Some(&user),
        Some(&operator),
        Some(&service),
        Some(&admin),
    ];
    fn req<T>(message: T, token: Option<&String>) -> tonic::Request<T> {
        match token {
            Some(token) => bearer(message, token),
            None => tonic::Request::new(message),
        }
    }
    fn code<T>(result: Result<T, tonic::Status>) -> Code {
        result.map_or_else(|status| status.code(), |_| Code::Ok)
    }
    let chains = [Chain::Bitcoin, Chain::Ethereum];
    let mut created = 0;
    for (rpc, expected) in matrix {
        for (column, token) in tokens.iter().enumerate() {
            let token = *token;
            let got = match rpc {
                "CreateWallet" => {
                    let chain = chains[created % 2];
                    let outcome = code(
                        wallet_api
                            .create_wallet(req(
                                pb::CreateWalletRequest {
                                    chain: chain.into(),
                                    user_id: bob_id.clone(),
                                },
                                token,
                            ))
                            .await,
                    );
                    if outcome == Code::Ok {
                        created += 1;
                    }
                    outcome
                }
                "ListWallets" => code(
                    wallet_api
                        .list_wallets(req(
                            pb::ListWalletsRequest {
                                user_id: bob_id.clone(),
                            },
                            token,
                        ))
                        .await,
                ),
                "NewDepositAddress" => code(
                    wallet_api
                        .new_deposit_address(req(
                            pb::NewDepositAddressRequest {
                                wallet_id: bob_wallet.clone(),
                            },
                            token,
                        ))
                        .await,
                ),
                "GetBalances" => code(
                    wallet_api
                        .get_balances(req(
                            pb::GetBalancesRequest {
                                user_id: bob_id.clone(),
                            },
                            token,
                        ))
                        .await,
                ),
                "ListTransactions" => code(
                    history_api
                        .list_transactions(req(
                            pb::ListTransactionsRequest {
                                user_id: bob_id.clone(),
                                ..Default::default()
                            },
                            token,
                        ))
                        .await,
                ),
                "GetTransaction" => code(
                    history_api
                        .get_transaction(req(
                            pb::GetTransactionRequest {
                                id: entry.to_string(),
                                user_id: bob_id.clone(),
                            },
                            token,
                        ))
                        .await,
                ),
                "SetRole" => code(
                    auth_api
                        .set_role(req(
                            pb::SetRoleRequest {
                                user_id: bob.to_string(),
                                role: pb::Role::User.into(),
                            },
                            token,
                        ))
                        .await,
                ),
                "WhoAmI" => code(auth_api.who_am_i(req(pb::WhoAmIRequest {}, token)).await),
                other => unreachable!("{other}"),
            };
            assert_eq!(
                got,
                expected[column],
                "{rpc} as {}",
                ["nobody", "user", "operator", "service", "admin"][column]
            );
        }
    }
    // A plain user acts for itself without naming anyone.
    let own = wallet_api
        .get_balances(bearer(pb::GetBalancesRequest { user_id: None }, &bob_token))
        .await
        .expect("own");
    assert_eq!(own.into_inner().balances[0].available, "5");
}
