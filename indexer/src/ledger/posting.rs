//! Posting: the one statement that writes entries and their postings, for
//! API posts, held entries and deposit batches alike.
//!
//! Every writer first turns its entry into a [`Prepared`] one (checked, its
//! accounts resolved), or hands a batch to [`Ledger::post_referenced_in`];
//! both end in [`insert_entries`].

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::accounts::AccountIds;
use super::idempotency::{CLAIM_STEP, Claim};
use super::retry::retry_transient;
use super::validation::{map_db_error, validate_entry};
use super::{AccountRef, IdempotencyKey, Ledger, NewEntry, PostedEntry};
use crate::{Error, Result};

/// Entries with their ids drawn up front (the claim's response names them),
/// the optional claim, the entries if there is no claim or it was won, and
/// their legs. Postings name their accounts' asset and owner, which the
/// database checks once per statement instead of looking each one up; they
/// go in leg order, so posting ids follow it.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH input AS (
             SELECT nextval('entries_id_seq'::regclass) AS id, u.*
             FROM unnest($1::entry_kind[], $2::text[], $3::jsonb[]) WITH ORDINALITY AS u(kind, reference, metadata, n)
         ), {CLAIM_STEP}, created AS (
             INSERT INTO entries (id, kind, reference, metadata) OVERRIDING SYSTEM VALUE
             SELECT id, kind, reference, metadata FROM input
             WHERE $9::text IS NULL OR EXISTS (SELECT FROM claim)
             ORDER BY n
             RETURNING id, created_at
         ), legs AS (
             INSERT INTO postings (entry_id, account_id, amount, asset, owner_id)
             SELECT created.id, l.account_id, l.amount::numeric, l.asset, l.owner_id
             FROM unnest($4::int[], $5::bigint[], $6::text[], $7::text[], $8::uuid[]) WITH ORDINALITY
                  AS l(entry_n, account_id, amount, asset, owner_id, position)
             JOIN input ON input.n = l.entry_n
             JOIN created ON created.id = input.id
             ORDER BY l.position
         )
         SELECT created.id, created.created_at FROM created JOIN input USING (id) ORDER BY input.n"
    )
});

/// An entry that passed the ledger's checks, with its accounts' ids.
pub(crate) struct Prepared<'a> {
    entry: &'a NewEntry,
    ids: AccountIds,
}

impl Ledger {
    /// Checks `entry` and resolves its accounts (cached, committed on their
    /// own), ready to insert in any later transaction.
    pub(crate) async fn prepare<'a>(&self, entry: &'a NewEntry) -> Result<Prepared<'a>> {
        validate_entry(entry)?;
        let accounts: Vec<&AccountRef> = entry.legs.iter().map(|leg| &leg.account).collect();
        let ids = self.account_ids(&accounts).await?;
        Ok(Prepared { entry, ids })
    }

    /// [`Self::prepare`] on the caller's connection, bypassing the cache
    /// (see [`Self::account_ids_in`]): for writers whose transaction is
    /// already open, so they never wait for a second connection.
    pub(crate) async fn prepare_in<'a>(
        &self,
        conn: &mut PgConnection,
        entry: &'a NewEntry,
    ) -> Result<Prepared<'a>> {
        validate_entry(entry)?;
        let accounts = entry.legs.iter().map(|leg| leg.account.clone()).collect();
        let ids = self.account_ids_in(conn, accounts).await?;
        Ok(Prepared { entry, ids })
    }

    /// Inserts a prepared entry inside the caller's transaction.
    pub(crate) async fn insert_in(
        &self,
        conn: &mut PgConnection,
        prepared: &Prepared<'_>,
    ) -> Result<PostedEntry> {
        insert_entries(
            conn,
            std::slice::from_ref(prepared.entry),
            &prepared.ids,
            None,
        )
        .await?
        .pop()
        .ok_or_else(|| Error::Corrupt("entry not inserted".into()))
    }

    /// Posts an entry, once per idempotency key, in one round trip: the
    /// claim is a step of the insert statement, which commits on its own.
    pub async fn post(&self, key: &IdempotencyKey, entry: &NewEntry) -> Result<PostedEntry> {
        let prepared = self.prepare(entry).await?;
        let claim = Claim::new(key, "post", entry)?;
        retry_transient(|| async {
            let mut conn = self.pool.acquire().await?;
            let posted = insert_entries(
                &mut conn,
                std::slice::from_ref(entry),
                &prepared.ids,
                Some(&claim),
            )
            .await?;
            match posted.into_iter().next() {
                Some(posted) => Ok(posted),
                // The claim was lost: the key's first request won it.
                None => claim.replay(&mut conn).await,
            }
        })
        .await
    }

    /// Posts entries whose references are unique by construction (such as
    /// `deposit:<id>:credit`) inside the caller's transaction, in one
    /// statement without idempotency keys: the unique reference makes a
    /// second post of the same entry fail instead of acting twice. For
    /// writers (the deposit watchers) that already guard each transition
    /// with a row in the same transaction. Returns entry ids in input order.
    pub async fn post_referenced_in(
        &self,
        conn: &mut PgConnection,
        entries: &[NewEntry],
    ) -> Result<Vec<i64>> {
        entries.iter().try_for_each(validate_entry)?;
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
        let accounts = entries
            .iter()
            .flat_map(|e| e.legs.iter().map(|l| l.account.clone()))
            .collect();
        let ids = self.account_ids_in(conn, accounts).await?;
        let posted = insert_entries(conn, entries, &ids, None).await?;
        Ok(posted.into_iter().map(|p| p.id).collect())
    }
}

