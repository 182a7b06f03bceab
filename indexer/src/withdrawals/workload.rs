//! What a payout loop reads to plan a round: what its senders already
//! owe to transactions not yet in a block, which deposit addresses may
//! need a sweep, and the counts its gauges show.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::Withdrawals;
use super::rows::stored_amount;
use crate::Result;
use crate::ledger::Amount;

/// A deposit address with assets credited since their last sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepCandidate {
    pub address: String,
    pub derivation_index: u32,
    pub assets: Vec<String>,
}

/// One gauge row: how many rows of a kind sit in a status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusCount {
    pub kind: String,
    pub status: String,
    pub count: i64,
}

/// One payout loop's right to plan `sender`'s spending: a session
/// advisory lock on a connection taken from the pool, so two replicas
/// never both budget the same balance. Released by [`Self::release`]; a
/// guard dropped without it closes its connection, which releases the
/// lock too (a crash releases it the same way).
pub struct PlanLock {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    name: String,
}

impl std::fmt::Debug for PlanLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanLock")
            .field("name", &self.name)
            .finish()
    }
}

impl PlanLock {
    pub async fn release(mut self) -> Result<()> {
        if let Some(mut conn) = self.conn.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(&self.name)
                .execute(&mut *conn)
                .await;
            if let Err(err) = unlocked {
                // Closing the connection releases the lock instead.
                drop(conn.detach());
                return Err(err.into());
            }
        }
        Ok(())
    }
}

impl Drop for PlanLock {
    fn drop(&mut self) {
        // Never back into the pool still holding the lock.
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl Withdrawals {
    /// The planning lock on `chain`'s `sender`, or `None` while another
    /// loop holds it (that loop plans this round; this one skips).
    pub async fn try_plan_lock(
        &self,
        chain: chains::Chain,
        sender: &str,
    ) -> Result<Option<PlanLock>> {
        let name = format!(
            "payout-plan:{}:{}",
            chain.as_str(),
            sender.to_ascii_lowercase()
        );
        let mut conn = self.pool().acquire().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(&name)
                .fetch_one(&mut *conn)
                .await?;
        Ok(locked.then_some(PlanLock {
            conn: Some(conn),
            name,
        }))
    }

    /// What `from_address` has committed to rows not yet in a block
    /// (reserved, signed, broadcast): per asset the amounts, and in
    /// `native_asset` also each current attempt's fee limit.
    pub async fn in_flight_spend(
        &self,
        chain: chains::Chain,
        from_address: &str,
        native_asset: &str,
    ) -> Result<BTreeMap<String, Amount>> {
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT w.asset, w.amount::text, a.fee_limit::text
             FROM withdrawals w LEFT JOIN withdrawal_attempts a ON a.id = w.current_attempt_id
             WHERE w.chain = $1 AND lower(w.from_address) = lower($2)
               AND w.status IN ('reserved', 'signed', 'broadcast', 'manual')",
        )
        .bind(chain.as_str())
        .bind(from_address)
        .fetch_all(self.pool())
        .await?;
        let mut owed: BTreeMap<String, Amount> = BTreeMap::new();
        let mut add = |asset: &str, amount: Amount| {
            let sum = owed.entry(asset.to_owned()).or_default();
            *sum = sum.checked_add(amount).unwrap_or(*sum);
        };
        for (asset, amount, fee_limit) in rows {
            add(&asset, stored_amount(&amount)?);
            if let Some(fee_limit) = fee_limit {
                add(native_asset, stored_amount(&fee_limit)?);
            }
        }
        Ok(owed)
    }

    /// Deposit addresses of `chain` holding an asset with a deposit
    /// credited after the newest completed sweep of that asset from the
    /// address, and with no sweep or top-up of theirs in flight.
    pub async fn sweep_candidates(&self, chain: chains::Chain) -> Result<Vec<SweepCandidate>> {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT a.address, a.derivation_index, d.asset
             FROM deposit_addresses a
             JOIN deposits d ON d.chain = a.chain AND d.address = a.address AND d.status = 'credited'
             WHERE a.chain = $1
               AND NOT EXISTS (
                   SELECT 1 FROM withdrawals w
                   WHERE w.chain = a.chain AND w.kind IN ('sweep', 'gas_top_up')
                     AND (lower(w.from_address) = lower(a.address) OR lower(w.destination) = lower(a.address))
                     AND w.status IN ('reserved', 'signed', 'broadcast', 'confirming', 'manual'))
             GROUP BY a.address, a.derivation_index, d.asset
             HAVING max(d.credited_at) > coalesce(
                 (SELECT max(w.requested_at) FROM withdrawals w
                  WHERE w.chain = $1 AND w.kind = 'sweep' AND w.asset = d.asset
                    AND lower(w.from_address) = lower(a.address) AND w.status = 'completed'),
                 '-infinity')
             ORDER BY a.derivation_index, d.asset",
        )
        .bind(chain.as_str())
        .fetch_all(self.pool())
        .await?;
        let mut candidates: Vec<SweepCandidate> = Vec::new();
        for (address, index, asset) in rows {
            match candidates.last_mut() {
                Some(last) if last.address == address => last.assets.push(asset),
                _ => candidates.push(SweepCandidate {
                    derivation_index: u32::try_from(index).map_err(|_| {
                        crate::Error::Corrupt(format!("stored derivation index {index}"))
                    })?,
                    address,
                    assets: vec![asset],
                }),
            }
        }
        Ok(candidates)
    }

    /// Rows of `chain` by kind and status, for the gauges.
    pub async fn status_counts(&self, chain: chains::Chain) -> Result<Vec<StatusCount>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT kind::text, status::text, count(*) FROM withdrawals WHERE chain = $1 GROUP BY 1, 2",
        )
        .bind(chain.as_str())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, status, count)| StatusCount {
                kind,
                status,
                count,
            })
            .collect())
    }

    /// Rows of `chain` in broadcast whose first send is older than
    /// `since`, and approved withdrawals marked as waiting.
    pub async fn stuck_and_waiting(
        &self,
        chain: chains::Chain,
        since: DateTime<Utc>,
    ) -> Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT
                 count(*) FILTER (WHERE w.status IN ('signed', 'broadcast') AND first.signed_at < $2),
                 count(*) FILTER (WHERE w.status = 'approved' AND w.waiting_reason IS NOT NULL)
             FROM withdrawals w
             LEFT JOIN LATERAL (
                 SELECT min(a.created_at) AS signed_at FROM withdrawal_attempts a WHERE a.withdrawal_id = w.id
             ) first ON true
             WHERE w.chain = $1 AND w.status IN ('signed', 'broadcast', 'approved')",
        )
        .bind(chain.as_str())
        .bind(since)
        .fetch_one(self.pool())
        .await?)
    }
}
