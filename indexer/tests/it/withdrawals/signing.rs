//! Signed attempts: the raw bytes and hash are committed with the move to
//! signed, before anything could be sent, and only once.

use indexer::Error;
use indexer::withdrawals::WithdrawalStatus;

use super::{Setup, signed};
use crate::support::assert_invariants;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_signed_commits_the_bytes_before_anything_is_sent() {
    let setup = Setup::new().await;
    let user = setup.funded_user(100_000_000).await;
    let reserved = setup.reserved_eth(user, 10_000).await;
    let reservation = setup
        .withdrawals
        .nonce_reservation(reserved.id)
        .await
        .expect("reservation")
        .expect("reserved");
    let attempt = signed("first");

    let (withdrawal, stored) = setup
        .withdrawals
        .record_signed(reserved.id, &attempt)
        .await
        .expect("record");

    assert_eq!(withdrawal.status, WithdrawalStatus::Signed);
    assert_eq!(withdrawal.current_attempt_id, Some(stored.id));
    let stored_withdrawal = setup.withdrawals.get(reserved.id).await.expect("get");
    assert!(stored_withdrawal.is_some_and(|w| w.signed_at.is_some()));
    assert_eq!(stored.raw_tx, attempt.raw_tx);
    assert_eq!(stored.tx_hash, attempt.tx_hash);
    assert_eq!(stored.nonce_reservation_id, Some(reservation.id));
    assert_eq!(stored.broadcast_at, None, "recorded, not yet sent");
    assert_eq!(stored.broadcast_count, 0);
    assert_eq!(stored.last_broadcast_height, None);
    assert_eq!(stored.landed_block_hash, None);
    // Committed: another connection reads the same bytes and status.
    let (raw, hash, status): (Vec<u8>, String, WithdrawalStatus) = sqlx::query_as(
        "SELECT a.raw_tx, a.tx_hash, w.status FROM withdrawal_attempts a
         JOIN withdrawals w ON w.current_attempt_id = a.id WHERE w.id = $1",
    )
    .bind(reserved.id)
    .fetch_one(setup.db.pool())
    .await
    .expect("committed attempt");
    assert_eq!(
        (raw, hash, status),
        (
            attempt.raw_tx.clone(),
            attempt.tx_hash.clone(),
            WithdrawalStatus::Signed
        )
    );

    // A retry whose response was lost gets the same attempt back.
    let (_, again) = setup
        .withdrawals
        .record_signed(reserved.id, &attempt)
        .await
        .expect("replay");
    assert_eq!(again.id, stored.id);
    // Another first attempt is refused: replacements are a later transition.
    let other = setup
        .withdrawals
        .record_signed(reserved.id, &signed("other"))
        .await;
    assert!(
        matches!(
            other,
            Err(Error::WithdrawalState {
                status: WithdrawalStatus::Signed,
                action: "signed",
                ..
            })
        ),
        "{other:?}"
    );
    assert_eq!(
        setup
            .withdrawals
            .attempts(reserved.id)
            .await
            .expect("attempts"),
        vec![stored]
    );
    assert_invariants(setup.db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_signed_refuses_what_cannot_be_signed() {
    let setup = Setup::new().await;
    let user = setup.funded_user(100_000_000).await;

    let approved = setup.request_eth(user, 10_000).await;
    let refused = setup
        .withdrawals
        .record_signed(approved.id, &signed("early"))
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::WithdrawalState {
                status: WithdrawalStatus::Approved,
                ..
            })
        ),
        "not reserved yet: {refused:?}"
    );

    setup
        .withdrawals
        .cancel(approved.id, user, None)
        .await
        .expect("cancel");

    let reserved = setup.reserved_eth(user, 10_000).await;
    let mut no_fees = signed("x");
    no_fees.max_fee_per_gas = None;
    let mut tip_above_max = signed("y");
    tip_above_max.max_priority_fee_per_gas = Some(super::amount(31));
    let mut empty = signed("z");
    empty.raw_tx.clear();
    for (attempt, field) in [
        (&no_fees, "max_fee_per_gas"),
        (&tip_above_max, "max_priority_fee_per_gas"),
        (&empty, "raw_tx"),
    ] {
        let refused = setup.withdrawals.record_signed(reserved.id, attempt).await;
        assert!(
            matches!(&refused, Err(Error::InvalidRequest(m)) if m.starts_with(field)),
            "{field}: {refused:?}"
        );
    }
    // The first withdrawal's hash cannot be another's.
    let first = setup.reserved_eth(user, 20_000).await;
    setup
        .withdrawals
        .record_signed(first.id, &signed("shared"))
        .await
        .expect("record");
    let duplicate = setup
        .withdrawals
        .record_signed(reserved.id, &signed("shared"))
        .await;
    assert!(
        matches!(&duplicate, Err(Error::InvalidRequest(m)) if m.starts_with("tx_hash")),
        "{duplicate:?}"
    );
    let still = setup
        .withdrawals
        .get(reserved.id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(still.status, WithdrawalStatus::Reserved);

    // The schema refuses a signed withdrawal without an attempt.
    let forced = sqlx::query("UPDATE withdrawals SET status = 'signed' WHERE id = $1")
        .bind(reserved.id)
        .execute(setup.db.pool())
        .await;
    assert!(forced.is_err(), "withdrawals_signed_has_attempt");
}

