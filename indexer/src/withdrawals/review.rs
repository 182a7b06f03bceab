//! The transitions a person makes: approve, reject and cancel before
//! signing, and resolving a manual row after. Each locks the withdrawal's
//! row first and checks its status there; reject and cancel release the
//! hold in the same transaction, so the release happens exactly once, and
//! a cancelled withdrawal that had reserved a nonce leaves it marked for a
//! filler instead of a gap. A resolution is only recorded here; the payout
//! loop applies it ([`super::Claimed::apply_resolution`]).

use sqlx::PgConnection;
use uuid::Uuid;

use super::rows::{WITHDRAWAL_COLUMNS, WithdrawalRow, lock_withdrawal};
use super::{
    ManualResolution, Withdrawal, WithdrawalStatus, Withdrawals, count_transition, person_error,
    validate_reason,
};
use crate::ledger::{EntryKind, ReleaseHold};
use crate::metrics::WITHDRAWAL_NONCE_FILLERS;
use crate::{Error, Result};

/// Refuses an approver who asked for the withdrawal or owns it.
fn check_approver(withdrawal: &Withdrawal, approver: Uuid) -> Result<()> {
    if approver == withdrawal.requested_by || approver == withdrawal.user {
        return Err(Error::SelfApproval);
    }
    Ok(())
}

fn refuse(withdrawal: &Withdrawal, action: &'static str) -> Error {
    Error::WithdrawalState {
        id: withdrawal.id,
        status: withdrawal.status,
        action,
    }
}

