//! Offers on the ledger: races between takers, cancels and expiry, and a
//! property test over random sequences of transfers and trades.

use std::collections::HashMap;

use chrono::{Duration, Utc};
use indexer::Error;
use indexer::devnet::TestDb;
use indexer::ledger::settlement::{NewOffer, OfferStatus};
use indexer::ledger::{Amount, IdempotencyKey, Ledger};
use indexer::users::{Role, Users};
use proptest::collection::vec;
use proptest::prelude::*;
use uuid::Uuid;

use crate::support::{Property, assert_invariants, fund, ledger_with_assets, transfer};

async fn user(db: &TestDb) -> Uuid {
    Users::new(db.pool().clone())
        .create(&format!("{}@example.com", Uuid::new_v4()), "h", Role::User)
        .await
        .expect("user")
}

fn key(label: &str) -> IdempotencyKey {
    IdempotencyKey::new("settlement-test", format!("{label}-{}", Uuid::new_v4()))
}

fn offer(maker: Uuid, expires_in: Option<Duration>) -> NewOffer {
    NewOffer {
        maker,
        sell_asset: "BTC".into(),
        sell_amount: Amount::from_u64(10),
        buy_asset: "ETH".into(),
        buy_amount: Amount::from_u64(500),
        expires_at: expires_in.map(|d| Utc::now() + d),
    }
}

/// [`offer`] without expiry, selling `amount` BTC.
fn selling(maker: Uuid, amount: u64) -> NewOffer {
    NewOffer {
        sell_amount: Amount::from_u64(amount),
        ..offer(maker, None)
    }
}

