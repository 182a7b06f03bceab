//! Requesting a withdrawal: checks, the daily limit, the ledger hold on
//! amount plus fee and the row, in one transaction, once per idempotency key.
//!
//! Two advisory locks serialize what must not interleave: the caller's key
//! (a concurrent duplicate waits, then finds the first one's row) and the
//! user's asset (two requests cannot both pass the daily limit). They are
//! always taken in that order, one of each, so they cannot deadlock.

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::rows::{WITHDRAWAL_COLUMNS, WithdrawalRow};
use super::{
    NewWithdrawal, Withdrawal, WithdrawalStatus, Withdrawals, count_transition, lock_name,
    person_error, validate_key,
};
use crate::ledger::{Amount, EntryKind, IdempotencyKey, PlaceHold};
use crate::metrics::WITHDRAWALS_REFUSED;
use crate::{Error, Result};

/// What a request is compared by under its key.
fn request_hash(request: &NewWithdrawal) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [
        request.user.to_string().as_str(),
        &request.asset,
        request.chain.as_str(),
        &request.amount.to_string(),
        &request.destination,
        &request.requested_by.to_string(),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// A destination is 1 to 200 printable characters without spaces; the
/// chain's own format is checked by the caller that knows the chain.
fn validate_destination(destination: &str) -> Result<()> {
    if destination.is_empty() || destination.len() > 200 {
        return Err(Error::InvalidRequest(
            "destination: must be 1 to 200 bytes".into(),
        ));
    }
    if destination
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::InvalidRequest(
            "destination: must not contain spaces or control characters".into(),
        ));
    }
    Ok(())
}

/// The withdrawal already stored under `key`: the same one if `hash`
/// matches, a conflict if another request took the key.
async fn under_key(
    tx: &mut PgConnection,
    key: &IdempotencyKey,
    hash: &[u8; 32],
) -> Result<Option<Withdrawal>> {
    let row: Option<WithdrawalRow> = sqlx::query_as(&format!(
        "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE idempotency_scope = $1 AND idempotency_key = $2"
    ))
    .bind(&key.scope)
    .bind(&key.key)
    .fetch_optional(&mut *tx)
    .await?;
    match row {
        None => Ok(None),
        Some(row) if row.request_hash.as_deref() == Some(&hash[..]) => {
            row.into_withdrawal().map(Some)
        }
        Some(_) => Err(Error::IdempotencyConflict {
            key: key.key.clone(),
        }),
    }
}

/// Locks the user's row against being disabled and takes `limit_lock`, in
/// one round trip; refuses a user who is missing or disabled. (The
/// advisory lock is taken as the row is read, before its row lock.)
async fn lock_user_and_limit(
    tx: &mut PgConnection,
    user: uuid::Uuid,
    limit_lock: &str,
) -> Result<()> {
    let disabled: Option<bool> = sqlx::query_scalar(
        "SELECT disabled_at IS NOT NULL FROM users
         WHERE id = $1 AND pg_advisory_xact_lock(hashtextextended($2, 0)) IS NOT NULL
         FOR SHARE",
    )
    .bind(user)
    .bind(limit_lock)
    .fetch_optional(&mut *tx)
    .await?;
    crate::users::require_active(user, disabled)
}

/// What the user has withdrawn of `asset` in the last 24 hours, counting
/// every withdrawal that still holds or has paid, and the id the new
/// withdrawal takes, in one round trip.
async fn withdrawn_today_and_next_id(
    tx: &mut PgConnection,
    user: uuid::Uuid,
    asset: &str,
) -> Result<(Amount, i64)> {
    let (total, id): (String, i64) = sqlx::query_as(
        "SELECT (SELECT coalesce(sum(amount), 0)::text FROM withdrawals
                 WHERE user_id = $1 AND asset = $2 AND requested_at > now() - interval '1 day'
                   AND status NOT IN ('rejected', 'cancelled', 'failed')),
                nextval(pg_get_serial_sequence('withdrawals', 'id'))",
    )
    .bind(user)
    .bind(asset)
    .fetch_one(&mut *tx)
    .await?;
    Ok((super::rows::stored_amount(&total)?, id))
}