/// A round's signatures commit together: a row cancelled meanwhile is
/// skipped, one bad attempt rolls the whole batch back (the loop then
/// records them one by one), and sends are recorded only for the attempt
/// a row still follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_signatures_and_sends_skip_rows_that_moved_on() {
    let setup = Setup::new().await;
    let user = setup.funded_user(100_000_000).await;
    let first = setup.request_eth(user, 10_000).await;
    let second = setup.request_eth(user, 20_000).await;
    let third = setup.request_eth(user, 30_000).await;
    let reserved = setup
        .withdrawals
        .reserve_nonces(
            super::HOT_WALLET,
            0,
            &[first.id, second.id, third.id, first.id],
        )
        .await
        .expect("reserve");
    let nonces: Vec<u64> = reserved.iter().map(|(_, r)| r.nonce).collect();
    assert_eq!(nonces, [0, 1, 2], "consecutive, in order, each row once");
    setup
        .withdrawals
        .cancel(third.id, user, None)
        .await
        .expect("cancel");

    let mut bad = signed("bad");
    bad.max_priority_fee_per_gas = Some(super::amount(1_000));
    let refused = setup
        .withdrawals
        .record_signed_many(&[(first.id, signed("one")), (second.id, bad)])
        .await
        .expect_err("a bad attempt refuses the batch");
    assert!(matches!(refused, Error::InvalidRequest(_)), "{refused:?}");
    assert_eq!(
        setup
            .withdrawals
            .get(first.id)
            .await
            .expect("get")
            .expect("row")
            .status,
        WithdrawalStatus::Reserved,
        "rolled back with the batch"
    );

    let recorded = setup
        .withdrawals
        .record_signed_many(&[
            (first.id, signed("one")),
            (second.id, signed("two")),
            (third.id, signed("three")),
        ])
        .await
        .expect("batch");
    assert_eq!(recorded, 2, "the cancelled row is skipped");
    let store = &setup.withdrawals;
    let row = |id| async move { store.get(id).await.expect("get").expect("row") };
    let one = row(first.id).await.current_attempt_id.expect("signed");
    let two = row(second.id).await.current_attempt_id.expect("signed");

    // The second row's attempt is no longer the one it follows: only the
    // first's send is recorded, as its first.
    let sent = setup
        .withdrawals
        .record_sent_many(&[(first.id, one), (second.id, two + 1_000)], 7)
        .await
        .expect("sent");
    assert_eq!(sent.iter().map(|s| s.id).collect::<Vec<_>>(), [first.id]);
    assert_eq!(row(first.id).await.status, WithdrawalStatus::Broadcast);
    assert_eq!(row(second.id).await.status, WithdrawalStatus::Signed);
    let again = setup
        .withdrawals
        .record_sent_many(&[(first.id, one)], 8)
        .await
        .expect("sent again");
    assert!(again.is_empty(), "a resend is not a first send");
    let attempts = setup
        .withdrawals
        .attempts(first.id)
        .await
        .expect("attempts");
    assert_eq!(attempts[0].broadcast_count, 2);
    assert_eq!(attempts[0].first_broadcast_height, Some(7));
    assert_eq!(attempts[0].last_broadcast_height, Some(8));
    assert_invariants(setup.db.pool()).await;
}