async fn available(ledger: &Ledger, user: Uuid, asset: &str) -> Amount {
    ledger
        .balance(user, asset)
        .await
        .expect("balance")
        .available
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_settles_both_legs_and_fees() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (maker, taker) = (user(&db).await, user(&db).await);
    fund(&ledger, maker, "BTC", 10_000).await;
    fund(&ledger, taker, "ETH", 500).await;
    let open = ledger
        .create_offer(&key("create"), &selling(maker, 10_000))
        .await
        .expect("create");
    assert_eq!(
        ledger.balance(maker, "BTC").await.expect("maker").held,
        Amount::from_u64(10_000)
    );

    let accept_key = key("accept");
    let filled = ledger
        .accept_offer(&accept_key, open.id, taker, 25)
        .await
        .expect("accept");
    assert_eq!(
        (filled.status, filled.taker),
        (OfferStatus::Filled, Some(taker))
    );
    assert_eq!(
        ledger
            .accept_offer(&accept_key, open.id, taker, 25)
            .await
            .expect("replay"),
        filled
    );
    let maker_btc = ledger.balance(maker, "BTC").await.expect("balance");
    assert_eq!(
        (maker_btc.available, maker_btc.held),
        (Amount::ZERO, Amount::ZERO)
    );
    assert_eq!(
        available(&ledger, maker, "ETH").await,
        Amount::from_u64(500)
    );
    assert_eq!(
        available(&ledger, taker, "BTC").await,
        Amount::from_u64(9_975),
        "25 bps fee"
    );
    assert_eq!(available(&ledger, taker, "ETH").await, Amount::ZERO);
    let again = ledger.accept_offer(&key("again"), open.id, taker, 25).await;
    assert!(
        matches!(again, Err(Error::OfferNotOpen(OfferStatus::Filled))),
        "{again:?}"
    );
    let own = ledger
        .create_offer(&key("own"), &offer(taker, None))
        .await
        .expect("the taker sells BTC now");
    let self_trade = ledger.accept_offer(&key("self"), own.id, taker, 0).await;
    assert!(
        matches!(self_trade, Err(Error::InvalidRequest(_))),
        "{self_trade:?}"
    );
    let too_big = ledger
        .create_offer(&key("big"), &selling(maker, 1_000_000))
        .await;
    assert!(
        matches!(too_big, Err(Error::InsufficientFunds)),
        "{too_big:?}"
    );
    assert_invariants(db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_transitions_have_exactly_one_winner() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (maker, first, second) = (user(&db).await, user(&db).await, user(&db).await);
    fund(&ledger, maker, "BTC", 10 * 30).await;
    fund(&ledger, first, "ETH", 500 * 30).await;
    fund(&ledger, second, "ETH", 500 * 30).await;
    for round in 0..10 {
        // Two takers.
        let open = ledger
            .create_offer(&key("two"), &offer(maker, None))
            .await
            .expect("offer");
        let (k1, k2) = (key("t1"), key("t2"));
        let (a, b) = tokio::join!(
            ledger.accept_offer(&k1, open.id, first, 0),
            ledger.accept_offer(&k2, open.id, second, 0)
        );
        assert_eq!(
            a.is_ok() as u8 + b.is_ok() as u8,
            1,
            "round {round}: {a:?} {b:?}"
        );

        // Cancel against accept.
        let open = ledger
            .create_offer(&key("cancel"), &offer(maker, None))
            .await
            .expect("offer");
        let (k1, k2) = (key("c"), key("a"));
        let (c, a) = tokio::join!(
            ledger.cancel_offer(&k1, open.id, maker),
            ledger.accept_offer(&k2, open.id, first, 0)
        );
        assert_eq!(
            c.is_ok() as u8 + a.is_ok() as u8,
            1,
            "round {round}: {c:?} {a:?}"
        );

        // Accept against expiry (the expirer's clock is already past it).
        let open = ledger
            .create_offer(&key("expiry"), &offer(maker, Some(Duration::seconds(30))))
            .await
            .expect("offer");
        let k = key("e");
        let later = Utc::now() + Duration::seconds(31);
        let (a, e) = tokio::join!(
            ledger.accept_offer(&k, open.id, second, 0),
            ledger.expire_offers(later)
        );
        let expired = e.expect("expire");
        assert_eq!(
            a.is_ok() as usize + expired,
            1,
            "round {round}: {a:?} expired {expired}"
        );
        let status = ledger
            .offer(open.id)
            .await
            .expect("read")
            .expect("offer")
            .status;
        assert_eq!(
            status,
            if a.is_ok() {
                OfferStatus::Filled
            } else {
                OfferStatus::Expired
            }
        );
    }
    assert_eq!(
        ledger.balance(maker, "BTC").await.expect("maker").held,
        Amount::ZERO
    );
    assert_invariants(db.pool()).await;
}

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        asset: usize,
        amount: u64,
    },
    Offer {
        maker: usize,
        sell: usize,
        amount: u64,
        price: u64,
        expires: bool,
    },
    Accept {
        pick: usize,
        taker: usize,
    },
    Cancel {
        pick: usize,
    },
    Expire,
}

const ASSETS: [&str; 3] = ["BTC", "ETH", "USDC"];
const USERS: usize = 4;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..USERS, 0..USERS, 0..ASSETS.len(), 1..400u64).prop_map(|(from, to, asset, amount)| {
            Op::Transfer {
                from,
                to,
                asset,
                amount,
            }
        }),
        (
            0..USERS,
            0..ASSETS.len(),
            1..400u64,
            1..400u64,
            any::<bool>()
        )
            .prop_map(|(maker, sell, amount, price, expires)| Op::Offer {
                maker,
                sell,
                amount,
                price,
                expires
            }),
        (any::<usize>(), 0..USERS).prop_map(|(pick, taker)| Op::Accept { pick, taker }),
        any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        Just(Op::Expire),
    ]
}

/// Sum of one asset over the users' available and held balances.
async fn user_total(ledger: &Ledger, users: &[Uuid], asset: &str) -> Amount {
    let mut total = Amount::ZERO;
    for user in users {
        let balance = ledger.balance(*user, asset).await.expect("balance");
        total = total
            .checked_add(balance.available)
            .and_then(|t| t.checked_add(balance.held))
            .expect("small");
    }
    total
}

