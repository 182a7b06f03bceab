//! Unwinding a reorg: the mirror of [`DepositStore::apply`]. Everything
//! above the common ancestor is reversed with entries of its own, never
//! deleted, and the ancestor becomes the cursor. Bitcoin's custody UTXO
//! set, a mirror of the chain, loses what the unwound blocks did.

use super::{DEPOSIT_COLUMNS, DepositRow, DepositStore, Transition};
use crate::deposits::{Cursor, to_i64};
use crate::ledger::{AccountPurpose, AccountRef, EntryKind, Leg, NewEntry};
use crate::metrics::DEPOSIT_REVERSALS_OF_CREDITS;
use crate::{Error, Result};

/// What [`DepositStore::rewind`] unwound.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unwound {
    pub pending: usize,
    pub credited: usize,
}

/// A deposit about to be unwound, with the status it had.
#[derive(sqlx::FromRow)]
struct DoomedRow {
    #[sqlx(flatten)]
    deposit: DepositRow,
    status: String,
}

impl DepositStore {
    /// Unwinds everything above `ancestor`, which becomes the cursor:
    /// pending deposits are reversed out of pending; credited ones are
    /// reversed out of available, with any part the user already moved
    /// booked to suspense for an operator. One transaction.
    pub async fn rewind(&self, ancestor: &Cursor) -> Result<Unwound> {
        let chain = self.chain.as_str();
        let above = to_i64(ancestor.height)?;
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT 1 FROM chain_cursors WHERE chain = $1 FOR UPDATE")
            .bind(chain)
            .execute(&mut *tx)
            .await?;
        let doomed: Vec<DoomedRow> = sqlx::query_as(&format!(
            "SELECT {DEPOSIT_COLUMNS}, status::text AS status FROM deposits
             WHERE chain = $1 AND block_height > $2 AND status <> 'orphaned' ORDER BY id FOR UPDATE"
        ))
        .bind(chain)
        .bind(above)
        .fetch_all(&mut *tx)
        .await?;
        let mut unwound = Unwound::default();
        if !doomed.is_empty() {
            // What each credited deposit's reversal can take back from the
            // user's available funds, asked once for the batch; the rest is
            // booked to suspense.
            let credited = doomed
                .iter()
                .filter(|d| d.status == "credited")
                .map(|d| {
                    Ok((
                        d.deposit.user_id,
                        d.deposit.asset.as_str(),
                        d.deposit.amount()?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut takes = self
                .ledger
                .take_available(&mut tx, &credited)
                .await?
                .into_iter();
            let mut entries = Vec::with_capacity(doomed.len());
            for DoomedRow {
                deposit: row,
                status,
            } in &doomed
            {
                let amount = row.amount()?;
                let custody = Leg::increase(
                    AccountRef::system(&row.asset, AccountPurpose::Custody),
                    amount,
                );
                let mut legs = vec![custody];
                if status == "credited" {
                    unwound.credited += 1;
                    let available = AccountRef::available(row.user_id, &row.asset);
                    let taken = takes
                        .next()
                        .ok_or_else(|| Error::Corrupt("reversal balance missing".into()))?;
                    let shortfall = amount
                        .checked_sub(taken)
                        .ok_or_else(|| Error::Corrupt("reversal arithmetic".into()))?;
                    if !taken.is_zero() {
                        legs.push(Leg::decrease(available, taken));
                    }
                    if !shortfall.is_zero() {
                        legs.push(Leg::decrease(
                            AccountRef::system(&row.asset, AccountPurpose::Suspense),
                            shortfall,
                        ));
                    }
                    tracing::error!(
                        chain, deposit_id = row.id, tx_id = %row.tx_id, asset = %row.asset,
                        amount = %amount, shortfall = %shortfall, block_height = row.block_height,
                        "reorg removed a credited deposit; reversed"
                    );
                    metrics::counter!(DEPOSIT_REVERSALS_OF_CREDITS, "chain" => chain, "asset" => row.asset.clone())
                        .increment(1);
                } else {
                    unwound.pending += 1;
                    legs.push(Leg::decrease(
                        AccountRef::user(row.user_id, &row.asset, AccountPurpose::Pending),
                        amount,
                    ));
                }
                entries.push(NewEntry {
                    kind: EntryKind::DepositReversal,
                    reference: format!("deposit:{}:reversal", row.id),
                    metadata: row.metadata(self.chain),
                    legs,
                });
            }
            let rows = doomed
                .iter()
                .map(|d| (d.deposit.id, d.deposit.asset.as_str()));
            self.post_transition(&mut tx, Transition::Orphaned, &entries, rows)
                .await?;
        }
        if self.chain == chains::Chain::Bitcoin {
            super::utxos::unwind(&mut tx, above).await?;
        }
        sqlx::query(
            "WITH dropped AS (DELETE FROM indexed_blocks WHERE chain = $1 AND height > $2),
                  refusals AS (UPDATE refused_deposits SET orphaned_at = now()
                               WHERE chain = $1 AND block_height > $2 AND orphaned_at IS NULL)
             UPDATE chain_cursors SET height = $2, block_hash = $3, updated_at = now() WHERE chain = $1",
        )
        .bind(chain)
        .bind(above)
        .bind(&ancestor.hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(unwound)
    }
}
