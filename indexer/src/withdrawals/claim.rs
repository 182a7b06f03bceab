//! The send loop's transitions, on a row a worker has claimed.
//!
//! A worker claims one row (`FOR UPDATE SKIP LOCKED`: a row another worker
//! holds is skipped, never waited for) and keeps its transaction open
//! while it talks to the node, then records what happened and commits.
//! The lock is the lease: two workers never act on one row at once, and a
//! worker that dies mid-call drops its lock with its connection, leaving
//! the row as it was before the claim. Nothing here is ever the first
//! record of signed bytes: those are committed before any claim that
//! sends them ([`Withdrawals::record_signed`],
//! [`Claimed::record_replacement`]), so a send whose outcome is lost is
//! only ever followed by a send of the same bytes.

use sqlx::PgConnection;

use super::rows::{
    ATTEMPT_COLUMNS, AttemptRow, WITHDRAWAL_COLUMNS, WithdrawalRow, select_withdrawal,
};
use super::{
    Attempt, ManualResolution, Payout, PayoutKind, SignedAttempt, Tx, WithdrawalStatus,
    Withdrawals, count_transition,
};
use crate::ledger::{
    AccountPurpose, AccountRef, Amount, EntryKind, HoldFinish, HoldStatus, Leg, NewEntry,
    ReleaseHold,
};
use crate::{Error, Result};

/// A replacement raises both EIP-1559 fee fields by at least this many
/// percent over the attempt it replaces (geth's and reth's default price
/// bump; a smaller raise is refused as underpriced).
pub const REPLACEMENT_BUMP_PERCENT: u64 = 10;

/// The least a replacement may offer for `previous`: `previous` raised by
/// [`REPLACEMENT_BUMP_PERCENT`], rounded up, and at least one more.
pub fn bumped(previous: Amount) -> Amount {
    let raised = previous
        .as_u256()
        .saturating_mul(alloy_primitives::U256::from(100 + REPLACEMENT_BUMP_PERCENT))
        .div_ceil(alloy_primitives::U256::from(100));
    let at_least_one_more = previous
        .as_u256()
        .saturating_add(alloy_primitives::U256::from(1));
    Amount::from_u256(raised.max(at_least_one_more))
}

/// A row whose bytes a node accepted for the first time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstSend {
    pub id: i64,
    pub kind: PayoutKind,
    pub requested_at: chrono::DateTime<chrono::Utc>,
}

/// What a landed attempt left on chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Landing {
    pub attempt_id: i64,
    pub block_hash: String,
    pub block_height: u64,
    /// Receipt status 1.
    pub success: bool,
    /// Network fee paid, in the chain's native base units.
    pub fee_paid: Amount,
}

/// A row one worker holds until it commits or drops it (drop rolls back).
pub struct Claimed {
    tx: Tx,
    store: Withdrawals,
    pub payout: Payout,
    /// Every attempt, oldest first; the current one is last.
    pub attempts: Vec<Attempt>,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("payout", &self.payout)
            .finish_non_exhaustive()
    }
}