impl Withdrawals {
    /// Requests a withdrawal: holds amount plus the asset's fee and stores
    /// the row, approved at once when the amount is at or under the
    /// asset's approval threshold, else requested until an approver acts.
    /// The same key with the same request returns the same withdrawal (as
    /// it stands now); with another request it is refused.
    pub async fn request(
        &self,
        key: &IdempotencyKey,
        request: &NewWithdrawal,
    ) -> Result<Withdrawal> {
        let refused = |reason: &'static str| {
            metrics::counter!(WITHDRAWALS_REFUSED, "reason" => reason).increment(1);
        };
        let result = self.try_request(key, request).await;
        match &result {
            Ok((withdrawal, true)) => {
                count_transition(WithdrawalStatus::Requested);
                if withdrawal.status == WithdrawalStatus::Approved {
                    count_transition(WithdrawalStatus::Approved);
                }
            }
            Ok((_, false)) => {}
            Err(Error::InsufficientFunds) => refused("insufficient_funds"),
            Err(Error::DailyLimitExceeded { .. }) => refused("daily_limit"),
            Err(_) => refused("invalid"),
        }
        result.map(|(withdrawal, _)| withdrawal)
    }

    /// [`Self::request`], and whether this call created the withdrawal.
    async fn try_request(
        &self,
        key: &IdempotencyKey,
        request: &NewWithdrawal,
    ) -> Result<(Withdrawal, bool)> {
        validate_key(key)?;
        if request.amount.is_zero() {
            return Err(Error::InvalidAmount("amount: must be positive".into()));
        }
        validate_destination(&request.destination)?;
        let asset = self
            .ledger()
            .asset(&request.asset)
            .await?
            .ok_or_else(|| Error::UnknownAsset(request.asset.clone()))?;
        if asset.chain != request.chain {
            return Err(Error::InvalidRequest(format!(
                "chain: asset `{}` is on {}, not {}",
                asset.code, asset.chain, request.chain
            )));
        }
        let policy = *self.policy().asset(&asset.code).ok_or_else(|| {
            Error::InvalidRequest(format!(
                "asset: withdrawals of `{}` are not enabled",
                asset.code
            ))
        })?;
        let held = request
            .amount
            .checked_add(policy.fee)
            .ok_or_else(|| Error::InvalidAmount("amount: too large".into()))?;
        let auto_approved = request.amount <= policy.approval_threshold;
        let hash = request_hash(request);
        let key_lock = format!(
            "withdrawal-key:{}:{}:{}",
            key.scope.len(),
            key.scope,
            key.key
        );
        let limit_lock = format!("withdrawal-limit:{}:{}", request.user, asset.code);
        // Only a cache warm-up: an unknown user fails it here and is
        // refused by name inside the transaction.
        if let Err(err) = self
            .ledger()
            .warm_hold_accounts(request.user, &asset.code)
            .await
        {
            tracing::debug!(error = %err, "hold accounts not resolved ahead");
        }

        self.transaction(|mut tx| {
            let (key_lock, limit_lock, hash) = (&key_lock, &limit_lock, &hash);
            async move {
                lock_name(&mut tx, key_lock).await?;
                if let Some(existing) = under_key(&mut tx, key, hash).await? {
                    return Ok((tx, (existing, false)));
                }
                // The sum is read in a statement after the lock, so it
                // sees every withdrawal committed before the lock was had.
                lock_user_and_limit(&mut tx, request.user, limit_lock).await?;
                let (today, id) =
                    withdrawn_today_and_next_id(&mut tx, request.user, &request.asset).await?;
                match today.checked_add(request.amount) {
                    Some(total) if total <= policy.daily_limit => {}
                    _ => {
                        return Err(Error::DailyLimitExceeded {
                            asset: request.asset.clone(),
                            limit: policy.daily_limit,
                        });
                    }
                }
                let hold = self
                    .ledger()
                    .place_hold_in(
                        &mut tx,
                        &PlaceHold {
                            owner: request.user,
                            asset: request.asset.clone(),
                            amount: held,
                            kind: EntryKind::WithdrawalHold,
                            reference: format!("withdrawal:{id}:hold"),
                            metadata: serde_json::json!({
                                "withdrawal_id": id,
                                "amount": request.amount,
                                "fee": policy.fee,
                                "destination": request.destination,
                            }),
                        },
                    )
                    .await?;
                let status = if auto_approved {
                    WithdrawalStatus::Approved
                } else {
                    WithdrawalStatus::Requested
                };
                let row: WithdrawalRow = sqlx::query_as(&format!(
                    "INSERT INTO withdrawals (id, user_id, asset, chain, amount, fee, destination, status, hold_id,
                         idempotency_scope, idempotency_key, request_hash, requested_by, approved_at)
                     OVERRIDING SYSTEM VALUE
                     VALUES ($1, $2, $3, $4, $5::numeric, $6::numeric, $7, $8, $9, $10, $11, $12, $13,
                             CASE WHEN $14 THEN now() END)
                     RETURNING {WITHDRAWAL_COLUMNS}"
                ))
                .bind(id)
                .bind(request.user)
                .bind(&request.asset)
                .bind(request.chain.as_str())
                .bind(request.amount.to_string())
                .bind(policy.fee.to_string())
                .bind(&request.destination)
                .bind(status)
                .bind(hold.id)
                .bind(&key.scope)
                .bind(&key.key)
                .bind(&hash[..])
                .bind(request.requested_by)
                .bind(auto_approved)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| person_error(e, request.requested_by))?;
                Ok((tx, (row.into_withdrawal()?, true)))
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use chains::Chain;
    use uuid::Uuid;

    use super::*;

    fn request() -> NewWithdrawal {
        NewWithdrawal {
            user: Uuid::from_u128(1),
            asset: "ETH".into(),
            chain: Chain::Ethereum,
            amount: Amount::from_u64(10),
            destination: "0xabc".into(),
            requested_by: Uuid::from_u128(1),
        }
    }

    #[test]
    fn every_field_changes_the_request_hash() {
        let base = request_hash(&request());
        assert_eq!(base, request_hash(&request()));
        let changes: [fn(&mut NewWithdrawal); 6] = [
            |r| r.user = Uuid::from_u128(2),
            |r| r.asset = "USDC".into(),
            |r| r.chain = Chain::Solana,
            |r| r.amount = Amount::from_u64(11),
            |r| r.destination = "0xabd".into(),
            |r| r.requested_by = Uuid::from_u128(3),
        ];
        for change in changes {
            let mut changed = request();
            change(&mut changed);
            assert_ne!(request_hash(&changed), base, "{changed:?}");
        }
        // Fields are length-prefixed: moving a byte between two is a change.
        let (mut a, mut b) = (request(), request());
        a.asset = "ET".into();
        a.destination = "H0xabc".into();
        b.destination = "0xabc".into();
        assert_ne!(request_hash(&a), request_hash(&b));
    }

    #[test]
    fn destinations_are_printable_and_bounded() {
        assert!(validate_destination("0x1111111111111111111111111111111111111111").is_ok());
        for bad in ["", " 0x1", "0x1\n", "a\u{0}b", "a".repeat(201).as_str()] {
            assert!(validate_destination(bad).is_err(), "{bad:?}");
        }
    }
}
