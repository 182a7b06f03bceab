//! Account resolution: writers name accounts by owner, asset and purpose
//! ([`AccountRef`]); postings need their ids. There is one way to create
//! accounts, [`upsert_accounts`], and a cache in front of it for the writers
//! that resolve outside their transaction.

use std::collections::HashMap;
use std::sync::RwLock;

use sqlx::PgConnection;

use super::retry::MAX_ATTEMPTS;
use super::validation::{map_db_error, validate_owner};
use super::{AccountPurpose, AccountRef, Ledger};
use crate::{Error, Result};

/// Account ids are immutable once created; the cache only needs a bound.
const ACCOUNT_CACHE_LIMIT: usize = 1_000_000;

pub(super) type AccountIds = HashMap<AccountRef, i64>;

/// Ids of committed accounts. Only committed ids may enter: an id from a
/// transaction that rolls back would name no account.
#[derive(Debug, Default)]
pub(super) struct AccountCache(RwLock<AccountIds>);

impl Ledger {
    /// Resolves account ids through the cache, creating missing accounts in
    /// a statement of their own: an account without postings is harmless,
    /// and its id is committed before it is cached.
    /// Takes a slice, not an iterator: an iterator of closures held in the
    /// future would keep it from being provably `Send`.
    pub(crate) async fn account_ids(&self, accounts: &[&AccountRef]) -> Result<AccountIds> {
        let poisoned = || Error::Corrupt("account cache poisoned".into());
        let mut ids = AccountIds::new();
        let mut missing = Vec::new();
        {
            let cache = self.accounts.0.read().map_err(|_| poisoned())?;
            for account in accounts {
                match cache.get(*account) {
                    Some(id) => {
                        ids.insert((*account).clone(), *id);
                    }
                    None => missing.push((*account).clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(ids);
        }
        missing.sort();
        missing.dedup();
        let mut conn = self.pool.acquire().await?;
        let created = upsert_accounts(&mut conn, &missing).await?;
        let mut cache = self.accounts.0.write().map_err(|_| poisoned())?;
        if cache.len() + created.len() >= ACCOUNT_CACHE_LIMIT {
            cache.clear();
        }
        for (account, id) in created {
            ids.insert(account.clone(), id);
            cache.insert(account, id);
        }
        Ok(ids)
    }

    /// Resolves account ids on the caller's connection, inside its
    /// transaction: cached ids are of committed accounts, which every
    /// statement of a read-committed transaction sees; the rest are
    /// resolved here and never cached, since an account created here rolls
    /// back with the entries that needed it.
    pub(crate) async fn account_ids_in(
        &self,
        conn: &mut PgConnection,
        mut accounts: Vec<AccountRef>,
    ) -> Result<AccountIds> {
        accounts.sort();
        accounts.dedup();
        let mut ids = AccountIds::new();
        {
            let cache = self
                .accounts
                .0
                .read()
                .map_err(|_| Error::Corrupt("account cache poisoned".into()))?;
            accounts.retain(|account| match cache.get(account) {
                Some(id) => {
                    ids.insert(account.clone(), *id);
                    false
                }
                None => true,
            });
        }
        if !accounts.is_empty() {
            ids.extend(upsert_accounts(conn, &accounts).await?);
        }
        Ok(ids)
    }
}

/// Creates the accounts that do not exist yet (with a balance row for user
/// accounts) and returns every id, on `conn`: inside a caller's transaction
/// the ids are visible to its next statements and roll back with it. A
/// round that races another creator resolves the rest in the next one.
async fn upsert_accounts(
    conn: &mut PgConnection,
    accounts: &[AccountRef],
) -> Result<Vec<(AccountRef, i64)>> {
    accounts.iter().try_for_each(validate_owner)?;
    let mut resolved = Vec::with_capacity(accounts.len());
    let mut pending: Vec<&AccountRef> = accounts.iter().collect();
    for _ in 0..MAX_ATTEMPTS {
        let owners: Vec<Option<uuid::Uuid>> = pending.iter().map(|a| a.owner).collect();
        let assets: Vec<&str> = pending.iter().map(|a| a.asset.as_str()).collect();
        let purposes: Vec<AccountPurpose> = pending.iter().map(|a| a.purpose).collect();
        // Existing accounts are matched by two joins, not one on IS NOT
        // DISTINCT FROM, which no index serves: every call would scan them all.
        let rows: Vec<(i64, Option<uuid::Uuid>, String, AccountPurpose)> = sqlx::query_as(
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::account_purpose[]) AS i(owner_id, asset, purpose)
             ), created AS (
                 INSERT INTO accounts (owner_id, asset, purpose) SELECT owner_id, asset, purpose FROM input
                 ON CONFLICT DO NOTHING RETURNING id, owner_id, asset, purpose
             ), user_balances AS (
                 INSERT INTO balances (account_id, owner_id, asset, purpose)
                 SELECT id, owner_id, asset, purpose FROM created WHERE owner_id IS NOT NULL
             )
             SELECT id, owner_id, asset, purpose FROM created
             UNION ALL
             SELECT a.id, a.owner_id, a.asset, a.purpose FROM accounts a
             JOIN input i ON a.owner_id = i.owner_id AND a.asset = i.asset AND a.purpose = i.purpose
             UNION ALL
             SELECT a.id, a.owner_id, a.asset, a.purpose FROM accounts a
             JOIN input i ON a.owner_id IS NULL AND i.owner_id IS NULL AND a.asset = i.asset AND a.purpose = i.purpose",
        )
        .bind(&owners)
        .bind(&assets)
        .bind(&purposes)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_db_error(e, None))?;
        let found: AccountIds = rows
            .into_iter()
            .map(|(id, owner, asset, purpose)| {
                let account = AccountRef {
                    owner,
                    asset,
                    purpose,
                };
                (account, id)
            })
            .collect();
        pending.retain(|account| match found.get(*account) {
            Some(id) => {
                resolved.push(((*account).clone(), *id));
                false
            }
            None => true,
        });
        if pending.is_empty() {
            return Ok(resolved);
        }
    }
    Err(Error::Corrupt(format!(
        "{} accounts could not be resolved",
        pending.len()
    )))
}
