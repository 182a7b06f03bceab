//! Nonce reservation: concurrent workers get consecutive nonces with no
//! gap and no duplicate, the node's pending nonce is respected, and a
//! cancelled reservation is kept for a filler.

use chains::Chain;
use indexer::Error;
use indexer::withdrawals::{NewWithdrawal, NoncePurpose, PayoutKind, WithdrawalStatus};

use super::{HOT_WALLET, Setup, amount, key};
use crate::support::{assert_invariants, fund};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_reservations_take_consecutive_nonces() {
    let setup = Setup::new().await;
    let user = setup.funded_user(100_000_000).await;
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(setup.request_eth(user, 1_000 + n).await.id);
    }

    let pending = 7;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let withdrawals = setup.withdrawals.clone();
            tokio::spawn(async move { withdrawals.reserve_nonce(HOT_WALLET, pending).await })
        })
        .collect();
    let mut nonces = Vec::new();
    let mut reserved_ids = Vec::new();
    for task in tasks {
        let (withdrawal, reservation) = task
            .await
            .expect("task")
            .expect("reserve")
            .expect("each worker claims one");
        assert_eq!(withdrawal.status, WithdrawalStatus::Reserved);
        assert_eq!(withdrawal.from_address.as_deref(), Some(HOT_WALLET));
        assert_eq!(reservation.withdrawal_id, withdrawal.id);
        nonces.push(reservation.nonce);
        reserved_ids.push(withdrawal.id);
    }
    nonces.sort_unstable();
    assert_eq!(
        nonces,
        (pending..pending + 50).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    reserved_ids.sort_unstable();
    assert_eq!(reserved_ids, ids, "every withdrawal claimed exactly once");

    assert!(
        setup
            .withdrawals
            .reserve_nonce(HOT_WALLET, pending)
            .await
            .expect("reserve")
            .is_none(),
        "nothing left to claim"
    );
    assert_invariants(setup.db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_nonce_is_the_larger_of_the_nodes_and_ours() {
    let setup = Setup::new().await;
    let user = setup.funded_user(100_000_000).await;
    fund(&setup.ledger, user, "BTC", 100_000).await;
    // An approved Bitcoin withdrawal is never claimed for a nonce.
    let bitcoin = NewWithdrawal {
        user,
        asset: "BTC".into(),
        chain: Chain::Bitcoin,
        amount: amount(1_000),
        destination: "bcrt1qexample".into(),
        requested_by: user,
    };
    let btc = setup
        .withdrawals
        .request(&key(), &bitcoin)
        .await
        .expect("btc");
    assert_eq!(btc.status, WithdrawalStatus::Approved);
    assert!(
        setup
            .withdrawals
            .reserve_nonce(HOT_WALLET, 0)
            .await
            .expect("reserve")
            .is_none()
    );

    assert_eq!(reserve(&setup, user, HOT_WALLET, 0).await, 0);
    assert_eq!(
        reserve(&setup, user, HOT_WALLET, 5).await,
        5,
        "the node saw nonces we did not send"
    );
    assert_eq!(
        reserve(&setup, user, HOT_WALLET, 2).await,
        6,
        "the node lags our reservations"
    );
    let other = "0x00000000000000000000000000000000000000BB";
    assert_eq!(
        reserve(&setup, user, other, 3).await,
        3,
        "each sender has its own nonces"
    );
    assert_eq!(
        reserve(&setup, user, &other.to_lowercase(), 0).await,
        4,
        "one spelling per address"
    );

    setup.request_eth(user, 1_000).await;
    for bad in [
        "0x12",
        "00000000000000000000000000000000000000aa00",
        "0xzz000000000000000000000000000000000000aa",
    ] {
        let refused = setup.withdrawals.reserve_nonce(bad, 0).await;
        assert!(
            matches!(&refused, Err(Error::InvalidRequest(m)) if m.starts_with("from_address")),
            "{bad}: {refused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_reservation_keeps_its_nonce_for_a_filler() {
    let setup = Setup::new().await;
    let user = setup.funded_user(100_000_000).await;
    let mut reserved = Vec::new();
    for _ in 0..3 {
        reserved.push(setup.reserved_eth(user, 1_000).await);
    }
    let middle = &reserved[1];
    let before = setup
        .withdrawals
        .nonce_reservation(middle.id)
        .await
        .expect("reservation")
        .expect("reserved");
    assert_eq!(before.purpose, NoncePurpose::Withdrawal);
    assert_eq!(before.nonce, 1);

    setup
        .withdrawals
        .cancel(middle.id, user, None)
        .await
        .expect("cancel");

    assert_eq!(
        setup
            .withdrawals
            .nonce_reservation(middle.id)
            .await
            .expect("reservation"),
        None,
        "the cancelled withdrawal hands its nonce over"
    );
    let [after] = setup
        .withdrawals
        .nonces_to_fill(HOT_WALLET)
        .await
        .expect("fillers")
        .try_into()
        .expect("one filler");
    assert_eq!(after.id, before.id, "the same reservation row");
    assert_eq!(after.nonce, 1, "the nonce is never given back");
    assert_eq!(after.purpose, NoncePurpose::Filler);
    assert!(
        after
            .filler_reason
            .as_deref()
            .is_some_and(|r| r.contains("cancelled"))
    );
    let filler = setup
        .withdrawals
        .payout(after.withdrawal_id)
        .await
        .expect("filler row")
        .expect("exists");
    assert_eq!(filler.kind, PayoutKind::Filler);
    assert_eq!(filler.status, WithdrawalStatus::Reserved, "ready to sign");
    assert!(filler.amount.is_zero());
    assert_eq!(filler.destination, HOT_WALLET, "a self-transfer");
    assert_eq!(filler.from_address.as_deref(), Some(HOT_WALLET));
    assert_eq!(
        setup.withdrawals.get(filler.id).await.expect("get"),
        None,
        "Coffer's own transfers are not withdrawals"
    );
    let to_fill = setup
        .withdrawals
        .nonces_to_fill(HOT_WALLET)
        .await
        .expect("fillers");
    assert_eq!(to_fill, vec![after]);

    let next = setup.reserved_eth(user, 1_000).await;
    let next = setup
        .withdrawals
        .nonce_reservation(next.id)
        .await
        .expect("reservation")
        .expect("reserved");
    assert_eq!(
        next.nonce, 3,
        "later withdrawals never reuse a filled nonce"
    );
    assert_invariants(setup.db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_a_reserved_ethereum_withdrawal_without_a_nonce() {
    let setup = Setup::new().await;
    let user = setup.funded_user(100_000_000).await;
    let approved = setup.request_eth(user, 1_000).await;

    let forced = sqlx::query(
        "UPDATE withdrawals SET status = 'reserved', from_address = $2, reserved_at = now() WHERE id = $1",
    )
    .bind(approved.id)
    .bind(HOT_WALLET)
    .execute(setup.db.pool())
    .await;

    let error = forced.expect_err("withdrawals_ethereum_nonce_reserved");
    assert!(
        error.to_string().contains("without a reserved nonce"),
        "{error}"
    );
    let still = setup
        .withdrawals
        .get(approved.id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(still.status, WithdrawalStatus::Approved);
}

/// Requests a small ETH withdrawal and reserves `address`'s next nonce for
/// it, the node reporting `pending`.
async fn reserve(setup: &Setup, user: uuid::Uuid, address: &str, pending: u64) -> u64 {
    setup.request_eth(user, 1_000).await;
    setup
        .withdrawals
        .reserve_nonce(address, pending)
        .await
        .expect("reserve")
        .expect("claimed")
        .1
        .nonce
}
