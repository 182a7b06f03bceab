//! The double-entry ledger on PostgreSQL.
//!
//! Every write runs in one transaction that also records the client's
//! idempotency key, so a retried request returns the stored response instead
//! of acting twice. The schema (as it stands: `migrations/schema.sql`) enforces the
//! invariants on its own: entries balance per asset at commit, user balances
//! never go negative, postings are append-only. Rust checks the same rules
//! first to fail fast with a precise error.
//!
//! Hot system accounts (custody, external, fees, suspense) keep no maintained
//! balance row, so writers never queue behind one row lock; their balance is
//! the sum of their postings. User accounts keep one row each, updated by the
//! posting trigger, which is what serializes two spenders of the same funds.

mod amount;
pub mod history;
pub mod settlement;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

pub use amount::{Amount, AmountError, SignedAmount};
pub use types::*;

use crate::{Error, Result};

/// Attempts per operation when PostgreSQL reports a serialization failure or
/// a deadlock; both mean "try again", never "wrong".
const MAX_ATTEMPTS: u32 = 8;
/// Account ids are immutable once created; the cache only needs a bound.
const ACCOUNT_CACHE_LIMIT: usize = 1_000_000;

type AssetRow = (String, String, i16, Option<String>);

fn to_asset((code, chain, decimals, contract): AssetRow) -> Result<Asset> {
    Ok(Asset {
        code,
        chain: chain.parse()?,
        decimals: u8::try_from(decimals)
            .map_err(|_| Error::Corrupt(format!("asset decimals {decimals}")))?,
        contract,
    })
}

type HoldRow = (i64, OwnerId, String, String, HoldStatus, i64, Option<i64>);

#[derive(Clone, Debug)]
pub struct Ledger {
    pool: PgPool,
    accounts: Arc<RwLock<HashMap<AccountRef, i64>>>,
}

