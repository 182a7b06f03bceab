//! Recording a signed attempt: its raw bytes and hash are stored and the
//! withdrawal moves to signed in one transaction, before anything is
//! sent. A process that dies after this commit finds the bytes and sends
//! them again; one that dies before it sent nothing. (Storing the hash
//! after the send, as Peatio's withdraw worker did, is what lets a retry
//! after a timeout pay twice.)

use sqlx::PgConnection;

use super::rows::{ATTEMPT_COLUMNS, AttemptRow, WITHDRAWAL_COLUMNS, WithdrawalRow, lock_payout};
use super::{Attempt, Payout, SignedAttempt, WithdrawalStatus, Withdrawals, count_transition};
use crate::{Error, Result};

fn invalid(message: &str) -> Error {
    Error::InvalidRequest(message.to_owned())
}

/// The attempt's fields, and those its chain requires.
pub(super) fn validate_attempt(chain: chains::Chain, attempt: &SignedAttempt) -> Result<()> {
    if attempt.tx_hash.is_empty() || attempt.tx_hash.len() > 200 {
        return Err(invalid("tx_hash: must be 1 to 200 bytes"));
    }
    if attempt.raw_tx.is_empty() {
        return Err(invalid("raw_tx: must not be empty"));
    }
    if chain == chains::Chain::Ethereum {
        let (Some(max_fee), Some(tip), Some(gas)) = (
            attempt.max_fee_per_gas,
            attempt.max_priority_fee_per_gas,
            attempt.gas_limit,
        ) else {
            return Err(invalid(
                "max_fee_per_gas, max_priority_fee_per_gas and gas_limit: required on ethereum",
            ));
        };
        if tip > max_fee {
            return Err(invalid(
                "max_priority_fee_per_gas: must not exceed max_fee_per_gas",
            ));
        }
        if gas == 0 || i64::try_from(gas).is_err() {
            return Err(invalid("gas_limit: must be positive and fit 63 bits"));
        }
    }
    if attempt
        .valid_until_height
        .is_some_and(|h| i64::try_from(h).is_err())
    {
        return Err(invalid("valid_until_height: too large"));
    }
    Ok(())
}

impl Withdrawals {
    /// Stores a reserved row's first signed attempt and moves it to
    /// signed, in one transaction, before the caller sends anything.
    /// Recording the same attempt again (a retry whose response was lost)
    /// returns it; any other attempt on a row that is not reserved is
    /// refused.
    pub async fn record_signed(
        &self,
        id: i64,
        attempt: &SignedAttempt,
    ) -> Result<(Payout, Attempt)> {
        let (recorded, created) = self
            .transaction(|mut tx| async move {
                let payout = lock_payout(&mut tx, id).await?;
                validate_attempt(payout.chain, attempt)?;
                if payout.status == WithdrawalStatus::Signed
                    && let Some(current) = payout.current_attempt_id
                {
                    let stored: AttemptRow = sqlx::query_as(&format!(
                        "SELECT {ATTEMPT_COLUMNS} FROM withdrawal_attempts WHERE id = $1"
                    ))
                    .bind(current)
                    .fetch_one(&mut *tx)
                    .await?;
                    let stored = stored.into_attempt()?;
                    if stored.tx_hash == attempt.tx_hash && stored.raw_tx == attempt.raw_tx {
                        return Ok((tx, ((payout, stored), false)));
                    }
                }
                if payout.status != WithdrawalStatus::Reserved {
                    return Err(Error::WithdrawalState {
                        id,
                        status: payout.status,
                        action: "signed",
                    });
                }
                let stored = insert_attempt(&mut tx, id, payout.chain, attempt).await?;
                let row: WithdrawalRow = sqlx::query_as(&format!(
                    "UPDATE withdrawals SET status = 'signed', current_attempt_id = $2, signed_at = now(),
                         waiting_reason = NULL, updated_at = now()
                     WHERE id = $1 RETURNING {WITHDRAWAL_COLUMNS}"
                ))
                .bind(id)
                .bind(stored.id)
                .fetch_one(&mut *tx)
                .await?;
                Ok((tx, ((row.into_payout()?, stored), true)))
            })
            .await?;
        if created {
            count_transition(WithdrawalStatus::Signed);
        }
        Ok(recorded)
    }
}

impl Withdrawals {
    /// [`Self::record_signed`] for many reserved rows in one transaction
    /// (one commit for a round's signatures); a row that is no longer
    /// reserved is skipped. Returns how many were recorded. Any error
    /// rolls all of them back, and the caller records them one by one.
    pub async fn record_signed_many(&self, signed: &[(i64, SignedAttempt)]) -> Result<usize> {
        if signed.is_empty() {
            return Ok(0);
        }
        let recorded = self
            .transaction(|mut tx| async move {
                let mut recorded = 0;
                for (id, attempt) in signed {
                    let payout = lock_payout(&mut tx, *id).await?;
                    validate_attempt(payout.chain, attempt)?;
                    if payout.status != WithdrawalStatus::Reserved {
                        continue;
                    }
                    let stored = insert_attempt(&mut tx, *id, payout.chain, attempt).await?;
                    sqlx::query(
                        "UPDATE withdrawals SET status = 'signed', current_attempt_id = $2, signed_at = now(),
                             waiting_reason = NULL, updated_at = now()
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(stored.id)
                    .execute(&mut *tx)
                    .await?;
                    recorded += 1;
                }
                Ok((tx, recorded))
            })
            .await?;
        for _ in 0..recorded {
            count_transition(WithdrawalStatus::Signed);
        }
        Ok(recorded)
    }
}

/// Inserts an attempt of row `id`, under the row's nonce reservation when
/// it has one.
pub(super) async fn insert_attempt(
    tx: &mut PgConnection,
    id: i64,
    chain: chains::Chain,
    attempt: &SignedAttempt,
) -> Result<Attempt> {
    let amount = |a: Option<crate::ledger::Amount>| a.map(|a| a.to_string());
    let stored: AttemptRow = sqlx::query_as(&format!(
        "INSERT INTO withdrawal_attempts (withdrawal_id, chain, tx_hash, raw_tx, nonce_reservation_id,
             fee_limit, max_fee_per_gas, max_priority_fee_per_gas, gas_limit, valid_until_height)
         VALUES ($1, $2, $3, $4,
                 (SELECT id FROM eth_nonce_reservations WHERE withdrawal_id = $1),
                 $5::numeric, $6::numeric, $7::numeric, $8, $9)
         RETURNING {ATTEMPT_COLUMNS}"
    ))
    .bind(id)
    .bind(chain.as_str())
    .bind(&attempt.tx_hash)
    .bind(&attempt.raw_tx)
    .bind(attempt.fee_limit.to_string())
    .bind(amount(attempt.max_fee_per_gas))
    .bind(amount(attempt.max_priority_fee_per_gas))
    .bind(attempt.gas_limit.map(|g| g as i64))
    .bind(attempt.valid_until_height.map(|h| h as i64))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("withdrawal_attempts_hash_unique") => {
            invalid("tx_hash: already recorded for another attempt")
        }
        _ => Error::Database(e),
    })?;
    stored.into_attempt()
}