impl Withdrawals {
    /// Approves a requested withdrawal; the approver must be neither its
    /// requester nor its owner (that they are an operator or an admin is
    /// the caller's check).
    pub async fn approve(&self, id: i64, approver: Uuid) -> Result<Withdrawal> {
        let approved = self
            .transaction(|mut tx| async move {
                let withdrawal = lock_withdrawal(&mut tx, id).await?;
                if withdrawal.status != WithdrawalStatus::Requested {
                    return Err(refuse(&withdrawal, "approved"));
                }
                check_approver(&withdrawal, approver)?;
                let row: WithdrawalRow = sqlx::query_as(&format!(
                    "UPDATE withdrawals SET status = 'approved', approved_by = $2, approved_at = now(), updated_at = now()
                     WHERE id = $1 RETURNING {WITHDRAWAL_COLUMNS}"
                ))
                .bind(id)
                .bind(approver)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| person_error(e, approver))?;
                Ok((tx, row.into_withdrawal()?))
            })
            .await?;
        count_transition(WithdrawalStatus::Approved);
        Ok(approved)
    }

    /// Rejects a requested withdrawal with a reason and releases its hold.
    pub async fn reject(&self, id: i64, approver: Uuid, reason: &str) -> Result<Withdrawal> {
        let reason = validate_reason(Some(reason), true)?;
        let reason = reason.as_deref();
        let rejected = self
            .transaction(|mut tx| async move {
                let withdrawal = lock_withdrawal(&mut tx, id).await?;
                if withdrawal.status != WithdrawalStatus::Requested {
                    return Err(refuse(&withdrawal, "rejected"));
                }
                check_approver(&withdrawal, approver)?;
                let closed = self
                    .close(
                        &mut tx,
                        &withdrawal,
                        WithdrawalStatus::Rejected,
                        approver,
                        reason,
                    )
                    .await?;
                Ok((tx, closed))
            })
            .await?;
        count_transition(WithdrawalStatus::Rejected);
        Ok(rejected)
    }

    /// Cancels a withdrawal that is not signed yet and releases its hold.
    /// If it had reserved a nonce, the nonce stays reserved, marked for a
    /// zero-value self-transfer, so the sender's later nonces never wait
    /// behind a gap.
    pub async fn cancel(&self, id: i64, by: Uuid, reason: Option<&str>) -> Result<Withdrawal> {
        let reason = validate_reason(reason, false)?;
        let reason = reason.as_deref();
        let (cancelled, filler) = self
            .transaction(|mut tx| async move {
                let withdrawal = lock_withdrawal(&mut tx, id).await?;
                if !withdrawal.status.is_cancellable() {
                    return Err(refuse(&withdrawal, "cancelled"));
                }
                let filler = if withdrawal.status == WithdrawalStatus::Reserved {
                    mark_for_filler(&mut tx, id).await?
                } else {
                    false
                };
                let closed = self
                    .close(
                        &mut tx,
                        &withdrawal,
                        WithdrawalStatus::Cancelled,
                        by,
                        reason,
                    )
                    .await?;
                Ok((tx, (closed, filler)))
            })
            .await?;
        count_transition(WithdrawalStatus::Cancelled);
        if filler {
            metrics::counter!(WITHDRAWAL_NONCE_FILLERS).increment(1);
        }
        Ok(cancelled)
    }

    /// Records an admin's resolution of a manual withdrawal: `Release`
    /// when nothing reached the destination, `Settle` when it was paid.
    /// The payout loop applies it (→ failed with the hold released, or
    /// completed with it settled) while it holds the row, once the chain
    /// proves none of its attempts can land; one that lands after all is
    /// recorded instead and the request dropped, so a release never
    /// refunds a payment that went out. The resolver must be neither requester nor
    /// owner (that they are an admin is the caller's check), and says why;
    /// one resolution per row.
    pub async fn resolve_manual(
        &self,
        id: i64,
        by: Uuid,
        resolution: ManualResolution,
        reason: &str,
    ) -> Result<Withdrawal> {
        let reason = validate_reason(Some(reason), true)?;
        let reason = reason.as_deref();
        let resolved = self
            .transaction(|mut tx| async move {
                let withdrawal = lock_withdrawal(&mut tx, id).await?;
                if withdrawal.status != WithdrawalStatus::Manual {
                    return Err(refuse(&withdrawal, "resolved"));
                }
                if withdrawal.resolution.is_some() {
                    return Err(refuse(&withdrawal, "resolved twice"));
                }
                check_approver(&withdrawal, by)?;
                let row: WithdrawalRow = sqlx::query_as(&format!(
                    "UPDATE withdrawals SET resolution = $2, resolution_by = $3, resolution_reason = $4,
                         updated_at = now()
                     WHERE id = $1 RETURNING {WITHDRAWAL_COLUMNS}"
                ))
                .bind(id)
                .bind(resolution)
                .bind(by)
                .bind(reason)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| person_error(e, by))?;
                Ok((tx, row.into_withdrawal()?))
            })
            .await?;
        tracing::warn!(id, ?resolution, %by, "manual withdrawal resolved by an admin; the payout loop applies it");
        Ok(resolved)
    }

    /// Releases the withdrawal's hold and records its end, inside the
    /// transition's transaction.
    async fn close(
        &self,
        tx: &mut PgConnection,
        withdrawal: &Withdrawal,
        status: WithdrawalStatus,
        by: Uuid,
        reason: Option<&str>,
    ) -> Result<Withdrawal> {
        let id = withdrawal.id;
        self.ledger()
            .release_hold_in(
                tx,
                &ReleaseHold {
                    hold_id: withdrawal.hold_id,
                    kind: EntryKind::WithdrawalRelease,
                    reference: format!("withdrawal:{id}:release"),
                    metadata: serde_json::json!({ "withdrawal_id": id, "status": status }),
                },
            )
            .await?;
        let row: WithdrawalRow = sqlx::query_as(&format!(
            "UPDATE withdrawals SET status = $2, closed_by = $3, reason = $4, finished_at = now(), updated_at = now()
             WHERE id = $1 RETURNING {WITHDRAWAL_COLUMNS}"
        ))
        .bind(id)
        .bind(status)
        .bind(by)
        .bind(reason)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| person_error(e, by))?;
        row.into_withdrawal()
    }
}

/// Hands the withdrawal's reserved nonce to a new filler row (a zero-value
/// self-transfer from the same sender, reserved and ready to sign), so the
/// nonce is used and the sender's later nonces never wait behind a gap;
/// whether there was a nonce to hand over.
pub(super) async fn mark_for_filler(tx: &mut PgConnection, id: i64) -> Result<bool> {
    let filler: Option<i64> = sqlx::query_scalar(
        "INSERT INTO withdrawals (kind, asset, chain, amount, fee, destination, status, from_address,
                                  approved_at, reserved_at)
         SELECT 'filler', (SELECT code FROM assets WHERE chain = w.chain AND contract IS NULL ORDER BY code LIMIT 1),
                w.chain, 0, 0, w.from_address, 'reserved', w.from_address, now(), now()
         FROM withdrawals w JOIN eth_nonce_reservations r ON r.withdrawal_id = w.id AND r.purpose = 'withdrawal'
         WHERE w.id = $1
         RETURNING id",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(filler) = filler else {
        return Ok(false);
    };
    sqlx::query(
        "UPDATE eth_nonce_reservations
         SET withdrawal_id = $2, purpose = 'filler',
             filler_reason = 'withdrawal ' || withdrawal_id || ' cancelled after reserving the nonce',
             updated_at = now()
         WHERE withdrawal_id = $1 AND purpose = 'withdrawal'",
    )
    .bind(id)
    .bind(filler)
    .execute(&mut *tx)
    .await?;
    Ok(true)
}