impl Ledger {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            accounts: Arc::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Registers an asset. Registering the same asset again is a no-op;
    /// registering a different one under a taken code or contract is refused.
    pub async fn register_asset(&self, asset: &Asset) -> Result<()> {
        validate_asset(asset)?;
        sqlx::query(
            "INSERT INTO assets (code, chain, decimals, contract) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(&asset.code)
        .bind(asset.chain.as_str())
        .bind(i16::from(asset.decimals))
        .bind(&asset.contract)
        .execute(&self.pool)
        .await?;
        match self.asset(&asset.code).await? {
            Some(stored) if stored == *asset => Ok(()),
            _ => Err(Error::AssetConflict(asset.code.clone())),
        }
    }

    pub async fn asset(&self, code: &str) -> Result<Option<Asset>> {
        let row: Option<AssetRow> =
            sqlx::query_as("SELECT code, chain, decimals, contract FROM assets WHERE code = $1")
                .bind(code)
                .fetch_optional(&self.pool)
                .await?;
        row.map(to_asset).transpose()
    }

    pub async fn assets(&self) -> Result<Vec<Asset>> {
        let rows: Vec<AssetRow> =
            sqlx::query_as("SELECT code, chain, decimals, contract FROM assets ORDER BY code")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(to_asset).collect()
    }

    /// Posts an entry, once per idempotency key.
    pub async fn post(&self, key: &IdempotencyKey, entry: &NewEntry) -> Result<PostedEntry> {
        validate_entry(entry)?;
        let ids = self
            .account_ids(entry.legs.iter().map(|leg| &leg.account))
            .await?;
        let hash = request_hash(key, "post", entry)?;
        retry_transient(|| self.try_post(key, &hash, entry, &ids)).await
    }

    /// One round trip: `ledger_post` claims the key, inserts the entry and
    /// stores the response inside the statement's own transaction.
    async fn try_post(
        &self,
        key: &IdempotencyKey,
        hash: &[u8; 32],
        entry: &NewEntry,
        ids: &AccountIds,
    ) -> Result<PostedEntry> {
        let (accounts, amounts) = ordered_legs(entry, ids)?;
        let (outcome, response): (String, Option<serde_json::Value>) = sqlx::query_as(
            "SELECT outcome, response FROM ledger_post($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .bind(&hash[..])
        .bind(entry.kind)
        .bind(&entry.reference)
        .bind(&entry.metadata)
        .bind(&accounts)
        .bind(&amounts)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_db_error(e, Some(&entry.reference)))?;
        if outcome == "conflict" {
            return Err(Error::IdempotencyConflict {
                key: key.key.clone(),
            });
        }
        let response =
            response.ok_or_else(|| Error::Corrupt("idempotency key without a response".into()))?;
        serde_json::from_value(response)
            .map_err(|e| Error::Corrupt(format!("posted entry response: {e}")))
    }

    /// Posts entries whose references are unique by construction (such as
    /// `deposit:<id>:credit`) inside the caller's transaction, in one set-
    /// based statement without idempotency-key rows: the unique reference
    /// makes a second post of the same entry fail instead of acting twice.
    /// For writers (the deposit watchers) that already guard each
    /// transition with a row in the same transaction. Returns entry ids in
    /// input order.
    pub async fn post_referenced_in(
        &self,
        conn: &mut PgConnection,
        entries: &[NewEntry],
    ) -> Result<Vec<i64>> {
        for entry in entries {
            validate_entry(entry)?;
        }
        self.post_checked_referenced_in(conn, entries).await
    }

    /// [`Self::post_referenced_in`] for entries the caller already passed
    /// through [`Self::check_entry`]; the database checks them again at
    /// commit either way.
    pub(crate) async fn post_checked_referenced_in(
        &self,
        conn: &mut PgConnection,
        entries: &[NewEntry],
    ) -> Result<Vec<i64>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // Accounts are resolved on the caller's connection, inside its
        // transaction, and not cached: an id is only ever used where the
        // row is certainly visible, and one created here rolls back with
        // the entries that needed it.
        let mut accounts: Vec<AccountRef> = entries
            .iter()
            .flat_map(|e| e.legs.iter().map(|l| l.account.clone()))
            .collect();
        accounts.sort();
        accounts.dedup();
        let ids: AccountIds = upsert_accounts(&mut *conn, &accounts)
            .await?
            .into_iter()
            .collect();
        let mut kinds = Vec::with_capacity(entries.len());
        let mut references = Vec::with_capacity(entries.len());
        let mut metadata = Vec::with_capacity(entries.len());
        let mut leg_entries = Vec::new();
        let mut leg_accounts = Vec::new();
        let mut leg_amounts = Vec::new();
        let mut leg_assets = Vec::new();
        let mut leg_owners = Vec::new();
        for (n, entry) in entries.iter().enumerate() {
            kinds.push(entry.kind);
            references.push(entry.reference.as_str());
            metadata.push(&entry.metadata);
            for (account, amount, account_ref) in resolved_legs(entry, &ids)? {
                leg_entries.push(
                    i32::try_from(n + 1)
                        .map_err(|_| Error::InvalidRequest("too many entries".into()))?,
                );
                leg_accounts.push(account);
                leg_amounts.push(amount);
                leg_assets.push(account_ref.asset.as_str());
                leg_owners.push(account_ref.owner);
            }
        }
        // Postings name their accounts' asset and owner, which the database
        // checks once per statement instead of looking each one up.
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "WITH input AS (
                 SELECT * FROM unnest($1::entry_kind[], $2::text[], $3::jsonb[]) WITH ORDINALITY AS u(kind, reference, metadata, n)
             ), created AS (
                 INSERT INTO entries (kind, reference, metadata)
                 SELECT kind, reference, metadata FROM input ORDER BY n
                 RETURNING id, reference
             ), numbered AS (
                 SELECT input.n, created.id FROM created JOIN input USING (reference)
             ), legs AS (
                 INSERT INTO postings (entry_id, account_id, amount, asset, owner_id)
                 SELECT numbered.id, l.account_id, l.amount::numeric, l.asset, l.owner_id
                 FROM unnest($4::int[], $5::bigint[], $6::text[], $7::text[], $8::uuid[])
                      AS l(entry_n, account_id, amount, asset, owner_id)
                 JOIN numbered ON numbered.n = l.entry_n
             )
             SELECT n, id FROM numbered ORDER BY n",
        )
        .bind(&kinds)
        .bind(&references)
        .bind(&metadata)
        .bind(&leg_entries)
        .bind(&leg_accounts)
        .bind(&leg_amounts)
        .bind(&leg_assets)
        .bind(&leg_owners)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_db_error(e, None))?;
        if rows.len() != entries.len() {
            return Err(Error::Corrupt(format!(
                "posted {} of {} entries",
                rows.len(),
                entries.len()
            )));
        }
        Ok(rows.into_iter().map(|(_, id)| id).collect())
    }

    /// Moves `amount` of the owner's available funds to held.
    pub async fn place_hold(&self, key: &IdempotencyKey, request: &PlaceHold) -> Result<Hold> {
        if request.amount.is_zero() {
            return Err(Error::InvalidAmount(
                "a hold amount must be positive".into(),
            ));
        }
        let entry = NewEntry {
            kind: request.kind,
            reference: request.reference.clone(),
            metadata: request.metadata.clone(),
            legs: vec![
                Leg::decrease(
                    AccountRef::available(request.owner, &request.asset),
                    request.amount,
                ),
                Leg::increase(
                    AccountRef::user(request.owner, &request.asset, AccountPurpose::Held),
                    request.amount,
                ),
            ],
        };
        validate_entry(&entry)?;
        let ids = self
            .account_ids(entry.legs.iter().map(|leg| &leg.account))
            .await?;
        let hash = request_hash(key, "place_hold", request)?;
        retry_transient(|| self.try_place_hold(key, &hash, request, &entry, &ids)).await
    }

    async fn try_place_hold(
        &self,
        key: &IdempotencyKey,
        hash: &[u8; 32],
        request: &PlaceHold,
        entry: &NewEntry,
        ids: &AccountIds,
    ) -> Result<Hold> {
        let mut tx = self.pool.begin().await?;
        if let Some(replayed) = claim_key(&mut tx, key, "place_hold", hash).await? {
            return Ok(replayed);
        }
        let posted = insert_entry(&mut tx, entry, ids).await?;
        let id = insert_hold(
            &mut tx,
            request.owner,
            &request.asset,
            request.amount,
            posted.id,
        )
        .await?;
        let hold = Hold {
            id,
            owner: request.owner,
            asset: request.asset.clone(),
            amount: request.amount,
            status: HoldStatus::Held,
            place_entry_id: posted.id,
            final_entry_id: None,
        };
        complete_key(tx, key, &hold).await?;
        Ok(hold)
    }

    /// Settles a hold to its destinations, exactly once.
    pub async fn settle_hold(&self, key: &IdempotencyKey, request: &SettleHold) -> Result<Hold> {
        let hold = self
            .hold(request.hold_id)
            .await?
            .ok_or(Error::HoldNotFound(request.hold_id))?;
        let mut legs = vec![Leg::decrease(
            AccountRef::user(hold.owner, &hold.asset, AccountPurpose::Held),
            hold.amount,
        )];
        legs.extend(
            request
                .destinations
                .iter()
                .map(|(account, amount)| Leg::increase(account.clone(), *amount)),
        );
        self.finish_hold(
            key,
            "settle_hold",
            request,
            hold,
            HoldStatus::Settled,
            legs,
            request.kind,
            &request.reference,
            &request.metadata,
        )
        .await
    }

    /// Returns a hold's amount to the owner's available funds, exactly once.
    pub async fn release_hold(&self, key: &IdempotencyKey, request: &ReleaseHold) -> Result<Hold> {
        let hold = self
            .hold(request.hold_id)
            .await?
            .ok_or(Error::HoldNotFound(request.hold_id))?;
        let legs = vec![
            Leg::decrease(
                AccountRef::user(hold.owner, &hold.asset, AccountPurpose::Held),
                hold.amount,
            ),
            Leg::increase(AccountRef::available(hold.owner, &hold.asset), hold.amount),
        ];
        self.finish_hold(
            key,
            "release_hold",
            request,
            hold,
            HoldStatus::Released,
            legs,
            request.kind,
            &request.reference,
            &request.metadata,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish_hold<R: Serialize>(
        &self,
        key: &IdempotencyKey,
        operation: &'static str,
        request: &R,
        hold: Hold,
        status: HoldStatus,
        legs: Vec<Leg>,
        kind: EntryKind,
        reference: &str,
        metadata: &serde_json::Value,
    ) -> Result<Hold> {
        let entry = NewEntry {
            kind,
            reference: reference.to_owned(),
            metadata: metadata.clone(),
            legs,
        };
        validate_entry(&entry)?;
        let ids = self
            .account_ids(entry.legs.iter().map(|leg| &leg.account))
            .await?;
        let hash = request_hash(key, operation, request)?;
        retry_transient(|| self.try_finish_hold(key, operation, &hash, &hold, status, &entry, &ids))
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_finish_hold(
        &self,
        key: &IdempotencyKey,
        operation: &'static str,
        hash: &[u8; 32],
        hold: &Hold,
        status: HoldStatus,
        entry: &NewEntry,
        ids: &AccountIds,
    ) -> Result<Hold> {
        let mut tx = self.pool.begin().await?;
        if let Some(replayed) = claim_key(&mut tx, key, operation, hash).await? {
            return Ok(replayed);
        }
        // The row lock is the exactly-once gate: of two racing finishers, the
        // second waits here, then sees the hold no longer `held`.
        let current: HoldStatus =
            sqlx::query_scalar("SELECT status FROM holds WHERE id = $1 FOR UPDATE")
                .bind(hold.id)
                .fetch_one(&mut *tx)
                .await?;
        if current != HoldStatus::Held {
            return Err(Error::HoldFinalized {
                id: hold.id,
                status: current,
            });
        }
        let posted = insert_entry(&mut tx, entry, ids).await?;
        sqlx::query(
            "UPDATE holds SET status = $2, final_entry_id = $3, finalized_at = now() WHERE id = $1",
        )
        .bind(hold.id)
        .bind(status)
        .bind(posted.id)
        .execute(&mut *tx)
        .await?;
        let finished = Hold {
            status,
            final_entry_id: Some(posted.id),
            ..hold.clone()
        };
        complete_key(tx, key, &finished).await?;
        Ok(finished)
    }

    pub async fn hold(&self, id: i64) -> Result<Option<Hold>> {
        let row: Option<HoldRow> = sqlx::query_as(
            "SELECT id, owner_id, asset, amount::text, status, place_entry_id, final_entry_id FROM holds WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(
            |(id, owner, asset, amount, status, place_entry_id, final_entry_id)| {
                Ok(Hold {
                    id,
                    owner,
                    asset,
                    amount: parse_stored(&amount)?,
                    status,
                    place_entry_id,
                    final_entry_id,
                })
            },
        )
        .transpose()
    }

    /// The owner's balances in every asset they hold accounts in, read from
    /// the maintained rows (O(assets), no posting scan).
    pub async fn balances(&self, owner: OwnerId) -> Result<Vec<Balance>> {
        let rows: Vec<(String, AccountPurpose, String)> = sqlx::query_as(
            "SELECT asset, purpose, balance::text FROM balances WHERE owner_id = $1 ORDER BY asset",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        let mut by_asset: BTreeMap<String, Balance> = BTreeMap::new();
        for (asset, purpose, amount) in rows {
            let amount = parse_stored(&amount)?;
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

    /// The available balances of these (owner, asset) pairs, locked until
    /// the caller's transaction ends, in account order as the posting
    /// trigger locks them, so the caller can plan postings that must not
    /// overdraw them. Pairs without an account are zero.
    pub async fn available_for_update(
        &self,
        conn: &mut PgConnection,
        pairs: &[(OwnerId, String)],
    ) -> Result<HashMap<(OwnerId, String), Amount>> {
        let owners: Vec<OwnerId> = pairs.iter().map(|(o, _)| *o).collect();
        let assets: Vec<&str> = pairs.iter().map(|(_, a)| a.as_str()).collect();
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
        let mut out: HashMap<(OwnerId, String), Amount> =
            pairs.iter().map(|p| (p.clone(), Amount::ZERO)).collect();
        for (owner, asset, balance) in rows {
            let balance = Amount::parse(&balance)
                .map_err(|e| Error::Corrupt(format!("balance {balance}: {e}")))?;
            out.insert((owner, asset), balance);
        }
        Ok(out)
    }

    /// Checks an entry against the rules the database enforces, without
    /// writing it: for batch writers that set refused items aside instead
    /// of failing the batch.
    pub fn check_entry(entry: &NewEntry) -> Result<()> {
        validate_entry(entry)
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

    /// One entry of the owner's history; `None` if it did not touch their accounts.
    pub async fn history_item(&self, owner: OwnerId, entry_id: i64) -> Result<Option<HistoryItem>> {
        history::item(&self.pool, owner, entry_id).await
    }

    pub async fn history(
        &self,
        owner: OwnerId,
        filter: &HistoryFilter,
        page_size: u32,
        cursor: Option<i64>,
    ) -> Result<HistoryPage> {
        history::page(&self.pool, owner, filter, page_size, cursor).await
    }

    /// Resolves (creating if needed) account ids. Creation commits on its own:
    /// an account that exists without postings is harmless, and only
    /// committed ids may enter the cache.
    async fn account_ids<'a>(
        &self,
        accounts: impl Iterator<Item = &'a AccountRef>,
    ) -> Result<HashMap<AccountRef, i64>> {
        let mut ids = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self
                .accounts
                .read()
                .map_err(|_| Error::Corrupt("account cache poisoned".into()))?;
            for account in accounts {
                match cache.get(account) {
                    Some(id) => {
                        ids.insert(account.clone(), *id);
                    }
                    None => missing.push(account.clone()),
                }
            }
        }
        missing.sort();
        missing.dedup();
        let created = match missing.len() {
            0 => Vec::new(),
            1 => vec![(missing[0].clone(), self.ensure_account(&missing[0]).await?)],
            _ => self.ensure_accounts(&missing).await?,
        };
        let mut cache = self
            .accounts
            .write()
            .map_err(|_| Error::Corrupt("account cache poisoned".into()))?;
        if cache.len() + created.len() >= ACCOUNT_CACHE_LIMIT {
            cache.clear();
        }
        for (account, id) in created {
            ids.insert(account.clone(), id);
            cache.insert(account, id);
        }
        Ok(ids)
    }

    /// [`Self::ensure_account`] for many accounts, on a pool connection.
    async fn ensure_accounts(&self, accounts: &[AccountRef]) -> Result<Vec<(AccountRef, i64)>> {
        let mut conn = self.pool.acquire().await?;
        upsert_accounts(&mut conn, accounts).await
    }

    async fn ensure_account(&self, account: &AccountRef) -> Result<i64> {
        if account.purpose.is_user() != account.owner.is_some() {
            return Err(Error::InvalidRequest(format!(
                "a {:?} account {} an owner",
                account.purpose,
                if account.purpose.is_user() {
                    "needs"
                } else {
                    "cannot have"
                }
            )));
        }
        let mut tx = self.pool.begin().await?;
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO accounts (owner_id, asset, purpose) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(account.owner)
        .bind(&account.asset)
        .bind(account.purpose)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| map_db_error(e, None))?;
        let id = match inserted {
            Some(id) => {
                if let Some(owner) = account.owner {
                    sqlx::query("INSERT INTO balances (account_id, owner_id, asset, purpose) VALUES ($1, $2, $3, $4)")
                        .bind(id)
                        .bind(owner)
                        .bind(&account.asset)
                        .bind(account.purpose)
                        .execute(&mut *tx)
                        .await?;
                }
                id
            }
            None => {
                sqlx::query_scalar(
                    "SELECT id FROM accounts
                     WHERE (owner_id = $1 OR (owner_id IS NULL AND $1::uuid IS NULL)) AND asset = $2 AND purpose = $3",
                )
                .bind(account.owner)
                .bind(&account.asset)
                .bind(account.purpose)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        Ok(id)
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
    if let Some(bad) = accounts
        .iter()
        .find(|a| a.purpose.is_user() != a.owner.is_some())
    {
        return Err(Error::InvalidRequest(format!(
            "a {:?} account {} an owner",
            bad.purpose,
            if bad.purpose.is_user() {
                "needs"
            } else {
                "cannot have"
            }
        )));
    }
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
        let found: HashMap<AccountRef, i64> = rows
            .into_iter()
            .map(|(id, owner, asset, purpose)| {
                (
                    AccountRef {
                        owner,
                        asset,
                        purpose,
                    },
                    id,
                )
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

type AccountIds = HashMap<AccountRef, i64>;

/// Runs `attempt` again while PostgreSQL reports a serialization failure or a
/// deadlock: both mean the transaction did nothing and may simply run again.
pub(crate) async fn retry_transient<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(err) if err.is_transient() && tries < MAX_ATTEMPTS => {
                tracing::debug!(error = %err, tries, "retrying ledger transaction");
                tokio::time::sleep(Duration::from_millis(u64::from(tries) * 5)).await;
            }
            other => return other,
        }
    }
}

/// Claims the idempotency key inside `tx`. A concurrent request with the same
/// key waits on the key's row until the first commits, then finds it: the
/// stored response is returned (and `tx` rolled back) if the request is the
/// same, and the request refused if it differs. A claim rolls back with a
/// failed effect, so a refused request leaves its key unused.
async fn claim_key<R: DeserializeOwned>(
    tx: &mut Transaction<'static, Postgres>,
    key: &IdempotencyKey,
    operation: &str,
    hash: &[u8; 32],
) -> Result<Option<R>> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, operation, request_hash) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(&key.scope)
    .bind(&key.key)
    .bind(operation)
    .bind(&hash[..])
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(None);
    }
    let (stored_hash, response): (Vec<u8>, Option<serde_json::Value>) = sqlx::query_as(
        "SELECT request_hash, response FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(&key.scope)
    .bind(&key.key)
    .fetch_one(&mut **tx)
    .await?;
    if stored_hash != hash {
        return Err(Error::IdempotencyConflict {
            key: key.key.clone(),
        });
    }
    let response =
        response.ok_or_else(|| Error::Corrupt("idempotency key without a response".into()))?;
    serde_json::from_value(response)
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("stored idempotent response: {e}")))
}

/// Stores the response under the claimed key and commits.
async fn complete_key<R: Serialize>(
    mut tx: Transaction<'static, Postgres>,
    key: &IdempotencyKey,
    response: &R,
) -> Result<()> {
    let stored =
        serde_json::to_value(response).map_err(|e| Error::Corrupt(format!("response: {e}")))?;
    sqlx::query("UPDATE idempotency_keys SET response = $3 WHERE scope = $1 AND key = $2")
        .bind(&key.scope)
        .bind(&key.key)
        .bind(stored)
        .execute(&mut *tx)
        .await?;
    tx.commit().await.map_err(|e| map_db_error(e, None))
}

fn request_hash<R: Serialize>(
    key: &IdempotencyKey,
    operation: &str,
    request: &R,
) -> Result<[u8; 32]> {
    validate_key(key)?;
    hash_request(operation, request)
}

/// Records a hold placed by the entry `place_entry_id`.
async fn insert_hold(
    tx: &mut PgConnection,
    owner: OwnerId,
    asset: &str,
    amount: Amount,
    place_entry_id: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO holds (owner_id, asset, amount, place_entry_id) VALUES ($1, $2, $3::numeric, $4) RETURNING id",
    )
    .bind(owner)
    .bind(asset)
    .bind(amount.to_string())
    .bind(place_entry_id)
    .fetch_one(&mut *tx)
    .await?)
}

