use indexer::Error;
use indexer::devnet::TestDb;
use indexer::ledger::{
    AccountPurpose, AccountRef, Amount, Balance, EntryKind, HistoryFilter, HoldStatus,
    IdempotencyKey, Leg, NewEntry, PlaceHold, ReleaseHold, SettleHold, SignedAmount,
};
use uuid::Uuid;

use crate::support::{assert_invariants, fund, ledger_with_assets, transfer};

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new("ops-test", k)
}

#[tokio::test]
async fn transfers_move_available_funds_and_refuse_overdrafts() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    fund(&ledger, alice, "BTC", 1_000).await;

    let posted = ledger
        .post(&key("t1"), &transfer(alice, bob, "BTC", 300, "t1"))
        .await
        .expect("transfer");
    assert_eq!(posted.kind, EntryKind::Transfer);
    assert_eq!(
        ledger.balance(alice, "BTC").await.expect("alice").available,
        Amount::from_u64(700)
    );
    assert_eq!(
        ledger.balance(bob, "BTC").await.expect("bob").available,
        Amount::from_u64(300)
    );

    let overdraft = ledger
        .post(&key("t2"), &transfer(alice, bob, "BTC", 701, "t2"))
        .await;
    assert!(
        matches!(overdraft, Err(Error::InsufficientFunds)),
        "{overdraft:?}"
    );
    // The failed attempt left no trace: its key and reference are still free.
    ledger
        .post(&key("t2"), &transfer(alice, bob, "BTC", 700, "t2"))
        .await
        .expect("retry with less");
    assert_eq!(
        ledger.balance(alice, "BTC").await.expect("alice").available,
        Amount::ZERO
    );

    let duplicate = ledger
        .post(&key("t3"), &transfer(bob, alice, "BTC", 1, "t1"))
        .await;
    assert!(
        matches!(duplicate, Err(Error::DuplicateReference(ref r)) if r == "t1"),
        "{duplicate:?}"
    );

    let unknown = ledger
        .post(&key("t4"), &transfer(bob, alice, "DOGE", 1, "t4"))
        .await;
    assert!(
        matches!(unknown, Err(Error::UnknownAsset(_))),
        "{unknown:?}"
    );

    let custody = AccountRef::system("BTC", AccountPurpose::External);
    assert_eq!(
        ledger.account_balance(&custody).await.expect("external"),
        SignedAmount::decrease(Amount::from_u64(1_000))
    );
    assert_invariants(db.pool()).await;
}

#[tokio::test]
async fn malformed_entries_are_refused_before_touching_the_database() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut unbalanced = transfer(alice, bob, "BTC", 5, "u1");
    unbalanced.legs[1].amount = SignedAmount::increase(Amount::from_u64(4));
    assert!(matches!(
        ledger.post(&key("u1"), &unbalanced).await,
        Err(Error::Unbalanced(_))
    ));

    let mut mixed = transfer(alice, bob, "BTC", 5, "u2");
    mixed.legs[1].account.asset = "ETH".into();
    assert!(matches!(
        ledger.post(&key("u2"), &mixed).await,
        Err(Error::Unbalanced(_))
    ));

    let mut single = transfer(alice, bob, "BTC", 5, "u3");
    single.legs.truncate(1);
    assert!(matches!(
        ledger.post(&key("u3"), &single).await,
        Err(Error::Unbalanced(_))
    ));

    let mut zero = transfer(alice, bob, "BTC", 0, "u4");
    zero.legs[0].amount = SignedAmount::decrease(Amount::ZERO);
    assert!(matches!(
        ledger.post(&key("u4"), &zero).await,
        Err(Error::InvalidAmount(_))
    ));

    let ownerless = NewEntry {
        kind: EntryKind::Adjustment,
        reference: "u5".into(),
        metadata: serde_json::json!({}),
        legs: vec![
            Leg::decrease(
                AccountRef::system("BTC", AccountPurpose::Available),
                Amount::from_u64(1),
            ),
            Leg::increase(AccountRef::available(bob, "BTC"), Amount::from_u64(1)),
        ],
    };
    assert!(matches!(
        ledger.post(&key("u5"), &ownerless).await,
        Err(Error::InvalidRequest(_))
    ));

    let empty_key = ledger
        .post(
            &IdempotencyKey::new("s", ""),
            &transfer(alice, bob, "BTC", 1, "u6"),
        )
        .await;
    assert!(matches!(empty_key, Err(Error::InvalidRequest(_))));
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM entries")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(entries, 0);
}

