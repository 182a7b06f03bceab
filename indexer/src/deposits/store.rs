//! The write model: one chain's deposits and cursor in PostgreSQL. Each
//! batch of [`ObservedBlock`]s is ONE transaction (block hashes, deposit
//! rows, their ledger entries and the cursor); deposits are credited once
//! their block is final; on Bitcoin the custody UTXO set changes with its
//! blocks (`utxos`). Unwinding a reorg is in `rewind`; the read model
//! clients see is `view`.

mod rewind;
pub(super) mod utxos;

use std::collections::HashMap;

use chains::Chain;
use chrono::Utc;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use rewind::Unwound;

use super::{Cursor, ObservedBlock, to_i64, to_u64};
use crate::ledger::{AccountPurpose, AccountRef, Amount, EntryKind, Ledger, Leg, NewEntry};
use crate::metrics::{DEPOSIT_DETECTION_LATENCY, DEPOSITS, DEPOSITS_REFUSED};
use crate::{Error, Result};

/// Blocks kept in `indexed_blocks` beyond the reorg window, and below the
/// final height.
const KEEP_MARGIN: u64 = 16;

/// What [`DepositStore::apply`] did with a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Every block was stored; the cursor is at the last one.
    Advanced { deposits: usize },
    /// The block at `height` does not extend the stored chain: a reorg.
    /// Blocks before it in the batch were stored.
    ParentMismatch { height: u64, deposits: usize },
}

/// One chain's deposits and cursor in PostgreSQL.
#[derive(Clone, Debug)]
pub struct DepositStore {
    ledger: Ledger,
    chain: Chain,
    /// Blocks kept for the walk back; deeper reorgs halt the watcher anyway.
    pub(super) keep_blocks: u64,
}

#[derive(sqlx::FromRow)]
struct DepositRow {
    id: i64,
    user_id: Uuid,
    asset: String,
    amount: String,
    tx_id: String,
    position: i64,
    block_height: i64,
    block_hash: String,
    address: String,
}

impl DepositRow {
    fn amount(&self) -> Result<Amount> {
        Amount::parse(&self.amount)
            .map_err(|e| Error::Corrupt(format!("deposit {} amount: {e}", self.id)))
    }

    fn metadata(&self, chain: Chain) -> serde_json::Value {
        serde_json::json!({
            "deposit_id": self.id,
            "chain": chain.as_str(),
            "tx_id": self.tx_id,
            "position": self.position,
            "block_height": self.block_height,
            "block_hash": self.block_hash,
            "address": self.address,
        })
    }
}

/// Where a deposit goes once its entry is posted: each has its status, the
/// column naming the entry that moved it, and the time column it stamps.
#[derive(Clone, Copy)]
pub(super) enum Transition {
    Credited,
    Orphaned,
}

impl Transition {
    fn status(self) -> &'static str {
        match self {
            Transition::Credited => "credited",
            Transition::Orphaned => "orphaned",
        }
    }

    fn update(self) -> &'static str {
        match self {
            Transition::Credited => {
                "UPDATE deposits SET status = 'credited', credit_entry_id = u.entry, credited_at = now()
                 FROM unnest($1::bigint[], $2::bigint[]) AS u(id, entry) WHERE deposits.id = u.id"
            }
            Transition::Orphaned => {
                "UPDATE deposits SET status = 'orphaned', reversal_entry_id = u.entry, orphaned_at = now()
                 FROM unnest($1::bigint[], $2::bigint[]) AS u(id, entry) WHERE deposits.id = u.id"
            }
        }
    }
}

impl DepositStore {
    /// Posts one entry per deposit (in the same order as `rows`, each
    /// `(deposit id, asset)`) and moves every deposit to `transition`,
    /// recording its entry: one statement each for the whole batch.
    pub(super) async fn post_transition<'a>(
        &self,
        tx: &mut PgConnection,
        transition: Transition,
        entries: &[NewEntry],
        rows: impl Iterator<Item = (i64, &'a str)> + Clone,
    ) -> Result<()> {
        let entry_ids = self.ledger.post_referenced_in(tx, entries).await?;
        let ids: Vec<i64> = rows.clone().map(|(id, _)| id).collect();
        sqlx::query(transition.update())
            .bind(&ids)
            .bind(&entry_ids)
            .execute(&mut *tx)
            .await?;
        for (_, asset) in rows {
            metrics::counter!(DEPOSITS, "chain" => self.chain.as_str(), "asset" => asset.to_owned(), "status" => transition.status())
                .increment(1);
        }
        Ok(())
    }
}

