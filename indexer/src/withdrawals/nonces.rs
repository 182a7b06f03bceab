//! Ethereum nonce reservation: a planner reads the oldest approved
//! withdrawals, chooses those its budget covers, and reserves the
//! sender's next nonces for them, taking each row it reserves with `FOR
//! UPDATE SKIP LOCKED` and moving it to reserved, in one transaction.
//!
//! The next nonce is the larger of the node's pending nonce (the caller
//! asks the node) and the highest reserved plus one, computed by the
//! insert itself. Two reservers that compute the same nonce collide on
//! the unique `(chain, from_address, nonce)`: the second waits for the
//! first to commit, inserts nothing, and computes again, so nonces come
//! out consecutive and never twice. Nothing is cached in the process, so
//! there is no counter to drift from the chain or from another replica.

use std::collections::BTreeMap;

use super::rows::{
    RESERVATION_COLUMNS, ReservationRow, WITHDRAWAL_COLUMNS, WithdrawalRow, lock_payout,
    stored_amount, to_reservation,
};
use super::{
    NonceReservation, OwnTransfer, Payout, PayoutKind, Withdrawal, WithdrawalStatus, Withdrawals,
    count_transition,
};
use crate::ledger::Amount;
use crate::{Error, Result};

/// Rounds of the compute-and-insert loop before giving up: each lost
/// round means another reservation committed, so this bounds the number
/// of reservers racing on one sender.
const MAX_ROUNDS: usize = 10_000;