#[tokio::test]
async fn holds_settle_or_release_exactly_once() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let user = Uuid::new_v4();
    fund(&ledger, user, "ETH", 1_000).await;
    let place = |amount: u64, reference: &str| PlaceHold {
        owner: user,
        asset: "ETH".into(),
        amount: Amount::from_u64(amount),
        kind: EntryKind::WithdrawalHold,
        reference: reference.into(),
        metadata: serde_json::json!({ "to": "0xabc" }),
    };

    let first = ledger
        .place_hold(&key("h1"), &place(600, "h1"))
        .await
        .expect("hold");
    assert_eq!(first.status, HoldStatus::Held);
    let too_much = ledger.place_hold(&key("h2"), &place(401, "h2")).await;
    assert!(
        matches!(too_much, Err(Error::InsufficientFunds)),
        "{too_much:?}"
    );
    let second = ledger
        .place_hold(&key("h2"), &place(400, "h2"))
        .await
        .expect("hold");
    assert_eq!(
        ledger.balance(user, "ETH").await.expect("balance"),
        Balance {
            asset: "ETH".into(),
            available: Amount::ZERO,
            pending: Amount::ZERO,
            held: Amount::from_u64(1_000),
        }
    );

    // Settle the first: 590 out to the world, 10 to fees.
    let settle = SettleHold {
        hold_id: first.id,
        destinations: vec![
            (
                AccountRef::system("ETH", AccountPurpose::External),
                Amount::from_u64(590),
            ),
            (
                AccountRef::system("ETH", AccountPurpose::Fees),
                Amount::from_u64(10),
            ),
        ],
        kind: EntryKind::WithdrawalSettle,
        reference: "h1:settle".into(),
        metadata: serde_json::json!({ "txid": "0x01" }),
    };
    let settled = ledger
        .settle_hold(&key("s1"), &settle)
        .await
        .expect("settle");
    assert_eq!(settled.status, HoldStatus::Settled);
    // The same request again is the same answer; a new attempt is refused.
    assert_eq!(
        ledger
            .settle_hold(&key("s1"), &settle)
            .await
            .expect("replay"),
        settled
    );
    let again = ledger
        .settle_hold(
            &key("s1-again"),
            &SettleHold {
                reference: "h1:settle-2".into(),
                ..settle.clone()
            },
        )
        .await;
    assert!(
        matches!(
            again,
            Err(Error::HoldFinalized {
                status: HoldStatus::Settled,
                ..
            })
        ),
        "{again:?}"
    );
    let release_settled = ledger
        .release_hold(
            &key("r1"),
            &ReleaseHold {
                hold_id: first.id,
                kind: EntryKind::WithdrawalRelease,
                reference: "h1:release".into(),
                metadata: serde_json::json!({}),
            },
        )
        .await;
    assert!(
        matches!(release_settled, Err(Error::HoldFinalized { .. })),
        "{release_settled:?}"
    );

    // Wrong destination total is refused.
    let short = SettleHold {
        hold_id: second.id,
        destinations: vec![(
            AccountRef::system("ETH", AccountPurpose::External),
            Amount::from_u64(399),
        )],
        kind: EntryKind::WithdrawalSettle,
        reference: "h2:settle".into(),
        metadata: serde_json::json!({}),
    };
    assert!(matches!(
        ledger.settle_hold(&key("s2"), &short).await,
        Err(Error::Unbalanced(_))
    ));

    let release = ReleaseHold {
        hold_id: second.id,
        kind: EntryKind::WithdrawalRelease,
        reference: "h2:release".into(),
        metadata: serde_json::json!({ "reason": "failed on chain" }),
    };
    let released = ledger
        .release_hold(&key("r2"), &release)
        .await
        .expect("release");
    assert_eq!(released.status, HoldStatus::Released);
    let balance = ledger.balance(user, "ETH").await.expect("balance");
    assert_eq!(
        (balance.available, balance.held),
        (Amount::from_u64(400), Amount::ZERO)
    );
    assert_eq!(
        ledger
            .account_balance(&AccountRef::system("ETH", AccountPurpose::Fees))
            .await
            .expect("fees"),
        SignedAmount::increase(Amount::from_u64(10))
    );
    assert!(matches!(ledger.hold(9_999).await, Ok(None)));
    assert_invariants(db.pool()).await;
}