impl Withdrawals {
    /// Claims row `id` when it is in one of `statuses` and no other worker
    /// holds it; `None` otherwise.
    pub async fn claim(&self, id: i64, statuses: &[WithdrawalStatus]) -> Result<Option<Claimed>> {
        let mut tx = self.pool().begin().await?;
        let row: Option<WithdrawalRow> = sqlx::query_as(&format!(
            "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE id = $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let payout = row.into_payout()?;
        if !statuses.contains(&payout.status) {
            return Ok(None);
        }
        let attempts = attempts_in(&mut tx, id).await?;
        Ok(Some(Claimed {
            tx,
            store: self.clone(),
            payout,
            attempts,
        }))
    }

    /// The rows of `chain` the send loop works on (reserved through
    /// confirming, and manual ones, whose receipts it keeps tracking),
    /// oldest first, read without locks; `after` continues a previous page.
    pub async fn in_flight(
        &self,
        chain: chains::Chain,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Payout>> {
        let rows: Vec<WithdrawalRow> = sqlx::query_as(&format!(
            "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals
             WHERE chain = $1 AND status IN ('reserved', 'signed', 'broadcast', 'confirming', 'manual') AND id > $2
             ORDER BY id LIMIT $3"
        ))
        .bind(chain.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(WithdrawalRow::into_payout).collect()
    }

    /// A node accepted (or already had) each `(withdrawal, attempt)` sent
    /// at chain height `height`: signed → broadcast, or another send of a
    /// broadcast one, all in one transaction. A row that moved on meanwhile
    /// (landed, replaced, ended) is left as it is. Returns the rows that
    /// were sent for the first time.
    pub async fn record_sent_many(
        &self,
        sent: &[(i64, i64)],
        height: u64,
    ) -> Result<Vec<FirstSend>> {
        if sent.is_empty() {
            return Ok(Vec::new());
        }
        let height = to_i64(height, "height")?;
        let (ids, attempts): (Vec<i64>, Vec<i64>) = sent.iter().copied().unzip();
        let (ids, attempts) = (&ids, &attempts);
        let first: Vec<FirstSend> = self
            .transaction(|mut tx| async move {
                // Locked in id order, so two batches never deadlock.
                let rows: Vec<(i64, WithdrawalStatus, PayoutKind, chrono::DateTime<chrono::Utc>)> =
                    sqlx::query_as(
                        "SELECT w.id, w.status, w.kind, w.requested_at
                         FROM withdrawals w
                         JOIN unnest($1::bigint[], $2::bigint[]) AS s (withdrawal_id, attempt_id)
                           ON s.withdrawal_id = w.id AND s.attempt_id = w.current_attempt_id
                         WHERE w.status IN ('signed', 'broadcast')
                         ORDER BY w.id
                         FOR UPDATE OF w",
                    )
                    .bind(ids)
                    .bind(attempts)
                    .fetch_all(&mut *tx)
                    .await?;
                let locked: Vec<i64> = rows.iter().map(|r| r.0).collect();
                sqlx::query(
                    "UPDATE withdrawal_attempts a SET broadcast_count = a.broadcast_count + 1,
                         broadcast_at = coalesce(a.broadcast_at, now()),
                         first_broadcast_height = coalesce(a.first_broadcast_height, $2),
                         last_broadcast_height = $2
                     FROM withdrawals w
                     WHERE w.id = ANY($1) AND a.id = w.current_attempt_id",
                )
                .bind(&locked)
                .bind(height)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE withdrawals SET status = 'broadcast', send_rejections = 0, waiting_reason = NULL,
                         updated_at = now()
                     WHERE id = ANY($1)",
                )
                .bind(&locked)
                .execute(&mut *tx)
                .await?;
                let first = rows
                    .into_iter()
                    .filter(|(_, status, _, _)| *status == WithdrawalStatus::Signed)
                    .map(|(id, _, kind, requested_at)| FirstSend {
                        id,
                        kind,
                        requested_at,
                    })
                    .collect();
                Ok((tx, first))
            })
            .await?;
        for _ in &first {
            count_transition(WithdrawalStatus::Broadcast);
        }
        Ok(first)
    }

    /// Every attempt of the given rows, oldest first.
    pub async fn attempts_of(&self, ids: &[i64]) -> Result<Vec<Attempt>> {
        let rows: Vec<AttemptRow> = sqlx::query_as(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM withdrawal_attempts WHERE withdrawal_id = ANY($1) ORDER BY id"
        ))
        .bind(ids)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(AttemptRow::into_attempt).collect()
    }
}

impl Withdrawals {
    /// A reserved row whose transfer the chain refuses before anything is
    /// signed (its gas estimate fails): → failed, its hold released, its
    /// nonce handed to a zero-value filler so no gap is left, in one
    /// transaction.
    pub async fn fail_unsendable(&self, id: i64, reason: &str) -> Result<Payout> {
        let failed = self
            .transaction(|mut tx| async move {
                let payout = super::rows::lock_payout(&mut tx, id).await?;
                if payout.status != WithdrawalStatus::Reserved || payout.current_attempt_id.is_some() {
                    return Err(Error::WithdrawalState {
                        id,
                        status: payout.status,
                        action: "failed before signing",
                    });
                }
                super::review::mark_for_filler(&mut tx, id).await?;
                if let Some(hold_id) = payout.hold_id {
                    self.ledger()
                        .release_hold_in(
                            &mut tx,
                            &ReleaseHold {
                                hold_id,
                                kind: EntryKind::WithdrawalRelease,
                                reference: format!("withdrawal:{id}:release"),
                                metadata: serde_json::json!({ "withdrawal_id": id, "status": "failed" }),
                            },
                        )
                        .await?;
                }
                let row = sqlx::query_as::<_, WithdrawalRow>(&format!(
                    "UPDATE withdrawals SET status = 'failed', reason = left($2, 1000), finished_at = now(),
                         waiting_reason = NULL, updated_at = now()
                     WHERE id = $1 RETURNING {WITHDRAWAL_COLUMNS}"
                ))
                .bind(id)
                .bind(reason)
                .fetch_one(&mut *tx)
                .await?;
                Ok((tx, row.into_payout()?))
            })
            .await?;
        count_transition(WithdrawalStatus::Failed);
        metrics::counter!(crate::metrics::WITHDRAWAL_NONCE_FILLERS).increment(1);
        Ok(failed)
    }
}

/// Rows one worker holds together, in one transaction, for one step over
/// many of them (one commit instead of one per row). Dropping it rolls
/// every row back.
pub struct ClaimedBatch {
    tx: Tx,
    store: Withdrawals,
    /// The rows taken, with their attempts (oldest first).
    pub rows: Vec<(Payout, Vec<Attempt>)>,
    transitions: Vec<WithdrawalStatus>,
}

impl std::fmt::Debug for ClaimedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedBatch")
            .field("rows", &self.rows.len())
            .finish_non_exhaustive()
    }
}