/// The legs as parallel arrays, in account-id order for a stable posting
/// order (the posting trigger locks balance rows in that order itself).
fn ordered_legs(entry: &NewEntry, ids: &AccountIds) -> Result<(Vec<i64>, Vec<String>)> {
    Ok(resolved_legs(entry, ids)?
        .into_iter()
        .map(|(id, amount, _)| (id, amount))
        .unzip())
}

/// Each leg's account id, amount and account, in account-id order.
fn resolved_legs<'a>(
    entry: &'a NewEntry,
    ids: &AccountIds,
) -> Result<Vec<(i64, String, &'a AccountRef)>> {
    let mut legs: Vec<(i64, String, &AccountRef)> = entry
        .legs
        .iter()
        .map(|leg| {
            let account = ids
                .get(&leg.account)
                .copied()
                .ok_or_else(|| Error::Corrupt("unresolved account".into()))?;
            Ok((account, leg.amount.to_string(), &leg.account))
        })
        .collect::<Result<_>>()?;
    legs.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok(legs)
}

/// Inserts the entry and its postings in one statement, inside `tx`.
async fn insert_entry(
    tx: &mut PgConnection,
    entry: &NewEntry,
    ids: &AccountIds,
) -> Result<PostedEntry> {
    let (accounts, amounts) = ordered_legs(entry, ids)?;
    let (id, created_at): (i64, DateTime<Utc>) = sqlx::query_as(
        "WITH entry AS (
             INSERT INTO entries (kind, reference, metadata) VALUES ($1, $2, $3) RETURNING id, created_at
         ), legs AS (
             INSERT INTO postings (entry_id, account_id, amount)
             SELECT entry.id, leg.account_id, leg.amount::numeric
             FROM entry, unnest($4::bigint[], $5::text[]) WITH ORDINALITY AS leg(account_id, amount, position)
             ORDER BY leg.position
         )
         SELECT id, created_at FROM entry",
    )
    .bind(entry.kind)
    .bind(&entry.reference)
    .bind(&entry.metadata)
    .bind(&accounts)
    .bind(&amounts)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| map_db_error(e, Some(&entry.reference)))?;
    Ok(PostedEntry {
        id,
        kind: entry.kind,
        reference: entry.reference.clone(),
        created_at,
    })
}

