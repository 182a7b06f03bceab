//! Approval, rejection and cancellation: who may approve, and that every
//! way out before signing releases the hold exactly once.

use indexer::Error;
use indexer::ledger::HoldStatus;
use indexer::users::Role;
use indexer::withdrawals::WithdrawalStatus;

use super::{ETH_FEE, ETH_THRESHOLD, Setup, amount, eth_withdrawal, key, signed};
use crate::support::assert_invariants;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_threshold_waits_for_an_approver_other_than_the_requester() {
    let setup = Setup::new().await;
    let user = setup.funded_user(10 * ETH_THRESHOLD).await;
    let service = setup.user(Role::Service).await;
    let operator = setup.user(Role::Operator).await;

    let at_threshold = setup.request_eth(user, ETH_THRESHOLD).await;
    assert_eq!(at_threshold.status, WithdrawalStatus::Approved);

    // Asked by a service for the user: neither may approve it.
    let mut request = eth_withdrawal(user, ETH_THRESHOLD + 1);
    request.requested_by = service;
    let waiting = setup
        .withdrawals
        .request(&key(), &request)
        .await
        .expect("request");
    assert_eq!(waiting.status, WithdrawalStatus::Requested);
    assert_eq!(waiting.approved_at, None);
    assert_eq!(waiting.requested_by, service);
    for self_approver in [service, user] {
        let refused = setup.withdrawals.approve(waiting.id, self_approver).await;
        assert!(matches!(refused, Err(Error::SelfApproval)), "{refused:?}");
        let refused = setup
            .withdrawals
            .reject(waiting.id, self_approver, "mine")
            .await;
        assert!(matches!(refused, Err(Error::SelfApproval)), "{refused:?}");
    }
    // Nothing moved the row.
    let unchanged = setup.withdrawals.get(waiting.id).await.expect("get");
    assert_eq!(unchanged, Some(waiting.clone()));

    let approved = setup
        .withdrawals
        .approve(waiting.id, operator)
        .await
        .expect("approve");
    assert_eq!(approved.status, WithdrawalStatus::Approved);
    assert_eq!(approved.approved_by, Some(operator));
    assert!(approved.approved_at.is_some());

    // Approving again, or one approved automatically, is refused by state.
    for id in [waiting.id, at_threshold.id] {
        let refused = setup.withdrawals.approve(id, operator).await;
        assert!(
            matches!(
                refused,
                Err(Error::WithdrawalState {
                    status: WithdrawalStatus::Approved,
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    let missing = setup.withdrawals.approve(i64::MAX, operator).await;
    assert!(
        matches!(missing, Err(Error::WithdrawalNotFound(_))),
        "{missing:?}"
    );
    let another = setup.request_eth(user, ETH_THRESHOLD + 2).await;
    let nobody = uuid::Uuid::new_v4();
    let unknown = setup.withdrawals.approve(another.id, nobody).await;
    assert!(
        matches!(unknown, Err(Error::UserNotFound(id)) if id == nobody),
        "{unknown:?}"
    );
    let mut unknown_requester = eth_withdrawal(user, 1_000);
    unknown_requester.requested_by = nobody;
    let unknown = setup.withdrawals.request(&key(), &unknown_requester).await;
    assert!(
        matches!(unknown, Err(Error::UserNotFound(id)) if id == nobody),
        "{unknown:?}"
    );

    // The database refuses a self-approval whatever the code does.
    let sneaky = sqlx::query(
        "UPDATE withdrawals SET approved_by = requested_by, approved_at = now() WHERE id = $1",
    )
    .bind(waiting.id)
    .execute(setup.db.pool())
    .await;
    assert!(sneaky.is_err(), "withdrawals_not_self_approved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_releases_the_hold() {
    let setup = Setup::new().await;
    let user = setup.funded_user(10 * ETH_THRESHOLD).await;
    let admin = setup.user(Role::Admin).await;
    let waiting = setup.request_eth(user, 2 * ETH_THRESHOLD).await;

    let blank = setup.withdrawals.reject(waiting.id, admin, "  ").await;
    assert!(
        matches!(&blank, Err(Error::InvalidRequest(m)) if m.starts_with("reason")),
        "{blank:?}"
    );
    let rejected = setup
        .withdrawals
        .reject(waiting.id, admin, "destination on a sanctions list")
        .await
        .expect("reject");

    assert_eq!(rejected.status, WithdrawalStatus::Rejected);
    assert_eq!(rejected.closed_by, Some(admin));
    assert_eq!(
        rejected.reason.as_deref(),
        Some("destination on a sanctions list")
    );
    assert!(rejected.finished_at.is_some());
    let balance = setup.balance(user, "ETH").await;
    assert_eq!(balance.available, amount(10 * ETH_THRESHOLD));
    assert!(balance.held.is_zero());
    let hold = setup
        .ledger
        .hold(rejected.hold_id)
        .await
        .expect("hold")
        .expect("hold");
    assert_eq!(hold.status, HoldStatus::Released);

    for again in [
        setup.withdrawals.reject(waiting.id, admin, "twice").await,
        setup.withdrawals.approve(waiting.id, admin).await,
        setup.withdrawals.cancel(waiting.id, user, None).await,
    ] {
        assert!(
            matches!(
                again,
                Err(Error::WithdrawalState {
                    status: WithdrawalStatus::Rejected,
                    ..
                })
            ),
            "{again:?}"
        );
    }
    assert_eq!(
        setup.balance(user, "ETH").await.available,
        amount(10 * ETH_THRESHOLD)
    );
    assert_invariants(setup.db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_releases_the_hold_from_requested_approved_and_reserved() {
    let setup = Setup::new().await;
    let user = setup.funded_user(10 * ETH_THRESHOLD).await;

    let requested = setup.request_eth(user, 2 * ETH_THRESHOLD).await;
    let approved = setup.request_eth(user, 1_000).await;
    for withdrawal in [&requested, &approved] {
        let cancelled = setup
            .withdrawals
            .cancel(withdrawal.id, user, Some("changed my mind"))
            .await
            .expect("cancel");
        assert_eq!(cancelled.status, WithdrawalStatus::Cancelled);
        assert_eq!(cancelled.closed_by, Some(user));
        assert_eq!(cancelled.reason.as_deref(), Some("changed my mind"));
    }
    let reserved = setup.reserved_eth(user, 5_000).await;
    assert_eq!(reserved.status, WithdrawalStatus::Reserved);
    let cancelled = setup
        .withdrawals
        .cancel(reserved.id, user, None)
        .await
        .expect("cancel reserved");
    assert_eq!(cancelled.status, WithdrawalStatus::Cancelled);
    assert_eq!(cancelled.reason, None);

    let balance = setup.balance(user, "ETH").await;
    assert_eq!(balance.available, amount(10 * ETH_THRESHOLD));
    assert!(balance.held.is_zero());
    let released: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM holds h JOIN withdrawals w ON w.hold_id = h.id WHERE h.status = 'released'",
    )
    .fetch_one(setup.db.pool())
    .await
    .expect("count");
    assert_eq!(released, 3);
    assert_invariants(setup.db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_signed_is_refused_and_keeps_the_hold() {
    let setup = Setup::new().await;
    let user = setup.funded_user(10 * ETH_THRESHOLD).await;
    let reserved = setup.reserved_eth(user, 7_000).await;
    setup
        .withdrawals
        .record_signed(reserved.id, &signed("a"))
        .await
        .expect("signed");

    let refused = setup.withdrawals.cancel(reserved.id, user, None).await;
    assert!(
        matches!(
            refused,
            Err(Error::WithdrawalState {
                status: WithdrawalStatus::Signed,
                action: "cancelled",
                ..
            })
        ),
        "{refused:?}"
    );
    let balance = setup.balance(user, "ETH").await;
    assert_eq!(balance.held, amount(7_000 + ETH_FEE));
    let current = setup
        .withdrawals
        .get(reserved.id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(current.status, WithdrawalStatus::Signed);
    assert_invariants(setup.db.pool()).await;
}