impl Withdrawals {
    /// Claims those of rows `ids` that are in one of `statuses` and that no
    /// other worker holds (`FOR UPDATE SKIP LOCKED`, in id order).
    pub async fn claim_batch(
        &self,
        ids: &[i64],
        statuses: &[WithdrawalStatus],
    ) -> Result<ClaimedBatch> {
        let mut tx = self.pool().begin().await?;
        let rows: Vec<WithdrawalRow> = sqlx::query_as(&format!(
            "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE id = ANY($1) AND status = ANY($2)
             ORDER BY id FOR UPDATE SKIP LOCKED"
        ))
        .bind(ids)
        .bind(statuses)
        .fetch_all(&mut *tx)
        .await?;
        let payouts = rows
            .into_iter()
            .map(WithdrawalRow::into_payout)
            .collect::<Result<Vec<_>>>()?;
        let taken: Vec<i64> = payouts.iter().map(|p| p.id).collect();
        let rows: Vec<AttemptRow> = sqlx::query_as(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM withdrawal_attempts WHERE withdrawal_id = ANY($1) ORDER BY id"
        ))
        .bind(&taken)
        .fetch_all(&mut *tx)
        .await?;
        let mut attempts: std::collections::HashMap<i64, Vec<Attempt>> = Default::default();
        for row in rows {
            let attempt = row.into_attempt()?;
            attempts
                .entry(attempt.withdrawal_id)
                .or_default()
                .push(attempt);
        }
        let rows = payouts
            .into_iter()
            .map(|p| {
                let a = attempts.remove(&p.id).unwrap_or_default();
                (p, a)
            })
            .collect();
        Ok(ClaimedBatch {
            tx,
            store: self.clone(),
            rows,
            transitions: Vec::new(),
        })
    }
}

impl ClaimedBatch {
    fn row(&self, id: i64) -> Result<(Payout, Vec<Attempt>)> {
        self.rows
            .iter()
            .find(|(p, _)| p.id == id)
            .cloned()
            .ok_or_else(|| Error::InvalidRequest(format!("id: row {id} is not in this batch")))
    }