fn hash_request<R: Serialize>(operation: &str, request: &R) -> Result<[u8; 32]> {
    let body = serde_json::to_vec(request)
        .map_err(|e| Error::InvalidRequest(format!("unserializable request: {e}")))?;
    let mut hasher = Sha256::new();
    hasher.update(operation.as_bytes());
    hasher.update([0]);
    hasher.update(&body);
    Ok(hasher.finalize().into())
}

fn parse_stored(text: &str) -> Result<Amount> {
    Amount::parse(text).map_err(|e| Error::Corrupt(format!("stored amount {text}: {e}")))
}

fn validate_key(key: &IdempotencyKey) -> Result<()> {
    if key.key.is_empty() || key.key.len() > 200 {
        return Err(Error::InvalidRequest(
            "idempotency key must be 1 to 200 bytes".into(),
        ));
    }
    if key.scope.is_empty() {
        return Err(Error::InvalidRequest(
            "idempotency scope must not be empty".into(),
        ));
    }
    Ok(())
}

fn validate_asset(asset: &Asset) -> Result<()> {
    let code_ok = (2..=16).contains(&asset.code.len())
        && asset
            .code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !code_ok {
        return Err(Error::InvalidRequest(format!(
            "asset code `{}` must be 2 to 16 characters of A-Z and 0-9",
            asset.code
        )));
    }
    if asset.decimals > 38 {
        return Err(Error::InvalidRequest(format!(
            "asset decimals {} exceed 38",
            asset.decimals
        )));
    }
    Ok(())
}