/// Inserts `entries` in one statement on `conn`, each entry's legs in
/// account-id order (the posting trigger locks balance rows in that order
/// too). With a claim (one entry only), nothing is inserted if the claim was
/// lost, and the result is empty.
async fn insert_entries(
    conn: &mut PgConnection,
    entries: &[NewEntry],
    ids: &AccountIds,
    claim: Option<&Claim<'_>>,
) -> Result<Vec<PostedEntry>> {
    if claim.is_some() && entries.len() != 1 {
        return Err(Error::Corrupt("a claim covers exactly one entry".into()));
    }
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
        let entry_n =
            i32::try_from(n + 1).map_err(|_| Error::InvalidRequest("too many entries".into()))?;
        let mut legs = entry
            .legs
            .iter()
            .map(|leg| {
                let id = ids
                    .get(&leg.account)
                    .copied()
                    .ok_or_else(|| Error::Corrupt("unresolved account".into()))?;
                Ok((id, leg.amount.to_string(), &leg.account))
            })
            .collect::<Result<Vec<_>>>()?;
        legs.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (account, amount, account_ref) in legs {
            leg_entries.push(entry_n);
            leg_accounts.push(account);
            leg_amounts.push(amount);
            leg_assets.push(account_ref.asset.as_str());
            leg_owners.push(account_ref.owner);
        }
    }
    let rows: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(INSERT.as_str())
        .bind(&kinds)
        .bind(&references)
        .bind(&metadata)
        .bind(&leg_entries)
        .bind(&leg_accounts)
        .bind(&leg_amounts)
        .bind(&leg_assets)
        .bind(&leg_owners)
        .bind(claim.map(|c| c.key.scope.as_str()))
        .bind(claim.map(|c| c.key.key.as_str()))
        .bind(claim.map(|c| c.operation))
        .bind(claim.map(|c| &c.hash[..]))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| {
            map_db_error(
                e,
                references.first().filter(|_| entries.len() == 1).copied(),
            )
        })?;
    if rows.len() != entries.len() && !(claim.is_some() && rows.is_empty()) {
        return Err(Error::Corrupt(format!(
            "posted {} of {} entries",
            rows.len(),
            entries.len()
        )));
    }
    Ok(rows
        .into_iter()
        .zip(entries)
        .map(|((id, created_at), entry)| PostedEntry {
            id,
            kind: entry.kind,
            reference: entry.reference.clone(),
            created_at,
        })
        .collect())
}