    /// [`Claimed::record_landed`] for rows of the batch, each with its
    /// landing, in two statements.
    pub async fn record_landed(&mut self, landings: &[(i64, Landing)]) -> Result<()> {
        let rows = landings
            .iter()
            .map(|(id, landing)| {
                self.row(*id)
                    .map(|(payout, attempts)| (payout, attempts, landing))
            })
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<_> = rows.iter().map(|(p, a, l)| (p, a.as_slice(), *l)).collect();
        land(&mut self.tx, &refs).await?;
        self.transitions
            .extend(refs.iter().map(|_| WithdrawalStatus::Confirming));
        Ok(())
    }

    /// [`Claimed::finish`] for rows `ids` of the batch, in a fixed number
    /// of statements; the status each ends in, in order.
    pub async fn finish(
        &mut self,
        ids: &[i64],
        native_asset: &str,
    ) -> Result<Vec<WithdrawalStatus>> {
        let rows = ids
            .iter()
            .map(|id| self.row(*id))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<_> = rows.iter().map(|(p, a)| (p, a.as_slice())).collect();
        let ledger = self.store.ledger().clone();
        let statuses = finish_rows(&mut self.tx, &ledger, &refs, native_asset).await?;
        self.transitions.extend(statuses.iter().copied());
        Ok(statuses)
    }

    /// Commits every row's writes at once.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        for status in self.transitions {
            count_transition(status);
        }
        Ok(())
    }
}

async fn attempts_in(tx: &mut PgConnection, id: i64) -> Result<Vec<Attempt>> {
    let rows: Vec<AttemptRow> = sqlx::query_as(&format!(
        "SELECT {ATTEMPT_COLUMNS} FROM withdrawal_attempts WHERE withdrawal_id = $1 ORDER BY id"
    ))
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    rows.into_iter().map(AttemptRow::into_attempt).collect()
}

impl Claimed {
    /// The attempt the pipeline follows now.
    pub fn current(&self) -> Option<&Attempt> {
        let current = self.payout.current_attempt_id?;
        self.attempts.iter().find(|a| a.id == current)
    }

    /// The nonce the row's attempts share (Ethereum).
    pub async fn nonce(&mut self) -> Result<u64> {
        let nonce: Option<i64> =
            sqlx::query_scalar("SELECT nonce FROM eth_nonce_reservations WHERE withdrawal_id = $1")
                .bind(self.payout.id)
                .fetch_optional(&mut *self.tx)
                .await?;
        let nonce = nonce.ok_or_else(|| {
            Error::Corrupt(format!("row {} has no reserved nonce", self.payout.id))
        })?;
        u64::try_from(nonce).map_err(|_| Error::Corrupt(format!("stored nonce {nonce}")))
    }

    fn refuse(&self, action: &'static str) -> Error {
        Error::WithdrawalState {
            id: self.payout.id,
            status: self.payout.status,
            action,
        }
    }

    async fn reread(mut self) -> Result<Payout> {
        let row = select_withdrawal(&mut self.tx, self.payout.id, false)
            .await?
            .ok_or(Error::WithdrawalNotFound(self.payout.id))?;
        let payout = row.into_payout()?;
        self.tx.commit().await?;
        Ok(payout)
    }

    /// Notes why the row is not moving (shown with it), leaving its state.
    pub async fn set_waiting(mut self, reason: &str) -> Result<Payout> {
        sqlx::query(
            "UPDATE withdrawals SET waiting_reason = left($2, 1000), updated_at = now()
             WHERE id = $1 AND waiting_reason IS DISTINCT FROM left($2, 1000)",
        )
        .bind(self.payout.id)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        self.reread().await
    }

