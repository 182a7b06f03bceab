//! Reading withdrawals, attempts and reservations: the row types, one
//! locked or plain select of each, and the keyset-paged list.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Attempt, ManualResolution, NoncePurpose, NonceReservation, Payout, PayoutKind, Withdrawal,
    WithdrawalFilter, WithdrawalPage, WithdrawalStatus, Withdrawals,
};
use crate::ledger::Amount;
use crate::{Error, Result};

/// The largest page [`Withdrawals::list`] returns.
pub const MAX_PAGE_SIZE: u32 = 500;

pub(super) const WITHDRAWAL_COLUMNS: &str = "id, user_id, asset, chain, amount::text AS amount, fee::text AS fee, \
     destination, status, hold_id, requested_by, approved_by, closed_by, reason, from_address, \
     current_attempt_id, requested_at, approved_at, reserved_at, signed_at, finished_at, updated_at, request_hash, \
     kind, from_key_index, waiting_reason, send_rejections, resolution, resolution_by";

#[derive(sqlx::FromRow)]
pub(super) struct WithdrawalRow {
    pub(super) id: i64,
    user_id: Option<Uuid>,
    asset: String,
    chain: String,
    amount: String,
    fee: String,
    destination: String,
    status: WithdrawalStatus,
    hold_id: Option<i64>,
    requested_by: Option<Uuid>,
    approved_by: Option<Uuid>,
    closed_by: Option<Uuid>,
    reason: Option<String>,
    from_address: Option<String>,
    current_attempt_id: Option<i64>,
    requested_at: DateTime<Utc>,
    approved_at: Option<DateTime<Utc>>,
    reserved_at: Option<DateTime<Utc>>,
    signed_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    pub(super) request_hash: Option<Vec<u8>>,
    kind: PayoutKind,
    from_key_index: Option<i64>,
    waiting_reason: Option<String>,
    send_rejections: i32,
    resolution: Option<ManualResolution>,
    resolution_by: Option<Uuid>,
}

pub(crate) fn stored_amount(text: &str) -> Result<Amount> {
    Amount::parse(text).map_err(|e| Error::Corrupt(format!("stored amount: {e}")))
}

fn stored_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::Corrupt(format!("stored {what} {value}")))
}

impl WithdrawalRow {
    pub(super) fn into_payout(self) -> Result<Payout> {
        Ok(Payout {
            id: self.id,
            kind: self.kind,
            chain: self.chain.parse()?,
            amount: stored_amount(&self.amount)?,
            fee: stored_amount(&self.fee)?,
            asset: self.asset,
            destination: self.destination,
            status: self.status,
            user: self.user_id,
            hold_id: self.hold_id,
            from_address: self.from_address,
            from_key_index: self
                .from_key_index
                .map(|i| {
                    u32::try_from(i).map_err(|_| Error::Corrupt(format!("stored key index {i}")))
                })
                .transpose()?,
            current_attempt_id: self.current_attempt_id,
            waiting_reason: self.waiting_reason,
            send_rejections: u32::try_from(self.send_rejections).unwrap_or(u32::MAX),
            requested_at: self.requested_at,
            resolution: self.resolution,
        })
    }

    pub(super) fn into_withdrawal(self) -> Result<Withdrawal> {
        let id = self.id;
        let (Some(user), Some(hold_id), Some(requested_by), PayoutKind::Withdrawal) =
            (self.user_id, self.hold_id, self.requested_by, self.kind)
        else {
            return Err(Error::WithdrawalNotFound(id));
        };
        Ok(Withdrawal {
            id: self.id,
            user,
            chain: self.chain.parse()?,
            amount: stored_amount(&self.amount)?,
            fee: stored_amount(&self.fee)?,
            asset: self.asset,
            destination: self.destination,
            status: self.status,
            hold_id,
            requested_by,
            approved_by: self.approved_by,
            closed_by: self.closed_by,
            reason: self.reason,
            from_address: self.from_address,
            current_attempt_id: self.current_attempt_id,
            waiting_reason: self.waiting_reason,
            requested_at: self.requested_at,
            approved_at: self.approved_at,
            reserved_at: self.reserved_at,
            signed_at: self.signed_at,
            finished_at: self.finished_at,
            updated_at: self.updated_at,
            resolution: self.resolution,
            resolution_by: self.resolution_by,
        })
    }
}

