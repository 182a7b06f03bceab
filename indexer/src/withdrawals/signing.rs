//! Recording a signed attempt: its raw bytes and hash are stored and the
//! withdrawal moves to signed in one transaction, before anything is
//! sent. A process that dies after this commit finds the bytes and sends
//! them again; one that dies before it sent nothing. (Storing the hash
//! after the send, as Peatio's withdraw worker did, is what lets a retry
//! after a timeout pay twice.)

use sqlx::PgConnection;

use super::claim::to_i64;
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
                let ids: Vec<i64> = signed.iter().map(|(id, _)| *id).collect();
                let rows: Vec<WithdrawalRow> = sqlx::query_as(&format!(
                    "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE id = ANY($1) ORDER BY id FOR UPDATE"
                ))
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
                let mut payouts = std::collections::HashMap::with_capacity(rows.len());
                for row in rows {
                    let payout = row.into_payout()?;
                    payouts.insert(payout.id, payout);
                }
                let mut fresh = Vec::with_capacity(signed.len());
                for (id, attempt) in signed {
                    let payout = payouts.get(id).ok_or(Error::WithdrawalNotFound(*id))?;
                    validate_attempt(payout.chain, attempt)?;
                    // A row that moved on since it was read is left as it is.
                    if payout.status == WithdrawalStatus::Reserved {
                        fresh.push((payout.chain, *id, attempt));
                    }
                }
                let attempts = insert_attempts(&mut tx, &fresh).await?;
                let (rows, attempt_ids): (Vec<i64>, Vec<i64>) =
                    attempts.iter().map(|a| (a.withdrawal_id, a.id)).unzip();
                sqlx::query(
                    "UPDATE withdrawals w SET status = 'signed', current_attempt_id = s.attempt_id,
                         signed_at = now(), waiting_reason = NULL, updated_at = now()
                     FROM unnest($1::bigint[], $2::bigint[]) AS s(id, attempt_id)
                     WHERE w.id = s.id",
                )
                .bind(&rows)
                .bind(&attempt_ids)
                .execute(&mut *tx)
                .await?;
                Ok((tx, attempts.len()))
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
    insert_attempts(tx, &[(chain, id, attempt)])
        .await?
        .pop()
        .ok_or_else(|| Error::Corrupt(format!("attempt of row {id} not inserted")))
}

/// [`insert_attempt`] for each `(chain, row, attempt)`, in one statement;
/// the stored attempts in the same order.
async fn insert_attempts(
    tx: &mut PgConnection,
    attempts: &[(chains::Chain, i64, &SignedAttempt)],
) -> Result<Vec<Attempt>> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let amount = |a: Option<crate::ledger::Amount>| a.map(|a| a.to_string());
    let mut columns = AttemptColumns::default();
    for (chain, id, attempt) in attempts {
        columns.ids.push(*id);
        columns.chains.push(chain.as_str());
        columns.hashes.push(attempt.tx_hash.as_str());
        columns.raws.push(attempt.raw_tx.as_slice());
        columns.fee_limits.push(attempt.fee_limit.to_string());
        columns.max_fees.push(amount(attempt.max_fee_per_gas));
        columns.tips.push(amount(attempt.max_priority_fee_per_gas));
        columns.gas_limits.push(
            attempt
                .gas_limit
                .map(|g| to_i64(g, "gas_limit"))
                .transpose()?,
        );
        columns.valid_until.push(
            attempt
                .valid_until_height
                .map(|h| to_i64(h, "valid_until_height"))
                .transpose()?,
        );
    }
    let rows: Vec<AttemptRow> = sqlx::query_as(&format!(
        "INSERT INTO withdrawal_attempts (withdrawal_id, chain, tx_hash, raw_tx, nonce_reservation_id,
             fee_limit, max_fee_per_gas, max_priority_fee_per_gas, gas_limit, valid_until_height)
         SELECT a.id, a.chain, a.hash, a.raw, r.id, a.fee_limit::numeric, a.max_fee::numeric,
                a.tip::numeric, a.gas, a.valid_until
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[],
                     $7::text[], $8::bigint[], $9::bigint[])
              WITH ORDINALITY AS a(id, chain, hash, raw, fee_limit, max_fee, tip, gas, valid_until, n)
         LEFT JOIN eth_nonce_reservations r ON r.withdrawal_id = a.id
         ORDER BY a.n
         RETURNING {ATTEMPT_COLUMNS}"
    ))
    .bind(&columns.ids)
    .bind(&columns.chains)
    .bind(&columns.hashes)
    .bind(&columns.raws)
    .bind(&columns.fee_limits)
    .bind(&columns.max_fees)
    .bind(&columns.tips)
    .bind(&columns.gas_limits)
    .bind(&columns.valid_until)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("withdrawal_attempts_hash_unique") => {
            invalid("tx_hash: already recorded for another attempt")
        }
        _ => Error::Database(e),
    })?;
    let mut stored = rows
        .into_iter()
        .map(AttemptRow::into_attempt)
        .collect::<Result<Vec<_>>>()?;
    // RETURNING keeps no promised order; the callers' is by row.
    let order: std::collections::HashMap<i64, usize> = attempts
        .iter()
        .enumerate()
        .map(|(n, (_, id, _))| (*id, n))
        .collect();
    stored.sort_by_key(|a| order.get(&a.withdrawal_id).copied());
    if stored.len() != attempts.len() {
        return Err(Error::Corrupt(format!(
            "inserted {} of {} attempts",
            stored.len(),
            attempts.len()
        )));
    }
    Ok(stored)
}

/// [`insert_attempts`]' parameters, one array per column.
#[derive(Default)]
struct AttemptColumns<'a> {
    ids: Vec<i64>,
    chains: Vec<&'a str>,
    hashes: Vec<&'a str>,
    raws: Vec<&'a [u8]>,
    fee_limits: Vec<String>,
    max_fees: Vec<Option<String>>,
    tips: Vec<Option<String>>,
    gas_limits: Vec<Option<i64>>,
    valid_until: Vec<Option<i64>>,
}