    /// The node refused the current attempt's bytes for a reason the loop
    /// does not handle; returns how many times in a row.
    pub async fn record_rejected(mut self, reason: &str) -> Result<(Payout, u32)> {
        sqlx::query(
            "UPDATE withdrawals SET send_rejections = send_rejections + 1,
                 waiting_reason = left('node refused the transaction: ' || $2, 1000), updated_at = now()
             WHERE id = $1",
        )
        .bind(self.payout.id)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        let payout = self.reread().await?;
        let count = payout.send_rejections;
        Ok((payout, count))
    }

    /// Commits a replacement of the current attempt (same nonce, both fee
    /// fields raised by at least [`REPLACEMENT_BUMP_PERCENT`]) as the new
    /// current attempt, before it is sent. Every earlier attempt is kept:
    /// whichever lands completes the row.
    pub async fn record_replacement(
        mut self,
        attempt: &SignedAttempt,
    ) -> Result<(Payout, Attempt)> {
        if !matches!(
            self.payout.status,
            WithdrawalStatus::Signed | WithdrawalStatus::Broadcast
        ) {
            return Err(self.refuse("replaced"));
        }
        let Some(current) = self.current().cloned() else {
            return Err(self.refuse("replaced"));
        };
        let raised = |new: Option<Amount>, old: Option<Amount>| match (new, old) {
            (Some(new), Some(old)) => new >= bumped(old),
            (_, None) => true,
            (None, Some(_)) => false,
        };
        if !raised(attempt.max_fee_per_gas, current.max_fee_per_gas)
            || !raised(
                attempt.max_priority_fee_per_gas,
                current.max_priority_fee_per_gas,
            )
        {
            return Err(Error::InvalidRequest(format!(
                "max_fee_per_gas, max_priority_fee_per_gas: a replacement must raise both by at least {REPLACEMENT_BUMP_PERCENT}%"
            )));
        }
        super::signing::validate_attempt(self.payout.chain, attempt)?;
        let stored = super::signing::insert_attempt(
            &mut self.tx,
            self.payout.id,
            self.payout.chain,
            attempt,
        )
        .await?;
        sqlx::query(
            "UPDATE withdrawals SET current_attempt_id = $2, updated_at = now() WHERE id = $1",
        )
        .bind(self.payout.id)
        .bind(stored.id)
        .execute(&mut *self.tx)
        .await?;
        let payout = self.reread().await?;
        metrics::counter!(crate::metrics::WITHDRAWAL_REPLACEMENTS, "chain" => payout.chain.as_str())
            .increment(1);
        Ok((payout, stored))
    }

    /// One of the attempts is in a block: → confirming, with where it
    /// landed. (Also from signed: the process died between sending and
    /// recording the send, and the chain says the bytes went out; and from
    /// manual: the chain settles what a person was asked to decide.)
    pub async fn record_landed(mut self, landing: &Landing) -> Result<Payout> {
        land(&mut self.tx, &[(&self.payout, &self.attempts, landing)]).await?;
        let payout = self.reread().await?;
        count_transition(WithdrawalStatus::Confirming);
        Ok(payout)
    }

