//! Racing transitions on one withdrawal: of two that exclude each other
//! exactly one wins, and the hold is released at most once whichever does.

use indexer::Error;
use indexer::ledger::HoldStatus;
use indexer::users::Role;
use indexer::withdrawals::{Withdrawal, WithdrawalStatus};
use uuid::Uuid;

use super::{ETH_FEE, ETH_THRESHOLD, Setup, amount, signed};
use crate::support::assert_invariants;

const ROUNDS: usize = 8;

fn refused_by_state<T: std::fmt::Debug>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(Error::WithdrawalState { .. }))
}

/// Exactly one of the two results is a success and the other a refusal
/// by state.
fn exactly_one<A: std::fmt::Debug, B: std::fmt::Debug>(
    first: &Result<A, Error>,
    second: &Result<B, Error>,
) -> bool {
    match (first.is_ok(), second.is_ok()) {
        (true, false) => refused_by_state(second),
        (false, true) => refused_by_state(first),
        _ => false,
    }
}

async fn hold_status(setup: &Setup, withdrawal: &Withdrawal) -> HoldStatus {
    setup
        .ledger
        .hold(withdrawal.hold_id)
        .await
        .expect("hold")
        .expect("hold")
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_races_reject_and_cancel() {
    let setup = Setup::new().await;
    let user = setup.funded_user(100 * ETH_THRESHOLD).await;
    let operator = setup.user(Role::Operator).await;
    let admin = setup.user(Role::Admin).await;

    for _ in 0..ROUNDS {
        // Approve and reject both leave requested: exactly one wins.
        let waiting = setup.request_eth(user, 2 * ETH_THRESHOLD).await;
        let (approved, rejected) = tokio::join!(
            setup.withdrawals.approve(waiting.id, operator),
            setup.withdrawals.reject(waiting.id, admin, "race"),
        );
        assert!(
            exactly_one(&approved, &rejected),
            "{approved:?} / {rejected:?}"
        );
        let expected = if approved.is_ok() {
            HoldStatus::Held
        } else {
            HoldStatus::Released
        };
        assert_eq!(hold_status(&setup, &waiting).await, expected);

        // Approve and cancel: cancel may follow an approval (nothing is
        // signed yet), but an approval never follows a cancel. Either way
        // the outcome is one of the two orders, and the hold is released
        // exactly once.
        let waiting = setup.request_eth(user, 2 * ETH_THRESHOLD).await;
        let (approved, cancelled) = tokio::join!(
            setup.withdrawals.approve(waiting.id, operator),
            setup.withdrawals.cancel(waiting.id, user, None),
        );
        let cancelled = cancelled.expect("cancel wins or follows the approval");
        assert_eq!(cancelled.status, WithdrawalStatus::Cancelled);
        match approved {
            Ok(_) => assert!(cancelled.approved_at.is_some(), "approved, then cancelled"),
            Err(ref e) => {
                assert!(refused_by_state(&approved), "{e:?}");
                assert_eq!(cancelled.approved_at, None, "cancelled first");
            }
        }
        assert_eq!(hold_status(&setup, &waiting).await, HoldStatus::Released);
    }
    assert_invariants(setup.db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_race_and_money_moves_once() {
    let setup = Setup::new().await;
    let start = 100 * ETH_THRESHOLD;
    let user = setup.funded_user(start).await;
    let admin = setup.user(Role::Admin).await;
    let mut signed_total = 0;

    for round in 0..ROUNDS {
        // Cancel and reject both release the hold: exactly one does.
        let waiting = setup.request_eth(user, 2 * ETH_THRESHOLD).await;
        let (cancelled, rejected) = tokio::join!(
            setup.withdrawals.cancel(waiting.id, user, None),
            setup.withdrawals.reject(waiting.id, admin, "race"),
        );
        assert!(
            exactly_one(&cancelled, &rejected),
            "{cancelled:?} / {rejected:?}"
        );

        // Two cancels: one wins.
        let approved = setup.request_eth(user, 1_000).await;
        let canceller = |who: Uuid| setup.withdrawals.cancel(approved.id, who, None);
        let (first, second) = tokio::join!(canceller(user), canceller(user));
        assert!(exactly_one(&first, &second), "{first:?} / {second:?}");

        // Cancel and record_signed on a reserved withdrawal: either it is
        // cancelled (its nonce kept for a filler) or it is signed and holds.
        let reserved = setup.reserved_eth(user, 2_000).await;
        let reserved_nonce = setup
            .withdrawals
            .nonce_reservation(reserved.id)
            .await
            .expect("reservation")
            .expect("reserved")
            .nonce;
        let attempt = signed(&format!("race-{round}"));
        let (cancelled, recorded) = tokio::join!(
            setup.withdrawals.cancel(reserved.id, user, None),
            setup.withdrawals.record_signed(reserved.id, &attempt),
        );
        assert!(
            exactly_one(&cancelled, &recorded),
            "{cancelled:?} / {recorded:?}"
        );
        if recorded.is_ok() {
            assert_eq!(hold_status(&setup, &reserved).await, HoldStatus::Held);
            signed_total += 2_000 + ETH_FEE;
        } else {
            assert_eq!(hold_status(&setup, &reserved).await, HoldStatus::Released);
            // The nonce went to a filler row, never back to the pool.
            let fillers = setup
                .withdrawals
                .nonces_to_fill(super::HOT_WALLET)
                .await
                .expect("fillers");
            assert!(
                fillers.iter().any(|r| r.nonce == reserved_nonce),
                "nonce {reserved_nonce} kept for a filler: {fillers:?}"
            );
        }
    }
    // Only the signed withdrawals still hold anything.
    let balance = setup.balance(user, "ETH").await;
    assert_eq!(balance.held, amount(signed_total));
    assert_eq!(balance.available, amount(start - signed_total));
    assert_invariants(setup.db.pool()).await;
}