/// `0x` and 40 hex digits, lowercased: one spelling per address.
pub(crate) fn normalize_address(address: &str) -> Result<String> {
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
        self.reserve_nonce_within(from_address, pending_nonce, None)
            .await
    }

    /// [`Self::reserve_nonce`] for the oldest approved withdrawal that
    /// `budget` (what the sender can still pay, per asset) covers; those
    /// among the oldest it does not cover are marked as waiting for the
    /// hot wallet and stay approved, still held.
    pub async fn reserve_nonce_within(
        &self,
        from_address: &str,
        pending_nonce: u64,
        budget: Option<&BTreeMap<String, Amount>>,
    ) -> Result<Option<(Withdrawal, NonceReservation)>> {
        let queue = self
            .approved_queue(if budget.is_some() { 200 } else { 50 })
            .await?;
        let (covered, uncovered): (Vec<_>, Vec<_>) = queue.into_iter().partition(|queued| {
            budget.is_none_or(|budget| {
                budget
                    .get(&queued.asset)
                    .is_some_and(|have| *have >= queued.amount)
            })
        });
        let uncovered: Vec<i64> = uncovered.iter().map(|q| q.id).collect();
        self.mark_waiting(&uncovered, HOT_WALLET_SHORT).await?;
        for queued in covered {
            if let Some(reserved) = self
                .reserve_nonces(from_address, pending_nonce, &[queued.id])
                .await?
                .pop()
            {
                return Ok(Some(reserved));
            }
        }
        Ok(None)
    }

    /// The oldest approved Ethereum withdrawals, read without locks: what
    /// a planner budgets before [`Self::reserve_nonces`].
    pub async fn approved_queue(&self, limit: i64) -> Result<Vec<Queued>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, asset, amount::text FROM withdrawals
             WHERE chain = 'ethereum' AND status = 'approved' AND kind = 'withdrawal'
             ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(id, asset, amount)| {
                Ok(Queued {
                    id,
                    asset,
                    amount: stored_amount(&amount)?,
                })
            })
            .collect()
    }

    /// Marks the approved withdrawals `ids` as waiting for `reason`, except
    /// those another worker holds.
    pub async fn mark_waiting(&self, ids: &[i64], reason: &str) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE withdrawals SET waiting_reason = $2, updated_at = now()
             WHERE id IN (SELECT id FROM withdrawals WHERE id = ANY($1) AND status = 'approved'
                          AND waiting_reason IS DISTINCT FROM $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(ids)
        .bind(reason)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Reserves `from_address`'s next nonces (at least `pending_nonce`, the
    /// node's pending transaction count) for the approved withdrawals
    /// `ids`, in their order, and moves them to reserved, all in one
    /// transaction. A row another worker holds, or no longer approved, is
    /// skipped; what was reserved is returned.
    pub async fn reserve_nonces(
        &self,
        from_address: &str,
        pending_nonce: u64,
        ids: &[i64],
    ) -> Result<Vec<(Withdrawal, NonceReservation)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let from_address = normalize_address(from_address)?;
        let pending = i64::try_from(pending_nonce)
            .map_err(|_| Error::InvalidRequest("pending_nonce: too large".into()))?;
        let from_address = &from_address;
        let reserved = self
            .transaction(|mut tx| async move {
                // SKIP LOCKED: racing reservers never wait on one another
                // and never take the same row.
                let taken: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM withdrawals
                     WHERE id = ANY($1) AND chain = 'ethereum' AND status = 'approved' AND kind = 'withdrawal'
                     FOR UPDATE SKIP LOCKED",
                )
                .bind(ids)
                .fetch_all(&mut *tx)
                .await?;
                let mut taken: std::collections::HashSet<i64> = taken.into_iter().collect();
                // In the caller's order, each once.
                let in_order: Vec<i64> = ids.iter().copied().filter(|id| taken.remove(id)).collect();
                let mut reservations = reserve_consecutive(&mut tx, from_address, pending, &in_order).await?;
                // A nonce another reserver took between the read of the
                // highest and the insert is skipped; those rows go one by one.
                let placed: std::collections::HashSet<i64> =
                    reservations.iter().map(|r| r.withdrawal_id).collect();
                for &id in in_order.iter().filter(|id| !placed.contains(id)) {
                    reservations.push(reserve(&mut tx, from_address, pending, id).await?);
                }
                let rows: Vec<WithdrawalRow> = sqlx::query_as(&format!(
                    "UPDATE withdrawals SET status = 'reserved', from_address = $2, reserved_at = now(),
                         waiting_reason = NULL, updated_at = now()
                     WHERE id = ANY($1) RETURNING {WITHDRAWAL_COLUMNS}"
                ))
                .bind(&in_order)
                .bind(from_address)
                .fetch_all(&mut *tx)
                .await?;
                let mut by_id: std::collections::HashMap<i64, WithdrawalRow> =
                    rows.into_iter().map(|row| (row.id, row)).collect();
                let mut reserved = Vec::with_capacity(in_order.len());
                for reservation in reservations {
                    let row = by_id.remove(&reservation.withdrawal_id).ok_or_else(|| {
                        Error::Corrupt(format!(
                            "withdrawal {} reserved but not updated",
                            reservation.withdrawal_id
                        ))
                    })?;
                    reserved.push((row.into_withdrawal()?, reservation));
                }
                Ok((tx, reserved))
            })
            .await?;
        if !reserved.is_empty() {
            metrics::counter!(
                crate::metrics::WITHDRAWAL_TRANSITIONS,
                "status" => WithdrawalStatus::Reserved.as_str()
            )
            .increment(reserved.len() as u64);
        }
        Ok(reserved)
    }

    /// Creates one of Coffer's own Ethereum transfers (a sweep, a gas
    /// top-up) with its sender's next nonce reserved, ready to sign, in
    /// one transaction.
    pub async fn create_own_transfer(
        &self,
        transfer: &OwnTransfer,
        pending_nonce: u64,
    ) -> Result<(Payout, NonceReservation)> {
        if transfer.kind == PayoutKind::Withdrawal || transfer.kind == PayoutKind::Filler {
            return Err(Error::InvalidRequest(
                "kind: only sweeps and gas top-ups are created here".into(),
            ));
        }
        if (transfer.kind == PayoutKind::Sweep) != transfer.from_key_index.is_some() {
            return Err(Error::InvalidRequest(
                "from_key_index: a sweep, and only a sweep, signs with a deposit key".into(),
            ));
        }
        let from_address = &normalize_address(&transfer.from_address)?;
        let pending = i64::try_from(pending_nonce)
            .map_err(|_| Error::InvalidRequest("pending_nonce: too large".into()))?;
        let (payout, reservation) = self
            .transaction(|mut tx| async move {
                // One creator at a time per deposit address, and none while
                // a sweep or top-up of it is in flight: two loops planning
                // the same round must not both sweep it.
                let deposit_address = if transfer.kind == PayoutKind::Sweep {
                    from_address.clone()
                } else {
                    transfer.destination.to_ascii_lowercase()
                };
                super::lock_name(&mut tx, &format!("ethereum sweep {deposit_address}")).await?;
                let busy: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM withdrawals
                     WHERE chain = 'ethereum' AND kind IN ('sweep', 'gas_top_up')
                       AND (lower(from_address) = $1 OR lower(destination) = $1)
                       AND status IN ('reserved', 'signed', 'broadcast', 'confirming', 'manual'))",
                )
                .bind(&deposit_address)
                .fetch_one(&mut *tx)
                .await?;
                if busy {
                    return Err(Error::InvalidRequest(format!(
                        "from_address: a sweep or top-up of {deposit_address} is already in flight"
                    )));
                }
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO withdrawals (kind, asset, chain, amount, fee, destination, status,
                         from_address, from_key_index, approved_at, reserved_at)
                     VALUES ($1, $2, 'ethereum', $3::numeric, 0, $4, 'reserved', $5, $6, now(), now())
                     RETURNING id",
                )
                .bind(transfer.kind)
                .bind(&transfer.asset)
                .bind(transfer.amount.to_string())
                .bind(&transfer.destination)
                .bind(from_address)
                .bind(transfer.from_key_index.map(i64::from))
                .fetch_one(&mut *tx)
                .await?;
                let reservation = reserve(&mut tx, from_address, pending, id).await?;
                let payout = lock_payout(&mut tx, id).await?;
                Ok((tx, (payout, reservation)))
            })
            .await?;
        count_transition(WithdrawalStatus::Reserved);
        Ok((payout, reservation))
    }
}