#[test]
fn random_transfers_and_trades_conserve_every_asset() {
    let Property {
        runtime,
        db,
        ledger,
        mut runner,
    } = Property::new(12);
    let result = runner.run(&vec(op(), 1..40), |ops| {
        runtime.block_on(async {
            let mut users = Vec::new();
            for _ in 0..USERS {
                let id = user(&db).await;
                for asset in ASSETS {
                    fund(&ledger, id, asset, 1_000).await;
                }
                users.push(id);
            }
            let mut totals = HashMap::new();
            for asset in ASSETS {
                totals.insert(asset, user_total(&ledger, &users, asset).await);
            }
            let mut offers = Vec::new();
            for op in &ops {
                let outcome = match *op {
                    Op::Transfer {
                        from,
                        to,
                        asset,
                        amount,
                    } => {
                        let reference = format!("prop-{}", Uuid::new_v4());
                        let entry =
                            transfer(users[from], users[to], ASSETS[asset], amount, &reference);
                        ledger
                            .post(&IdempotencyKey::new("prop", reference), &entry)
                            .await
                            .map(|_| ())
                    }
                    Op::Offer {
                        maker,
                        sell,
                        amount,
                        price,
                        expires,
                    } => {
                        let request = NewOffer {
                            maker: users[maker],
                            sell_asset: ASSETS[sell].into(),
                            sell_amount: Amount::from_u64(amount),
                            buy_asset: ASSETS[(sell + 1) % ASSETS.len()].into(),
                            buy_amount: Amount::from_u64(price),
                            expires_at: expires.then(|| Utc::now() + Duration::seconds(60)),
                        };
                        ledger
                            .create_offer(&key("prop-offer"), &request)
                            .await
                            .map(|o| offers.push(o.id))
                    }
                    Op::Accept { pick, taker } if !offers.is_empty() => ledger
                        .accept_offer(
                            &key("prop-accept"),
                            offers[pick % offers.len()],
                            users[taker],
                            0,
                        )
                        .await
                        .map(|_| ()),
                    Op::Cancel { pick } if !offers.is_empty() => {
                        let id = offers[pick % offers.len()];
                        let maker = ledger.offer(id).await.expect("read").expect("offer").maker;
                        ledger
                            .cancel_offer(&key("prop-cancel"), id, maker)
                            .await
                            .map(|_| ())
                    }
                    Op::Expire => ledger
                        .expire_offers(Utc::now() + Duration::seconds(61))
                        .await
                        .map(|_| ()),
                    _ => Ok(()),
                };
                match outcome {
                    Ok(()) | Err(Error::InsufficientFunds | Error::OfferNotOpen(_)) => {}
                    Err(Error::InvalidRequest(message)) if message.contains("own offer") => {}
                    Err(other) => panic!("{op:?}: {other}"),
                }
                for asset in ASSETS {
                    assert_eq!(
                        user_total(&ledger, &users, asset).await,
                        totals[asset],
                        "{asset} after {op:?}"
                    );
                }
                assert_invariants(ledger.pool()).await;
            }
        });
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Fees are basis points rounded up: a nonzero rate never charges nothing,
/// and an offer too small to pay it cannot be taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trade_fees_round_up_and_never_vanish() {
    use indexer::ledger::settlement::trade_fee;
    assert_eq!(
        trade_fee(Amount::from_u64(10), 25),
        Some(Amount::from_u64(1))
    );
    assert_eq!(
        trade_fee(Amount::from_u64(10_000), 25),
        Some(Amount::from_u64(25))
    );
    assert_eq!(
        trade_fee(Amount::from_u64(10_001), 25),
        Some(Amount::from_u64(26))
    );
    assert_eq!(trade_fee(Amount::from_u64(10), 0), Some(Amount::ZERO));
    assert_eq!(
        trade_fee(Amount::MAX, 25),
        None,
        "overflow is refused, not wrapped"
    );

    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (maker, taker) = (user(&db).await, user(&db).await);
    fund(&ledger, maker, "BTC", 11).await;
    fund(&ledger, taker, "ETH", 1_000).await;
    let open = ledger
        .create_offer(&key("small"), &offer(maker, None))
        .await
        .expect("create");
    ledger
        .accept_offer(&key("accept"), open.id, taker, 25)
        .await
        .expect("accept");
    assert_eq!(
        available(&ledger, taker, "BTC").await,
        Amount::from_u64(9),
        "0.025 of a base unit is charged as 1, not 0"
    );
    let fees: String = sqlx::query_scalar(
        "SELECT coalesce(sum(p.amount), 0)::text FROM postings p JOIN accounts a ON a.id = p.account_id
         WHERE a.purpose = 'fees' AND a.asset = 'BTC'",
    )
    .fetch_one(db.pool())
    .await
    .expect("fees");
    assert_eq!(fees, "1");

    let tiny = ledger
        .create_offer(&key("tiny"), &selling(maker, 1))
        .await
        .expect("create");
    let refused = ledger.accept_offer(&key("tiny"), tiny.id, taker, 25).await;
    assert!(
        matches!(refused, Err(Error::FeeTakesWholeAmount)),
        "{refused:?}"
    );
    assert_invariants(db.pool()).await;
}

/// Disabling a user cancels their open offers and releases the holds in
/// the same transaction, even while offers are being created for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disabling_a_user_cancels_their_offers_and_releases_the_holds() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let users = Users::new(db.pool().clone());
    let (maker, taker) = (user(&db).await, user(&db).await);
    fund(&ledger, maker, "BTC", 10 * 100).await;
    fund(&ledger, taker, "ETH", 500 * 10).await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(
            ledger
                .create_offer(&key("before"), &offer(maker, None))
                .await
                .expect("offer")
                .id,
        );
    }
    // More offers race the disable; each lands before it (and is then
    // cancelled by it) or is refused after it.
    let creators: Vec<_> = (0..20)
        .map(|_| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                ledger
                    .create_offer(&key("racing"), &offer(maker, None))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(users.disable(maker).await.expect("disable"));
    for creator in creators {
        match creator.await.expect("task") {
            Ok(created) => open.push(created.id),
            Err(Error::UserDisabled(id)) => assert_eq!(id, maker),
            Err(other) => panic!("{other}"),
        }
    }
    for id in &open {
        let status = ledger
            .offer(*id)
            .await
            .expect("read")
            .expect("offer")
            .status;
        assert_eq!(status, OfferStatus::Cancelled, "offer {id}");
    }
    let balance = ledger.balance(maker, "BTC").await.expect("balance");
    assert_eq!(
        (balance.available, balance.held),
        (Amount::from_u64(1_000), Amount::ZERO),
        "every hold is released"
    );
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM holds WHERE owner_id = $1 AND status = 'held'")
            .bind(maker)
            .fetch_one(db.pool())
            .await
            .expect("holds");
    assert_eq!(held, 0);

    // A disabled user can neither make nor take an offer.
    let refused = ledger
        .create_offer(&key("after"), &offer(maker, None))
        .await;
    assert!(
        matches!(refused, Err(Error::UserDisabled(_))),
        "{refused:?}"
    );
    let theirs = ledger
        .create_offer(
            &key("taker-sells"),
            &NewOffer {
                sell_asset: "ETH".into(),
                sell_amount: Amount::from_u64(500),
                buy_asset: "BTC".into(),
                buy_amount: Amount::from_u64(10),
                ..offer(taker, None)
            },
        )
        .await
        .expect("offer");
    let refused = ledger.accept_offer(&key("take"), theirs.id, maker, 0).await;
    assert!(
        matches!(refused, Err(Error::UserDisabled(_))),
        "{refused:?}"
    );
    assert_invariants(db.pool()).await;
}