/// One withdrawal; with `lock`, its row stays locked for the rest of the
/// caller's transaction: the gate every transition passes.
pub(super) async fn select_withdrawal(
    conn: &mut PgConnection,
    id: i64,
    lock: bool,
) -> Result<Option<WithdrawalRow>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    Ok(sqlx::query_as(&format!(
        "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Any row of the pipeline, locked for the rest of the caller's transaction.
pub(super) async fn lock_payout(conn: &mut PgConnection, id: i64) -> Result<Payout> {
    select_withdrawal(conn, id, true)
        .await?
        .ok_or(Error::WithdrawalNotFound(id))?
        .into_payout()
}

/// [`select_withdrawal`] with its row lock, refusing an unknown id (and
/// rows that are Coffer's own transfers).
pub(super) async fn lock_withdrawal(conn: &mut PgConnection, id: i64) -> Result<Withdrawal> {
    select_withdrawal(conn, id, true)
        .await?
        .ok_or(Error::WithdrawalNotFound(id))?
        .into_withdrawal()
}

pub(super) const ATTEMPT_COLUMNS: &str = "id, withdrawal_id, chain, tx_hash, raw_tx, nonce_reservation_id, \
     fee_limit::text AS fee_limit, max_fee_per_gas::text AS max_fee_per_gas, \
     max_priority_fee_per_gas::text AS max_priority_fee_per_gas, gas_limit, valid_until_height, \
     fee_paid::text AS fee_paid, created_at, broadcast_at, last_broadcast_height, broadcast_count, \
     landed_block_hash, landed_block_height, first_broadcast_height, landed_success";

#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow {
    id: i64,
    withdrawal_id: i64,
    chain: String,
    tx_hash: String,
    raw_tx: Vec<u8>,
    nonce_reservation_id: Option<i64>,
    fee_limit: String,
    max_fee_per_gas: Option<String>,
    max_priority_fee_per_gas: Option<String>,
    gas_limit: Option<i64>,
    valid_until_height: Option<i64>,
    fee_paid: Option<String>,
    created_at: DateTime<Utc>,
    broadcast_at: Option<DateTime<Utc>>,
    last_broadcast_height: Option<i64>,
    broadcast_count: i32,
    landed_block_hash: Option<String>,
    landed_block_height: Option<i64>,
    first_broadcast_height: Option<i64>,
    landed_success: Option<bool>,
}

impl AttemptRow {
    pub(super) fn into_attempt(self) -> Result<Attempt> {
        let amount = |text: Option<String>| text.as_deref().map(stored_amount).transpose();
        Ok(Attempt {
            id: self.id,
            withdrawal_id: self.withdrawal_id,
            chain: self.chain.parse()?,
            tx_hash: self.tx_hash,
            raw_tx: self.raw_tx,
            nonce_reservation_id: self.nonce_reservation_id,
            fee_limit: stored_amount(&self.fee_limit)?,
            max_fee_per_gas: amount(self.max_fee_per_gas)?,
            max_priority_fee_per_gas: amount(self.max_priority_fee_per_gas)?,
            gas_limit: self
                .gas_limit
                .map(|v| stored_u64(v, "gas limit"))
                .transpose()?,
            valid_until_height: self
                .valid_until_height
                .map(|v| stored_u64(v, "height"))
                .transpose()?,
            fee_paid: amount(self.fee_paid)?,
            created_at: self.created_at,
            broadcast_at: self.broadcast_at,
            last_broadcast_height: self
                .last_broadcast_height
                .map(|v| stored_u64(v, "height"))
                .transpose()?,
            broadcast_count: u32::try_from(self.broadcast_count).map_err(|_| {
                Error::Corrupt(format!("stored broadcast count {}", self.broadcast_count))
            })?,
            first_broadcast_height: self
                .first_broadcast_height
                .map(|v| stored_u64(v, "height"))
                .transpose()?,
            landed_success: self.landed_success,
            landed_block_hash: self.landed_block_hash,
            landed_block_height: self
                .landed_block_height
                .map(|v| stored_u64(v, "height"))
                .transpose()?,
        })
    }
}

pub(super) const RESERVATION_COLUMNS: &str =
    "id, from_address, nonce, withdrawal_id, purpose, filler_reason, created_at";

pub(super) type ReservationRow = (
    i64,
    String,
    i64,
    i64,
    NoncePurpose,
    Option<String>,
    DateTime<Utc>,
);

pub(super) fn to_reservation(row: ReservationRow) -> Result<NonceReservation> {
    let (id, from_address, nonce, withdrawal_id, purpose, filler_reason, created_at) = row;
    Ok(NonceReservation {
        id,
        from_address,
        nonce: stored_u64(nonce, "nonce")?,
        withdrawal_id,
        purpose,
        filler_reason,
        created_at,
    })
}

impl Withdrawals {
    pub async fn get(&self, id: i64) -> Result<Option<Withdrawal>> {
        let mut conn = self.pool().acquire().await?;
        select_withdrawal(&mut conn, id, false)
            .await?
            .filter(|row| row.kind == PayoutKind::Withdrawal)
            .map(WithdrawalRow::into_withdrawal)
            .transpose()
    }

    /// Any row of the pipeline, Coffer's own transfers included.
    pub async fn payout(&self, id: i64) -> Result<Option<Payout>> {
        let mut conn = self.pool().acquire().await?;
        select_withdrawal(&mut conn, id, false)
            .await?
            .map(WithdrawalRow::into_payout)
            .transpose()
    }

    /// Withdrawals newest first, optionally of one user or in one status;
    /// `cursor` (a previous page's `next_cursor`) continues strictly below.
    pub async fn list(
        &self,
        filter: &WithdrawalFilter,
        page_size: u32,
        cursor: Option<i64>,
    ) -> Result<WithdrawalPage> {
        if page_size == 0 || page_size > MAX_PAGE_SIZE {
            return Err(Error::InvalidRequest(format!(
                "page_size: must be 1 to {MAX_PAGE_SIZE}"
            )));
        }
        let rows: Vec<WithdrawalRow> = sqlx::query_as(&format!(
            "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals
             WHERE kind = 'withdrawal' AND ($1::uuid IS NULL OR user_id = $1)
               AND ($2::withdrawal_status IS NULL OR status = $2)
               AND ($3::bigint IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(filter.user)
        .bind(filter.status)
        .bind(cursor)
        .bind(i64::from(page_size) + 1)
        .fetch_all(self.pool())
        .await?;
        let mut items = rows
            .into_iter()
            .map(WithdrawalRow::into_withdrawal)
            .collect::<Result<Vec<_>>>()?;
        let more = items.len() > page_size as usize;
        items.truncate(page_size as usize);
        let next_cursor = items.last().filter(|_| more).map(|w| w.id);
        Ok(WithdrawalPage { items, next_cursor })
    }

    /// Every attempt of a withdrawal, oldest first.
    pub async fn attempts(&self, withdrawal_id: i64) -> Result<Vec<Attempt>> {
        let rows: Vec<AttemptRow> = sqlx::query_as(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM withdrawal_attempts WHERE withdrawal_id = $1 ORDER BY id"
        ))
        .bind(withdrawal_id)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(AttemptRow::into_attempt).collect()
    }

    /// The nonce reserved for a withdrawal, if any.
    pub async fn nonce_reservation(&self, withdrawal_id: i64) -> Result<Option<NonceReservation>> {
        let row: Option<ReservationRow> = sqlx::query_as(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM eth_nonce_reservations WHERE withdrawal_id = $1"
        ))
        .bind(withdrawal_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(to_reservation).transpose()
    }

    /// The nonce reservations of the given rows, by row.
    pub async fn nonce_reservations_of(
        &self,
        withdrawal_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, NonceReservation>> {
        let rows: Vec<ReservationRow> = sqlx::query_as(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM eth_nonce_reservations WHERE withdrawal_id = ANY($1)"
        ))
        .bind(withdrawal_ids)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|row| to_reservation(row).map(|r| (r.withdrawal_id, r)))
            .collect()
    }

    /// Reserved nonces of `from_address` whose withdrawal was cancelled and
    /// that a zero-value self-transfer must use, lowest first.
    pub async fn nonces_to_fill(&self, from_address: &str) -> Result<Vec<NonceReservation>> {
        let rows: Vec<ReservationRow> = sqlx::query_as(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM eth_nonce_reservations
             WHERE chain = 'ethereum' AND from_address = $1 AND purpose = 'filler' ORDER BY nonce"
        ))
        .bind(from_address.to_ascii_lowercase())
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(to_reservation).collect()
    }
}