/// Checks what the database will check again at commit, for a precise error.
fn validate_entry(entry: &NewEntry) -> Result<()> {
    if entry.reference.is_empty() || entry.reference.len() > 200 {
        return Err(Error::InvalidRequest(
            "entry reference must be 1 to 200 bytes".into(),
        ));
    }
    if entry.legs.len() < 2 {
        return Err(Error::Unbalanced(format!(
            "entry `{}` needs at least two legs",
            entry.reference
        )));
    }
    let mut sums: BTreeMap<&str, (Amount, Amount)> = BTreeMap::new();
    for leg in &entry.legs {
        if leg.amount.magnitude.is_zero() {
            return Err(Error::InvalidAmount("a leg amount must not be zero".into()));
        }
        let (up, down) = sums.entry(leg.account.asset.as_str()).or_default();
        let side = if leg.amount.negative { down } else { up };
        *side = side
            .checked_add(leg.amount.magnitude)
            .ok_or_else(|| Error::InvalidAmount("leg amounts overflow".into()))?;
    }
    match sums.into_iter().find(|(_, (up, down))| up != down) {
        Some((asset, _)) => Err(Error::Unbalanced(format!(
            "entry `{}` does not sum to zero in {asset}",
            entry.reference
        ))),
        None => Ok(()),
    }
}

/// Turns constraint violations into the errors callers act on.
fn map_db_error(err: sqlx::Error, reference: Option<&str>) -> Error {
    if let sqlx::Error::Database(db) = &err {
        match db.constraint() {
            Some("balances_non_negative") => return Error::InsufficientFunds,
            Some("entries_reference_unique") => {
                return Error::DuplicateReference(reference.unwrap_or_default().to_owned());
            }
            Some("entries_balanced") => return Error::Unbalanced(db.message().to_owned()),
            Some("accounts_asset_fkey") => return Error::UnknownAsset(db.message().to_owned()),
            _ => {}
        }
    }
    Error::Database(err)
}