    /// Applies an admin's resolution of a manual withdrawal, once the
    /// caller has proof from the chain that none of its attempts can land
    /// (Ethereum: none has a receipt and its nonce is used at a final
    /// height): release → failed, the
    /// hold released; settle → completed, the hold settled as a landing
    /// would (no network fee: none of Coffer's transactions paid one).
    /// The reason kept is the admin's, after the loop's own.
    pub async fn apply_resolution(mut self) -> Result<Payout> {
        let (WithdrawalStatus::Manual, Some(resolution), Some(hold_id), Some(user)) = (
            self.payout.status,
            self.payout.resolution,
            self.payout.hold_id,
            self.payout.user,
        ) else {
            return Err(self.refuse("resolved"));
        };
        let id = self.payout.id;
        let (by, reason): (uuid::Uuid, String) = sqlx::query_as(
            "SELECT resolution_by, resolution_reason FROM withdrawals WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&mut *self.tx)
        .await?;
        let metadata = serde_json::json!({
            "withdrawal_id": id,
            "resolution": resolution,
            "resolved_by": by,
            "reason": reason,
        });
        let ledger = self.store.ledger().clone();
        let status = match resolution {
            ManualResolution::Release => {
                ledger
                    .release_hold_in(
                        &mut self.tx,
                        &ReleaseHold {
                            hold_id,
                            kind: EntryKind::WithdrawalRelease,
                            reference: format!("withdrawal:{id}:release"),
                            metadata,
                        },
                    )
                    .await?;
                WithdrawalStatus::Failed
            }
            ManualResolution::Settle => {
                let p = &self.payout;
                let entry = settle_entry(id, user, &p.asset, p.amount, p.fee, &metadata)?;
                let prepared = ledger.prepare_in(&mut self.tx, &entry).await?;
                ledger
                    .finish_hold_in(&mut self.tx, hold_id, HoldStatus::Settled, &prepared)
                    .await?;
                WithdrawalStatus::Completed
            }
        };
        sqlx::query(
            "UPDATE withdrawals SET status = $2, finished_at = now(), updated_at = now(),
                 reason = left(concat_ws('; ', reason, 'resolved by an admin: ' || resolution_reason), 1000)
             WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .execute(&mut *self.tx)
        .await?;
        let payout = self.reread().await?;
        count_transition(status);
        tracing::info!(id, ?resolution, "manual withdrawal resolved");
        Ok(payout)
    }

    /// The block holding the landed attempt left the canonical chain:
    /// confirming → broadcast, still held, every attempt still a candidate.
    pub async fn record_unlanded(mut self) -> Result<Payout> {
        if self.payout.status != WithdrawalStatus::Confirming {
            return Err(self.refuse("unlanded"));
        }
        sqlx::query(
            "UPDATE withdrawal_attempts SET landed_block_hash = NULL, landed_block_height = NULL,
                 landed_success = NULL, fee_paid = NULL
             WHERE withdrawal_id = $1",
        )
        .bind(self.payout.id)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "UPDATE withdrawals SET status = 'broadcast', updated_at = now() WHERE id = $1",
        )
        .bind(self.payout.id)
        .execute(&mut *self.tx)
        .await?;
        let payout = self.reread().await?;
        metrics::counter!(crate::metrics::WITHDRAWAL_REORGED, "chain" => payout.chain.as_str())
            .increment(1);
        count_transition(WithdrawalStatus::Broadcast);
        Ok(payout)
    }

    /// The landed attempt is final: confirming → completed when it
    /// succeeded, failed when it reverted (its nonce is used, its gas
    /// spent, nothing else moved: retrying would spend gas on a transfer
    /// the chain already refused once, so a person decides). The ledger
    /// moves in the same transaction: a withdrawal's hold is settled
    /// (held → custody, its fee → fees) or released; the gas is booked,
    /// custody → network fees, in `native_asset`, for every kind.
    pub async fn finish(mut self, native_asset: &str) -> Result<Payout> {
        let ledger = self.store.ledger().clone();
        let statuses = finish_rows(
            &mut self.tx,
            &ledger,
            &[(&self.payout, &self.attempts)],
            native_asset,
        )
        .await?;
        let payout = self.reread().await?;
        statuses.into_iter().for_each(count_transition);
        Ok(payout)
    }

    /// The outcome is unknown to the loop: → manual, never rebuilt
    /// automatically; the hold stays until a person decides.
    pub async fn to_manual(mut self, reason: &str) -> Result<Payout> {
        if matches!(
            self.payout.status,
            WithdrawalStatus::Completed
                | WithdrawalStatus::Failed
                | WithdrawalStatus::Rejected
                | WithdrawalStatus::Cancelled
                | WithdrawalStatus::Manual
        ) {
            return Err(self.refuse("moved to manual"));
        }
        sqlx::query(
            "UPDATE withdrawals SET status = 'manual', reason = left($2, 1000), updated_at = now() WHERE id = $1",
        )
        .bind(self.payout.id)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        let payout = self.reread().await?;
        count_transition(WithdrawalStatus::Manual);
        Ok(payout)
    }
}

/// [`Claimed::record_landed`]'s writes for each `(row, its attempts, landing)`,
/// on the claim's connection: two statements however many rows.
async fn land(conn: &mut PgConnection, rows: &[(&Payout, &[Attempt], &Landing)]) -> Result<()> {
    let mut attempt_ids = Vec::with_capacity(rows.len());
    let mut hashes = Vec::with_capacity(rows.len());
    let mut heights = Vec::with_capacity(rows.len());
    let mut successes = Vec::with_capacity(rows.len());
    let mut fees = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    for (payout, attempts, landing) in rows {
        if !matches!(
            payout.status,
            WithdrawalStatus::Signed | WithdrawalStatus::Broadcast | WithdrawalStatus::Manual
        ) {
            return Err(Error::WithdrawalState {
                id: payout.id,
                status: payout.status,
                action: "landed",
            });
        }
        if !attempts.iter().any(|a| a.id == landing.attempt_id) {
            return Err(Error::InvalidRequest(format!(
                "attempt_id: {} is not an attempt of withdrawal {}",
                landing.attempt_id, payout.id
            )));
        }
        if payout.status == WithdrawalStatus::Manual && payout.resolution.is_some() {
            tracing::warn!(
                id = payout.id,
                "an attempt of a manual withdrawal landed; the admin's resolution is dropped"
            );
        }
        attempt_ids.push(landing.attempt_id);
        hashes.push(landing.block_hash.as_str());
        heights.push(to_i64(landing.block_height, "block_height")?);
        successes.push(landing.success);
        fees.push(landing.fee_paid.to_string());
        ids.push(payout.id);
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE withdrawal_attempts a SET landed_block_hash = l.hash, landed_block_height = l.height,
             landed_success = l.success, fee_paid = l.fee::numeric
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bool[], $5::text[])
             AS l(id, hash, height, success, fee)
         WHERE a.id = l.id",
    )
    .bind(&attempt_ids)
    .bind(&hashes)
    .bind(&heights)
    .bind(&successes)
    .bind(&fees)
    .execute(&mut *conn)
    .await?;
    // From manual, the chain answered what a person was asked: the
    // question and any answer to it go.
    sqlx::query(
        "UPDATE withdrawals SET status = 'confirming', waiting_reason = NULL, updated_at = now(),
             reason = CASE WHEN status = 'manual' THEN NULL ELSE reason END,
             resolution = NULL, resolution_by = NULL, resolution_reason = NULL
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`Claimed::finish`]'s writes for each `(row, its attempts)`, on the
/// claim's connection, in a fixed number of statements however many
/// rows; the status each ended in, in order.
async fn finish_rows(
    conn: &mut PgConnection,
    ledger: &crate::ledger::Ledger,
    rows: &[(&Payout, &[Attempt])],
    native_asset: &str,
) -> Result<Vec<WithdrawalStatus>> {
    let mut holds = Vec::new();
    let mut fee_entries = Vec::new();
    let mut ids = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    for (payout, attempts) in rows {
        if payout.status != WithdrawalStatus::Confirming {
            return Err(Error::WithdrawalState {
                id: payout.id,
                status: payout.status,
                action: "finished",
            });
        }
        let Some(landed) = attempts.iter().find(|a| a.landed_block_hash.is_some()) else {
            return Err(Error::Corrupt(format!(
                "withdrawal {} is confirming without a landed attempt",
                payout.id
            )));
        };
        let success = landed.landed_success.unwrap_or(false);
        let id = payout.id;
        let metadata = serde_json::json!({
            "withdrawal_id": id,
            "kind": payout.kind.as_str(),
            "tx_hash": landed.tx_hash,
            "block_hash": landed.landed_block_hash,
            "block_height": landed.landed_block_height,
        });
        if let Some(hold_id) = payout.hold_id {
            holds.push(if success {
                let (Some(user), PayoutKind::Withdrawal) = (payout.user, payout.kind) else {
                    return Err(Error::Corrupt(format!(
                        "payout {id} has a hold but is no user's withdrawal"
                    )));
                };
                let p = payout;
                HoldFinish {
                    hold_id,
                    status: HoldStatus::Settled,
                    entry: settle_entry(id, user, &p.asset, p.amount, p.fee, &metadata)?,
                }
            } else {
                HoldFinish {
                    hold_id,
                    status: HoldStatus::Released,
                    entry: NewEntry {
                        kind: EntryKind::WithdrawalRelease,
                        reference: format!("withdrawal:{id}:release"),
                        metadata: metadata.clone(),
                        legs: Vec::new(),
                    },
                }
            });
        }
        let fee_paid = landed.fee_paid.unwrap_or_default();
        if !fee_paid.is_zero() {
            fee_entries.push(NewEntry {
                kind: EntryKind::NetworkFee,
                reference: format!("withdrawal:{id}:network_fee"),
                metadata,
                legs: vec![
                    Leg::increase(
                        AccountRef::system(native_asset, AccountPurpose::Custody),
                        fee_paid,
                    ),
                    Leg::decrease(
                        AccountRef::system(native_asset, AccountPurpose::NetworkFees),
                        fee_paid,
                    ),
                ],
            });
        }
        ids.push(id);
        statuses.push(if success {
            WithdrawalStatus::Completed
        } else {
            WithdrawalStatus::Failed
        });
    }
    if ids.is_empty() {
        return Ok(statuses);
    }
    ledger.finish_holds_in(&mut *conn, &holds).await?;
    ledger.post_referenced_in(&mut *conn, &fee_entries).await?;
    sqlx::query(
        "UPDATE withdrawals w SET status = f.status, finished_at = now(), updated_at = now(),
             reason = CASE WHEN f.status = 'failed'::withdrawal_status
                 THEN 'the transaction reverted on chain (receipt status 0); its network fee is spent'
                 ELSE w.reason END
         FROM unnest($1::bigint[], $2::withdrawal_status[]) AS f(id, status)
         WHERE w.id = f.id",
    )
    .bind(&ids)
    .bind(&statuses)
    .execute(&mut *conn)
    .await?;
    Ok(statuses)
}

/// Settling a withdrawal's hold: the amount leaves custody for the
/// destination and the withdrawal fee goes to the fee account.
fn settle_entry(
    id: i64,
    user: uuid::Uuid,
    asset: &str,
    amount: Amount,
    fee: Amount,
    metadata: &serde_json::Value,
) -> Result<NewEntry> {
    let total = amount
        .checked_add(fee)
        .ok_or_else(|| Error::Corrupt(format!("withdrawal {id} overflows")))?;
    let mut legs = vec![
        Leg::decrease(AccountRef::user(user, asset, AccountPurpose::Held), total),
        Leg::increase(AccountRef::system(asset, AccountPurpose::Custody), amount),
    ];
    if !fee.is_zero() {
        legs.push(Leg::increase(
            AccountRef::system(asset, AccountPurpose::Fees),
            fee,
        ));
    }
    Ok(NewEntry {
        kind: EntryKind::WithdrawalSettle,
        reference: format!("withdrawal:{id}:settle"),
        metadata: metadata.clone(),
        legs,
    })
}

/// `value` as a BIGINT column takes it; too large is an invalid `field`.
pub(super) fn to_i64(value: u64, field: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::InvalidRequest(format!("{field}: too large")))
}

#[cfg(test)]
mod tests {
    use super::bumped;
    use crate::ledger::Amount;

    #[test]
    fn a_replacement_offers_at_least_ten_percent_more_rounded_up() {
        assert_eq!(bumped(Amount::from_u64(100)), Amount::from_u64(110));
        assert_eq!(bumped(Amount::from_u64(101)), Amount::from_u64(112));
        assert_eq!(bumped(Amount::from_u64(1)), Amount::from_u64(2));
        assert_eq!(bumped(Amount::from_u64(0)), Amount::from_u64(1));
        assert_eq!(
            bumped(Amount::from_u64(2_000_000_000)),
            Amount::from_u64(2_200_000_000)
        );
    }
}
