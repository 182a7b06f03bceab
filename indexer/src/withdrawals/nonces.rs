//! Ethereum nonce reservation: a worker claims the oldest approved
//! withdrawal no other worker holds (`FOR UPDATE SKIP LOCKED`), reserves
//! the sender's next nonce for it and moves it to reserved, in one
//! transaction.
//!
//! The next nonce is the larger of the node's pending nonce (the caller
//! asks the node) and the highest reserved plus one, computed by the
//! insert itself. Two reservers that compute the same nonce collide on
//! the unique `(chain, from_address, nonce)`: the second waits for the
//! first to commit, inserts nothing, and computes again, so nonces come
//! out consecutive and never twice. Nothing is cached in the process, so
//! there is no counter to drift from the chain or from another replica.

use super::rows::{RESERVATION_COLUMNS, ReservationRow, lock_withdrawal, to_reservation};
use super::{NonceReservation, Withdrawal, WithdrawalStatus, Withdrawals, count_transition};
use crate::{Error, Result};

/// Rounds of the compute-and-insert loop before giving up: each lost
/// round means another reservation committed, so this bounds the number
/// of reservers racing on one sender.
const MAX_ROUNDS: usize = 10_000;

/// `0x` and 40 hex digits, lowercased: one spelling per address.
fn normalize_address(address: &str) -> Result<String> {
    let hex = address.strip_prefix("0x").unwrap_or_default();
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidRequest(
            "from_address: must be 0x and 40 hex digits".into(),
        ));
    }
    Ok(address.to_ascii_lowercase())
}

impl Withdrawals {
    /// Claims the oldest approved Ethereum withdrawal that no other worker
    /// has locked, reserves `from_address`'s next nonce for it (at least
    /// `pending_nonce`, the node's pending transaction count) and moves it
    /// to reserved. `None` when no approved withdrawal is free.
    pub async fn reserve_nonce(
        &self,
        from_address: &str,
        pending_nonce: u64,
    ) -> Result<Option<(Withdrawal, NonceReservation)>> {
        let from_address = normalize_address(from_address)?;
        let pending = i64::try_from(pending_nonce)
            .map_err(|_| Error::InvalidRequest("pending_nonce: too large".into()))?;
        let from_address = &from_address;
        let reserved = self
            .transaction(|mut tx| async move {
                let claimed: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM withdrawals WHERE chain = 'ethereum' AND status = 'approved'
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some(id) = claimed else {
                    return Ok((tx, None));
                };
                let reservation = reserve(&mut tx, from_address, pending, id).await?;
                sqlx::query(
                    "UPDATE withdrawals SET status = 'reserved', from_address = $2, reserved_at = now(), updated_at = now()
                     WHERE id = $1",
                )
                .bind(id)
                .bind(from_address)
                .execute(&mut *tx)
                .await?;
                let withdrawal = lock_withdrawal(&mut tx, id).await?;
                Ok((tx, Some((withdrawal, reservation))))
            })
            .await?;
        if reserved.is_some() {
            count_transition(WithdrawalStatus::Reserved);
        }
        Ok(reserved)
    }
}

/// Inserts the next free nonce of `from_address` for `withdrawal_id`.
async fn reserve(
    tx: &mut sqlx::PgConnection,
    from_address: &str,
    pending: i64,
    withdrawal_id: i64,
) -> Result<NonceReservation> {
    for _ in 0..MAX_ROUNDS {
        let row: Option<ReservationRow> = sqlx::query_as(&format!(
            "INSERT INTO eth_nonce_reservations (chain, from_address, nonce, withdrawal_id)
             SELECT 'ethereum', $1, greatest($2, coalesce(max(nonce) + 1, 0)), $3
             FROM eth_nonce_reservations WHERE chain = 'ethereum' AND from_address = $1
             ON CONFLICT ON CONSTRAINT eth_nonce_reservations_unique DO NOTHING
             RETURNING {RESERVATION_COLUMNS}"
        ))
        .bind(from_address)
        .bind(pending)
        .bind(withdrawal_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            return to_reservation(row);
        }
    }
    Err(Error::Corrupt(format!(
        "no nonce of {from_address} could be reserved in {MAX_ROUNDS} rounds"
    )))
}

#[cfg(test)]
mod tests {
    use super::normalize_address;

    #[test]
    fn addresses_have_one_spelling() {
        let mixed = "0x00000000000000000000000000000000000000aB";
        assert_eq!(
            normalize_address(mixed).ok().as_deref(),
            Some("0x00000000000000000000000000000000000000ab")
        );
        for bad in [
            "",
            "0x",
            "00000000000000000000000000000000000000aa",
            "0X00000000000000000000000000000000000000aa",
            "0x00000000000000000000000000000000000000a",
            "0x00000000000000000000000000000000000000zz",
        ] {
            assert!(normalize_address(bad).is_err(), "{bad}");
        }
    }
}
