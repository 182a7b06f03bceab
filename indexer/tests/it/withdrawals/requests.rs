//! Requests: the hold on amount plus fee, refusals that leave nothing
//! behind, idempotency, the daily limit, and keyset pages.

use chains::Chain;
use indexer::Error;
use indexer::ledger::HoldStatus;
use indexer::users::Role;
use indexer::withdrawals::{WithdrawalFilter, WithdrawalStatus};

use super::{ETH_DAILY_LIMIT, ETH_FEE, ETH_THRESHOLD, Setup, amount, eth_withdrawal, key};
use crate::support::assert_invariants;

async fn withdrawal_count(setup: &Setup) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM withdrawals")
        .fetch_one(setup.db.pool())
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_holds_amount_plus_fee() {
    let setup = Setup::new().await;
    let user = setup.funded_user(10_000_000).await;

    let withdrawal = setup.request_eth(user, 500_000).await;

    assert_eq!(
        withdrawal.status,
        WithdrawalStatus::Approved,
        "under the threshold"
    );
    assert_eq!(withdrawal.approved_by, None, "approved automatically");
    assert!(withdrawal.approved_at.is_some());
    assert_eq!(withdrawal.amount, amount(500_000));
    assert_eq!(withdrawal.fee, amount(ETH_FEE));
    assert_eq!(withdrawal.chain, Chain::Ethereum);
    let balance = setup.balance(user, "ETH").await;
    assert_eq!(balance.available, amount(10_000_000 - 500_000 - ETH_FEE));
    assert_eq!(balance.held, amount(500_000 + ETH_FEE));
    let hold = setup
        .ledger
        .hold(withdrawal.hold_id)
        .await
        .expect("hold")
        .expect("the withdrawal's hold");
    assert_eq!(hold.amount, amount(500_000 + ETH_FEE));
    assert_eq!(hold.status, HoldStatus::Held);
    assert_eq!(hold.owner, user);
    let reference: String = sqlx::query_scalar("SELECT reference FROM entries WHERE id = $1")
        .bind(hold.place_entry_id)
        .fetch_one(setup.db.pool())
        .await
        .expect("hold entry");
    assert_eq!(reference, format!("withdrawal:{}:hold", withdrawal.id));
    assert_eq!(
        setup.withdrawals.get(withdrawal.id).await.expect("get"),
        Some(withdrawal)
    );
    assert_invariants(setup.db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_funds_are_refused_and_leave_nothing() {
    let setup = Setup::new().await;
    // One wei short of amount plus fee.
    let user = setup.funded_user(500_000 + ETH_FEE - 1).await;

    let refused = setup
        .withdrawals
        .request(&key(), &eth_withdrawal(user, 500_000))
        .await;

    // The API maps InsufficientFunds to FAILED_PRECONDITION.
    assert!(
        matches!(refused, Err(Error::InsufficientFunds)),
        "{refused:?}"
    );
    assert_eq!(withdrawal_count(&setup).await, 0);
    let balance = setup.balance(user, "ETH").await;
    assert_eq!(balance.available, amount(500_000 + ETH_FEE - 1));
    assert!(balance.held.is_zero());
    assert_invariants(setup.db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_returns_its_withdrawal_and_refuses_another_request() {
    let setup = Setup::new().await;
    let user = setup.funded_user(10_000_000).await;
    let key = key();
    let request = eth_withdrawal(user, 200_000);

    // Concurrent duplicates: one withdrawal, one hold.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (withdrawals, key, request) =
                (setup.withdrawals.clone(), key.clone(), request.clone());
            tokio::spawn(async move { withdrawals.request(&key, &request).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task").expect("request").id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every duplicate got the same withdrawal");
    assert_eq!(withdrawal_count(&setup).await, 1);
    assert_eq!(
        setup.balance(user, "ETH").await.held,
        amount(200_000 + ETH_FEE)
    );

    let again = setup
        .withdrawals
        .request(&key, &request)
        .await
        .expect("replay");
    assert_eq!(again.id, ids[0]);

    let different = eth_withdrawal(user, 300_000);
    let refused = setup.withdrawals.request(&key, &different).await;
    assert!(
        matches!(refused, Err(Error::IdempotencyConflict { .. })),
        "{refused:?}"
    );
    assert_eq!(withdrawal_count(&setup).await, 1);
    assert_eq!(
        setup.balance(user, "ETH").await.held,
        amount(200_000 + ETH_FEE)
    );
    assert_invariants(setup.db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_name_the_field() {
    let setup = Setup::new().await;
    let user = setup.funded_user(10_000_000).await;
    let base = eth_withdrawal(user, 1_000);

    let mut zero = base.clone();
    zero.amount = amount(0);
    let mut unknown = base.clone();
    unknown.asset = "NOPE".into();
    let mut wrong_chain = base.clone();
    wrong_chain.asset = "BTC".into();
    let mut disabled = base.clone();
    disabled.asset = "USDC".into();
    let mut spaced = base.clone();
    spaced.destination = "0x11 11".into();
    let mut empty = base.clone();
    empty.destination = String::new();

    for (request, field) in [
        (&zero, "amount"),
        (&wrong_chain, "chain"),
        (&disabled, "asset"),
        (&spaced, "destination"),
        (&empty, "destination"),
    ] {
        match setup.withdrawals.request(&key(), request).await {
            Err(Error::InvalidRequest(message) | Error::InvalidAmount(message)) => {
                assert!(message.starts_with(field), "{message} names {field}")
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    let refused = setup.withdrawals.request(&key(), &unknown).await;
    assert!(
        matches!(refused, Err(Error::UnknownAsset(_))),
        "{refused:?}"
    );
    let bad_key = indexer::ledger::IdempotencyKey::new("withdrawal-test", "");
    let refused = setup.withdrawals.request(&bad_key, &base).await;
    assert!(
        matches!(&refused, Err(Error::InvalidRequest(m)) if m.starts_with("idempotency_key")),
        "{refused:?}"
    );
    assert_eq!(withdrawal_count(&setup).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_limit_counts_what_still_holds_or_paid() {
    let setup = Setup::new().await;
    let user = setup.funded_user(3 * ETH_DAILY_LIMIT).await;
    let operator = setup.user(Role::Operator).await;

    let big = setup.request_eth(user, ETH_DAILY_LIMIT - 10_000).await;
    assert_eq!(
        big.status,
        WithdrawalStatus::Requested,
        "above the threshold"
    );
    let refused = setup
        .withdrawals
        .request(&key(), &eth_withdrawal(user, 10_001))
        .await;
    assert!(
        matches!(refused, Err(Error::DailyLimitExceeded { .. })),
        "{refused:?}"
    );
    // Exactly up to the limit is allowed.
    setup.request_eth(user, 10_000).await;

    // A rejected withdrawal no longer counts.
    setup
        .withdrawals
        .reject(big.id, operator, "not today")
        .await
        .expect("reject");
    setup.request_eth(user, ETH_THRESHOLD).await;

    // Another user has a limit of their own.
    let other = setup.funded_user(2 * ETH_DAILY_LIMIT).await;
    setup.request_eth(other, ETH_DAILY_LIMIT).await;
    assert_invariants(setup.db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_by_id_and_filter_by_status_and_user() {
    let setup = Setup::new().await;
    let user = setup.funded_user(100_000_000).await;
    let other = setup.funded_user(100_000_000).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(setup.request_eth(user, 1_000 + n).await.id);
    }
    let waiting = setup.request_eth(other, ETH_THRESHOLD + 1).await;

    let filter = WithdrawalFilter {
        user: Some(user),
        status: None,
    };
    let first = setup
        .withdrawals
        .list(&filter, 2, None)
        .await
        .expect("page");
    let got: Vec<i64> = first.items.iter().map(|w| w.id).collect();
    assert_eq!(got, vec![ids[4], ids[3]], "newest first");
    let second = setup
        .withdrawals
        .list(&filter, 2, first.next_cursor)
        .await
        .expect("page");
    let third = setup
        .withdrawals
        .list(&filter, 2, second.next_cursor)
        .await
        .expect("page");
    assert_eq!(
        second.items.iter().map(|w| w.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    assert_eq!(
        third.items.iter().map(|w| w.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    assert_eq!(third.next_cursor, None);

    let requested = WithdrawalFilter {
        user: None,
        status: Some(WithdrawalStatus::Requested),
    };
    let page = setup
        .withdrawals
        .list(&requested, 10, None)
        .await
        .expect("page");
    assert_eq!(
        page.items.iter().map(|w| w.id).collect::<Vec<_>>(),
        vec![waiting.id]
    );
    assert!(matches!(
        setup.withdrawals.list(&requested, 0, None).await,
        Err(Error::InvalidRequest(m)) if m.starts_with("page_size")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_or_unknown_user_cannot_request() {
    let setup = Setup::new().await;
    let user = setup.funded_user(10_000_000).await;
    let users = indexer::users::Users::new(setup.db.pool().clone());
    assert!(users.disable(user).await.expect("disable"));

    let refused = setup
        .withdrawals
        .request(&key(), &eth_withdrawal(user, 500_000))
        .await;
    assert!(
        matches!(refused, Err(Error::UserDisabled(id)) if id == user),
        "{refused:?}"
    );
    let nobody = uuid::Uuid::new_v4();
    let mut unknown = eth_withdrawal(nobody, 500_000);
    unknown.requested_by = user;
    let refused = setup.withdrawals.request(&key(), &unknown).await;
    assert!(
        matches!(refused, Err(Error::UserNotFound(id)) if id == nobody),
        "{refused:?}"
    );
    assert_eq!(withdrawal_count(&setup).await, 0);
    assert_eq!(
        setup.balance(user, "ETH").await.held,
        amount(0),
        "no hold placed"
    );
    assert_invariants(setup.db.pool()).await;
}