const DEPOSIT_COLUMNS: &str = "id, user_id, asset, amount::text AS amount, tx_id, position, block_height, block_hash, address";

impl DepositStore {
    /// `max_reorg_depth` bounds the walk back; blocks a little deeper are
    /// kept so a reorg just past the limit is still measured, then halts.
    pub fn new(ledger: Ledger, chain: Chain, max_reorg_depth: u64) -> Self {
        Self {
            ledger,
            chain,
            keep_blocks: max_reorg_depth.saturating_add(KEEP_MARGIN),
        }
    }

    pub fn chain(&self) -> Chain {
        self.chain
    }

    pub(super) fn pool(&self) -> &PgPool {
        self.ledger.pool()
    }

    pub async fn cursor(&self) -> Result<Option<Cursor>> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT height, block_hash FROM chain_cursors WHERE chain = $1")
                .bind(self.chain.as_str())
                .fetch_optional(self.pool())
                .await?;
        row.map(Cursor::from_row).transpose()
    }

    /// Starts the watcher after `block` (the block before the configured
    /// start height, or the tip on a new install). A cursor that already
    /// exists wins: restarts resume where they stopped.
    pub async fn init_cursor(&self, block: &Cursor) -> Result<Cursor> {
        // The starting block is a possible common ancestor of a reorg.
        sqlx::query(
            "WITH cursor AS (
                 INSERT INTO chain_cursors (chain, height, block_hash) VALUES ($1, $2, $3)
                 ON CONFLICT (chain) DO NOTHING RETURNING chain, height, block_hash
             )
             INSERT INTO indexed_blocks (chain, height, block_hash) SELECT * FROM cursor",
        )
        .bind(self.chain.as_str())
        .bind(to_i64(block.height)?)
        .bind(&block.hash)
        .execute(self.pool())
        .await?;
        self.cursor()
            .await?
            .ok_or_else(|| Error::Corrupt("cursor vanished".into()))
    }

    /// Indexed blocks from the cursor down, newest first, for the walk back.
    pub async fn recent_blocks(&self, limit: u64) -> Result<Vec<Cursor>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT height, block_hash FROM indexed_blocks WHERE chain = $1 ORDER BY height DESC LIMIT $2",
        )
        .bind(self.chain.as_str())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(Cursor::from_row).collect()
    }

    /// The newest indexed block at or below `height`.
    pub async fn indexed_at_or_below(&self, height: u64) -> Result<Option<Cursor>> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT height, block_hash FROM indexed_blocks WHERE chain = $1 AND height <= $2
             ORDER BY height DESC LIMIT 1",
        )
        .bind(self.chain.as_str())
        .bind(to_i64(height)?)
        .fetch_optional(self.pool())
        .await?;
        row.map(Cursor::from_row).transpose()
    }

    /// Stores `blocks` (ascending, each extending the previous) with their
    /// deposits, in one transaction. Deposits in blocks at or below
    /// `final_height` are credited at once; the others are pending.
    pub async fn apply(
        &self,
        blocks: &[ObservedBlock],
        final_height: Option<u64>,
    ) -> Result<Applied> {
        let mut tx = self.pool().begin().await?;
        let cursor: (i64, String) = sqlx::query_as(
            "SELECT height, block_hash FROM chain_cursors WHERE chain = $1 FOR UPDATE",
        )
        .bind(self.chain.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::Corrupt(format!("{} has no cursor", self.chain)))?;
        let (mut height, mut hash) = (to_u64(cursor.0)?, cursor.1);
        let mut accepted = 0;
        for block in blocks {
            if block.height <= height || block.parent_hash != hash {
                break;
            }
            height = block.height;
            hash.clone_from(&block.hash);
            accepted += 1;
        }
        let stored = &blocks[..accepted];
        let deposits = if stored.is_empty() {
            0
        } else {
            self.store_blocks(&mut tx, stored, final_height).await?
        };
        tx.commit().await?;
        Ok(match blocks.get(accepted) {
            None => Applied::Advanced { deposits },
            Some(block) => Applied::ParentMismatch {
                height: block.height,
                deposits,
            },
        })
    }

    async fn store_blocks(
        &self,
        tx: &mut PgConnection,
        blocks: &[ObservedBlock],
        final_height: Option<u64>,
    ) -> Result<usize> {
        let chain = self.chain.as_str();
        let mut heights = Vec::with_capacity(blocks.len());
        let mut hashes = Vec::with_capacity(blocks.len());
        let mut parents = Vec::with_capacity(blocks.len());
        for block in blocks {
            heights.push(to_i64(block.height)?);
            hashes.push(block.hash.as_str());
            parents.push(block.parent_hash.as_str());
        }
        let last = blocks.last().map(|b| (b.height, b.hash.as_str()));
        let (last_height, last_hash) = last.ok_or_else(|| Error::Corrupt("empty batch".into()))?;
        sqlx::query(
            "WITH stored AS (
                 INSERT INTO indexed_blocks (chain, height, block_hash, parent_hash)
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[])
             ), pruned AS (
                 DELETE FROM indexed_blocks WHERE chain = $1 AND height < $5
             )
             UPDATE chain_cursors SET height = $6, block_hash = $7, updated_at = now() WHERE chain = $1",
        )
        .bind(chain)
        .bind(&heights)
        .bind(&hashes)
        .bind(&parents)
        // Kept: the reorg window, and everything not yet final plus a
        // margin, so the credit check always finds a block at or below
        // the final height.
        .bind(to_i64(
            last_height
                .saturating_sub(self.keep_blocks)
                .min(final_height.map_or(0, |f| f.saturating_sub(KEEP_MARGIN))),
        )?)
        .bind(to_i64(last_height)?)
        .bind(last_hash)
        .execute(&mut *tx)
        .await?;

        if blocks.iter().any(|b| !b.utxos.is_empty()) {
            utxos::record(tx, blocks).await?;
        }
        let count: usize = blocks.iter().map(|b| b.deposits.len()).sum();
        if count == 0 {
            return Ok(0);
        }
        // Ids first, so each deposit row is written once, already carrying
        // its status and entry.
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT nextval(pg_get_serial_sequence('deposits', 'id')) FROM generate_series(1, $1)",
        )
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let mut rows = Vec::with_capacity(count);
        let mut finals = Vec::with_capacity(count);
        let mut times = Vec::with_capacity(count);
        for (block, deposit) in blocks
            .iter()
            .flat_map(|b| b.deposits.iter().map(move |d| (b, d)))
        {
            let id = *ids
                .get(rows.len())
                .ok_or_else(|| Error::Corrupt("too few deposit ids".into()))?;
            rows.push(DepositRow {
                id,
                user_id: deposit.user_id,
                asset: deposit.asset.clone(),
                amount: deposit.amount.to_string(),
                tx_id: deposit.tx_id.clone(),
                position: deposit.position,
                block_height: to_i64(block.height)?,
                block_hash: block.hash.clone(),
                address: deposit.address.clone(),
            });
            finals.push(final_height.is_some_and(|f| block.height <= f));
            times.push(block.time);
        }
        let mut entries = Vec::with_capacity(count);
        let mut refused = Vec::new();
        let (mut kept_rows, mut kept_finals, mut kept_times) = (Vec::new(), Vec::new(), Vec::new());
        for ((row, final_), time) in rows.into_iter().zip(finals).zip(times) {
            let entry = if final_ {
                self.credit_entry(&row, AccountPurpose::Custody)?
            } else {
                self.pending_entry(&row)?
            };
            // The ledger would refuse this entry and with it the whole
            // batch: the deposit is set aside with the reason instead.
            match Ledger::check_entry(&entry) {
                Ok(()) => {
                    entries.push(entry);
                    kept_rows.push(row);
                    kept_finals.push(final_);
                    kept_times.push(time);
                }
                Err(reason) => refused.push((row, reason)),
            }
        }
        let (rows, finals, times) = (kept_rows, kept_finals, kept_times);
        self.refuse(tx, &refused).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let entry_ids = self.ledger.post_checked_referenced_in(tx, &entries).await?;

        // Parallel arrays for one `unnest` insert.
        let tx_ids: Vec<&str> = rows.iter().map(|r| r.tx_id.as_str()).collect();
        let positions: Vec<i64> = rows.iter().map(|r| r.position).collect();
        let heights: Vec<i64> = rows.iter().map(|r| r.block_height).collect();
        let hashes: Vec<&str> = rows.iter().map(|r| r.block_hash.as_str()).collect();
        let addresses: Vec<&str> = rows.iter().map(|r| r.address.as_str()).collect();
        let users: Vec<Uuid> = rows.iter().map(|r| r.user_id).collect();
        let assets: Vec<&str> = rows.iter().map(|r| r.asset.as_str()).collect();
        let amounts: Vec<&str> = rows.iter().map(|r| r.amount.as_str()).collect();
        let statuses: Vec<&str> = finals
            .iter()
            .map(|f| if *f { "credited" } else { "pending" })
            .collect();
        let pending_entries: Vec<Option<i64>> = finals
            .iter()
            .zip(&entry_ids)
            .map(|(f, e)| (!*f).then_some(*e))
            .collect();
        let credit_entries: Vec<Option<i64>> = finals
            .iter()
            .zip(&entry_ids)
            .map(|(f, e)| f.then_some(*e))
            .collect();
        // A live deposit for the same transfer would mean a block indexed
        // twice: the unique index fails the batch rather than hide it.
        sqlx::query(
            "INSERT INTO deposits (id, chain, tx_id, position, block_height, block_hash, block_time, address, user_id, asset,
                                   amount, status, pending_entry_id, credit_entry_id, credited_at)
             OVERRIDING SYSTEM VALUE
             SELECT d.id, $1, d.tx_id, d.position, d.block_height, d.block_hash, d.block_time, d.address, d.user_id, d.asset,
                    d.amount::numeric, d.status::deposit_status, d.pending_entry, d.credit_entry,
                    CASE WHEN d.credit_entry IS NULL THEN NULL ELSE now() END
             FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::timestamptz[], $8::text[],
                         $9::uuid[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::bigint[])
                  AS d(id, tx_id, position, block_height, block_hash, block_time, address, user_id, asset, amount,
                       status, pending_entry, credit_entry)",
        )
        .bind(chain)
        .bind(&ids)
        .bind(&tx_ids)
        .bind(&positions)
        .bind(&heights)
        .bind(&hashes)
        .bind(&times)
        .bind(&addresses)
        .bind(&users)
        .bind(&assets)
        .bind(&amounts)
        .bind(&statuses)
        .bind(&pending_entries)
        .bind(&credit_entries)
        .execute(&mut *tx)
        .await?;

        let now = Utc::now();
        let latency = metrics::histogram!(DEPOSIT_DETECTION_LATENCY, "chain" => chain);
        for block in blocks {
            if let Some(time) = block.time {
                let seconds = (now - time).to_std().unwrap_or_default().as_secs_f64();
                for _ in &block.deposits {
                    latency.record(seconds);
                }
            }
        }
        let mut counted: HashMap<(&str, &str), u64> = HashMap::new();
        for (row, final_) in rows.iter().zip(&finals) {
            let status = if *final_ { "credited" } else { "pending" };
            *counted.entry((row.asset.as_str(), status)).or_default() += 1;
        }
        for ((asset, status), n) in counted {
            metrics::counter!(DEPOSITS, "chain" => chain, "asset" => asset.to_owned(), "status" => status)
                .increment(n);
        }
        Ok(rows.len())
    }

    /// Records deposits the ledger refuses, with the reason, in the batch's
    /// transaction; logged and counted, never credited.
    async fn refuse(&self, tx: &mut PgConnection, refused: &[(DepositRow, Error)]) -> Result<()> {
        if refused.is_empty() {
            return Ok(());
        }
        let chain = self.chain.as_str();
        let mut reasons = Vec::with_capacity(refused.len());
        for (row, reason) in refused {
            let kind = match reason {
                Error::InvalidAmount(_) => "invalid_amount",
                Error::Unbalanced(_) => "unbalanced",
                _ => "invalid_entry",
            };
            tracing::warn!(
                chain, tx_id = %row.tx_id, position = row.position, address = %row.address,
                user_id = %row.user_id, asset = %row.asset, amount = %row.amount,
                block_height = row.block_height, %reason,
                "deposit refused by the ledger; recorded in refused_deposits, not credited"
            );
            metrics::counter!(DEPOSITS_REFUSED, "chain" => chain, "asset" => row.asset.clone(), "reason" => kind)
                .increment(1);
            reasons.push(reason.to_string());
        }
        let column = |f: fn(&DepositRow) -> &str| -> Vec<&str> {
            refused.iter().map(|(r, _)| f(r)).collect()
        };
        sqlx::query(
            "INSERT INTO refused_deposits (chain, tx_id, position, block_height, block_hash, address, user_id, asset,
                                           amount, reason)
             SELECT $1, r.tx_id, r.position, r.block_height, r.block_hash, r.address, r.user_id, r.asset,
                    r.amount::numeric, r.reason
             FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::uuid[], $8::text[],
                         $9::text[], $10::text[])
                  AS r(tx_id, position, block_height, block_hash, address, user_id, asset, amount, reason)
             ON CONFLICT (chain, tx_id, position) WHERE orphaned_at IS NULL DO NOTHING",
        )
        .bind(chain)
        .bind(column(|r| &r.tx_id))
        .bind(refused.iter().map(|(r, _)| r.position).collect::<Vec<_>>())
        .bind(refused.iter().map(|(r, _)| r.block_height).collect::<Vec<_>>())
        .bind(column(|r| &r.block_hash))
        .bind(column(|r| &r.address))
        .bind(refused.iter().map(|(r, _)| r.user_id).collect::<Vec<_>>())
        .bind(column(|r| &r.asset))
        .bind(column(|r| &r.amount))
        .bind(&reasons)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    fn pending_entry(&self, d: &DepositRow) -> Result<NewEntry> {
        let amount = d.amount()?;
        Ok(NewEntry {
            kind: EntryKind::DepositPending,
            reference: format!("deposit:{}:pending", d.id),
            metadata: d.metadata(self.chain),
            legs: vec![
                Leg::decrease(
                    AccountRef::system(&d.asset, AccountPurpose::Custody),
                    amount,
                ),
                Leg::increase(
                    AccountRef::user(d.user_id, &d.asset, AccountPurpose::Pending),
                    amount,
                ),
            ],
        })
    }

    /// The entry crediting `d` as available, moved from `source`: the user's
    /// pending account, or custody for a deposit final when first seen.
    fn credit_entry(&self, d: &DepositRow, source: AccountPurpose) -> Result<NewEntry> {
        let amount = d.amount()?;
        let from = match source {
            AccountPurpose::Pending => {
                AccountRef::user(d.user_id, &d.asset, AccountPurpose::Pending)
            }
            other => AccountRef::system(&d.asset, other),
        };
        Ok(NewEntry {
            kind: EntryKind::DepositCredit,
            reference: format!("deposit:{}:credit", d.id),
            metadata: d.metadata(self.chain),
            legs: vec![
                Leg::decrease(from, amount),
                Leg::increase(AccountRef::available(d.user_id, &d.asset), amount),
            ],
        })
    }

    /// Credits pending `deposits` as available.
    async fn post_credits(&self, tx: &mut PgConnection, deposits: &[DepositRow]) -> Result<()> {
        if deposits.is_empty() {
            return Ok(());
        }
        let entries = deposits
            .iter()
            .map(|d| self.credit_entry(d, AccountPurpose::Pending))
            .collect::<Result<Vec<_>>>()?;
        let rows = deposits.iter().map(|d| (d.id, d.asset.as_str()));
        self.post_transition(tx, Transition::Credited, &entries, rows)
            .await?;
        Ok(())
    }

    /// Credits every pending deposit in a block at or below `final_height`.
    /// Returns how many were credited.
    pub async fn confirm(&self, final_height: u64) -> Result<usize> {
        const BATCH: i64 = 2_000;
        let mut total = 0;
        loop {
            let mut tx = self.pool().begin().await?;
            let due: Vec<DepositRow> = sqlx::query_as(&format!(
                "SELECT {DEPOSIT_COLUMNS} FROM deposits
                 WHERE chain = $1 AND status = 'pending' AND block_height <= $2
                 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED"
            ))
            .bind(self.chain.as_str())
            .bind(to_i64(final_height)?)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if due.is_empty() {
                return Ok(total);
            }
            self.post_credits(&mut tx, &due).await?;
            tx.commit().await?;
            total += due.len();
        }
    }
}
