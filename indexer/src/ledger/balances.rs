//! Balances: user accounts keep one maintained row each (updated only by
//! the posting trigger), read in O(assets); system accounts keep none, so
//! their balance is the sum of their postings.

use std::collections::{BTreeMap, HashMap};

use sqlx::PgConnection;

use super::{AccountPurpose, AccountRef, Amount, Balance, Ledger, OwnerId, SignedAmount};
use crate::{Error, Result};

impl Ledger {
    /// The owner's balances in every asset they hold accounts in, read from
    /// the maintained rows (no posting scan).
    pub async fn balances(&self, owner: OwnerId) -> Result<Vec<Balance>> {
        let rows: Vec<(String, AccountPurpose, String)> = sqlx::query_as(
            "SELECT asset, purpose, balance::text FROM balances WHERE owner_id = $1 ORDER BY asset",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        let mut by_asset: BTreeMap<String, Balance> = BTreeMap::new();
        for (asset, purpose, amount) in rows {
            let amount = Amount::from_stored(&amount)?;
            let balance = by_asset.entry(asset.clone()).or_insert_with(|| Balance {
                asset,
                ..Balance::default()
            });
            match purpose {
                AccountPurpose::Available => balance.available = amount,
                AccountPurpose::Pending => balance.pending = amount,
                AccountPurpose::Held => balance.held = amount,
                other => {
                    return Err(Error::Corrupt(format!(
                        "balance row for a {other:?} account"
                    )));
                }
            }
        }
        Ok(by_asset.into_values().collect())
    }

    /// The owner's balance in one asset (zero if they have no accounts in it).
    pub async fn balance(&self, owner: OwnerId, asset: &str) -> Result<Balance> {
        Ok(self
            .balances(owner)
            .await?
            .into_iter()
            .find(|b| b.asset == asset)
            .unwrap_or_else(|| Balance {
                asset: asset.to_owned(),
                ..Balance::default()
            }))
    }

    /// How much of each wanted `(owner, asset, amount)` the owner's available
    /// balance can give, in order: wants on the same balance draw on what
    /// the earlier ones left, so together they never exceed it. One query
    /// for all of them; the balance rows stay locked (in account order, as
    /// the posting trigger locks them) until the caller's transaction ends,
    /// so postings planned from the answer cannot overdraw. An owner without
    /// an account in the asset has nothing to give.
    pub async fn take_available(
        &self,
        conn: &mut PgConnection,
        wanted: &[(OwnerId, &str, Amount)],
    ) -> Result<Vec<Amount>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut pairs: Vec<(OwnerId, &str)> = wanted.iter().map(|(o, a, _)| (*o, *a)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        let (owners, assets): (Vec<OwnerId>, Vec<&str>) = pairs.into_iter().unzip();
        let rows: Vec<(OwnerId, String, String)> = sqlx::query_as(
            "SELECT a.owner_id, a.asset, b.balance::text
             FROM unnest($1::uuid[], $2::text[]) AS p(owner_id, asset)
             JOIN accounts a ON a.owner_id = p.owner_id AND a.asset = p.asset AND a.purpose = 'available'
             JOIN balances b ON b.account_id = a.id
             ORDER BY b.account_id FOR UPDATE OF b",
        )
        .bind(&owners)
        .bind(&assets)
        .fetch_all(&mut *conn)
        .await?;
        let mut left: HashMap<(OwnerId, String), Amount> = HashMap::new();
        for (owner, asset, balance) in rows {
            left.insert((owner, asset), Amount::from_stored(&balance)?);
        }
        wanted
            .iter()
            .map(|(owner, asset, amount)| {
                let Some(balance) = left.get_mut(&(*owner, (*asset).to_owned())) else {
                    return Ok(Amount::ZERO);
                };
                let taken = (*balance).min(*amount);
                *balance = balance
                    .checked_sub(taken)
                    .ok_or_else(|| Error::Corrupt("available arithmetic".into()))?;
                Ok(taken)
            })
            .collect()
    }

    /// Any account's balance as the sum of its postings; for system accounts
    /// this is the only balance there is.
    pub async fn account_balance(&self, account: &AccountRef) -> Result<SignedAmount> {
        let sum: String = sqlx::query_scalar(
            // Spelled out rather than IS NOT DISTINCT FROM, so the account
            // and posting indexes (partial on owner_id) serve it.
            "SELECT coalesce(sum(p.amount), 0)::text FROM accounts a
             JOIN postings p ON p.account_id = a.id
                  AND (p.owner_id = $1 OR (p.owner_id IS NULL AND $1::uuid IS NULL))
             WHERE (a.owner_id = $1 OR (a.owner_id IS NULL AND $1::uuid IS NULL))
                   AND a.asset = $2 AND a.purpose = $3",
        )
        .bind(account.owner)
        .bind(&account.asset)
        .bind(account.purpose)
        .fetch_one(&self.pool)
        .await?;
        SignedAmount::parse(&sum).map_err(|e| Error::Corrupt(format!("posting sum {sum}: {e}")))
    }
}