/// An approved withdrawal waiting for a nonce, as a planner budgets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    pub id: i64,
    pub asset: String,
    pub amount: Amount,
}

/// Why an approved withdrawal waits before its nonce is reserved.
pub const HOT_WALLET_SHORT: &str =
    "waiting for the hot wallet: its balance cannot cover this withdrawal yet (sweeps refill it)";

/// Reserves the sender's next nonces for `ids`, consecutive and in their
/// order, in one statement; a row whose nonce was taken meanwhile is left
/// out of the result (the caller reserves it on its own).
async fn reserve_consecutive(
    tx: &mut sqlx::PgConnection,
    from_address: &str,
    pending: i64,
    ids: &[i64],
) -> Result<Vec<NonceReservation>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<ReservationRow> = sqlx::query_as(&format!(
        "INSERT INTO eth_nonce_reservations (chain, from_address, nonce, withdrawal_id)
         SELECT 'ethereum', $1, next.nonce + queued.n - 1, queued.id
         FROM (SELECT greatest($2, coalesce(max(nonce) + 1, 0)) AS nonce
               FROM eth_nonce_reservations WHERE chain = 'ethereum' AND from_address = $1) next,
              unnest($3::bigint[]) WITH ORDINALITY AS queued(id, n)
         ORDER BY queued.n
         ON CONFLICT ON CONSTRAINT eth_nonce_reservations_unique DO NOTHING
         RETURNING {RESERVATION_COLUMNS}"
    ))
    .bind(from_address)
    .bind(pending)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut reservations = rows
        .into_iter()
        .map(to_reservation)
        .collect::<Result<Vec<_>>>()?;
    reservations.sort_by_key(|r| r.nonce);
    Ok(reservations)
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