#[tokio::test]
async fn racing_settle_and_release_have_exactly_one_winner() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let user = Uuid::new_v4();
    fund(&ledger, user, "BTC", 50 * 100).await;
    for round in 0..50 {
        let hold = ledger
            .place_hold(
                &key(&format!("race-hold-{round}")),
                &PlaceHold {
                    owner: user,
                    asset: "BTC".into(),
                    amount: Amount::from_u64(100),
                    kind: EntryKind::WithdrawalHold,
                    reference: format!("race-hold-{round}"),
                    metadata: serde_json::json!({}),
                },
            )
            .await
            .expect("hold");
        let settle = SettleHold {
            hold_id: hold.id,
            destinations: vec![(
                AccountRef::system("BTC", AccountPurpose::External),
                Amount::from_u64(100),
            )],
            kind: EntryKind::WithdrawalSettle,
            reference: format!("race-settle-{round}"),
            metadata: serde_json::json!({}),
        };
        let release = ReleaseHold {
            hold_id: hold.id,
            kind: EntryKind::WithdrawalRelease,
            reference: format!("race-release-{round}"),
            metadata: serde_json::json!({}),
        };
        let (settle_key, release_key) = (
            key(&format!("race-s-{round}")),
            key(&format!("race-r-{round}")),
        );
        let (a, b) = tokio::join!(
            ledger.settle_hold(&settle_key, &settle),
            ledger.release_hold(&release_key, &release)
        );
        assert_eq!(
            a.is_ok() as u8 + b.is_ok() as u8,
            1,
            "round {round}: {a:?} / {b:?}"
        );
        let loser = if a.is_ok() { b.err() } else { a.err() };
        assert!(
            matches!(loser, Some(Error::HoldFinalized { .. })),
            "{loser:?}"
        );
    }
    assert_eq!(
        ledger.balance(user, "BTC").await.expect("balance").held,
        Amount::ZERO
    );
    assert_invariants(db.pool()).await;
}

#[tokio::test]
async fn history_pages_newest_first_without_gaps_or_repeats() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    fund(&ledger, alice, "BTC", 1_000).await;
    fund(&ledger, alice, "ETH", 1_000).await;
    for i in 0..23 {
        ledger
            .post(
                &key(&format!("hist-{i}")),
                &transfer(alice, bob, "BTC", 1, &format!("hist-{i}")),
            )
            .await
            .expect("transfer");
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = ledger
            .history(alice, &HistoryFilter::default(), 5, cursor)
            .await
            .expect("page");
        assert!(page.items.len() <= 5);
        seen.extend(page.items.iter().map(|i| i.entry_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25, "23 transfers and 2 fundings");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "strictly newest first: {seen:?}"
    );

    let btc_only = HistoryFilter {
        asset: Some("ETH".into()),
        kind: None,
    };
    let eth = ledger
        .history(alice, &btc_only, 500, None)
        .await
        .expect("eth page");
    assert_eq!(eth.items.len(), 1);
    assert_eq!(
        eth.items[0].changes[0].amount,
        SignedAmount::increase(Amount::from_u64(1_000))
    );

    let transfers = HistoryFilter {
        asset: None,
        kind: Some(EntryKind::Transfer),
    };
    let bob_page = ledger
        .history(bob, &transfers, 500, None)
        .await
        .expect("bob");
    assert_eq!(bob_page.items.len(), 23);
    assert!(
        bob_page
            .items
            .iter()
            .all(|i| i.changes.len() == 1 && !i.changes[0].amount.negative)
    );
    assert_eq!(
        bob_page.items[0].metadata,
        serde_json::json!({ "memo": "test" })
    );

    for bad in [0, 501] {
        let refused = ledger
            .history(alice, &HistoryFilter::default(), bad, None)
            .await;
        assert!(
            matches!(refused, Err(Error::InvalidRequest(_))),
            "page size {bad}"
        );
    }
}

#[tokio::test]
async fn assets_register_idempotently_and_refuse_conflicts() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    ledger
        .register_asset(&crate::support::asset("BTC", chains::Chain::Bitcoin, 8))
        .await
        .expect("same again");
    let conflict = ledger
        .register_asset(&crate::support::asset("BTC", chains::Chain::Bitcoin, 6))
        .await;
    assert!(
        matches!(conflict, Err(Error::AssetConflict(_))),
        "{conflict:?}"
    );
    let second_native = ledger
        .register_asset(&crate::support::asset("XBT", chains::Chain::Bitcoin, 8))
        .await;
    assert!(
        matches!(second_native, Err(Error::AssetConflict(_))),
        "one native asset per chain: {second_native:?}"
    );
    let bad_code = ledger
        .register_asset(&crate::support::asset("btc", chains::Chain::Bitcoin, 8))
        .await;
    assert!(matches!(bad_code, Err(Error::InvalidRequest(_))));
    let codes: Vec<String> = ledger
        .assets()
        .await
        .expect("assets")
        .into_iter()
        .map(|a| a.code)
        .collect();
    assert_eq!(
        codes,
        ["BTC", "ETH", "SOL", "USDC"],
        "native assets come with the schema"
    );
    let sol = ledger.asset("SOL").await.expect("read").expect("seeded");
    assert_eq!(
        (sol.chain, sol.decimals, sol.contract),
        (chains::Chain::Solana, 9, None)
    );
}
