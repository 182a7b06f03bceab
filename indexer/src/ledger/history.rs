//! A user's history: entries that touched their accounts, newest first, with
//! keyset pagination on the entry id.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{
    AccountPurpose, BalanceChange, EntryKind, HistoryFilter, HistoryItem, HistoryPage, Ledger,
    OwnerId, SignedAmount,
};
use crate::{Error, Result};

pub const MAX_PAGE_SIZE: u32 = 500;

type Row = (
    i64,
    EntryKind,
    String,
    serde_json::Value,
    DateTime<Utc>,
    String,
    AccountPurpose,
    String,
);

pub async fn page(
    pool: &PgPool,
    owner: OwnerId,
    filter: &HistoryFilter,
    page_size: u32,
    cursor: Option<i64>,
) -> Result<HistoryPage> {
    if page_size == 0 || page_size > MAX_PAGE_SIZE {
        return Err(Error::InvalidRequest(format!(
            "page size must be 1 to {MAX_PAGE_SIZE}, not {page_size}"
        )));
    }
    // One more than asked for tells whether another page exists.
    let rows: Vec<Row> = sqlx::query_as(
        "WITH page AS (
             SELECT DISTINCT p.entry_id FROM postings p
             JOIN entries e ON e.id = p.entry_id
             WHERE p.owner_id = $1
               AND ($2::text IS NULL OR p.asset = $2)
               AND ($3::entry_kind IS NULL OR e.kind = $3)
               AND ($4::bigint IS NULL OR p.entry_id < $4)
             ORDER BY p.entry_id DESC
             LIMIT $5
         )
         SELECT e.id, e.kind, e.reference, e.metadata, e.created_at, p.asset, a.purpose, p.amount::text
         FROM page
         JOIN entries e ON e.id = page.entry_id
         JOIN postings p ON p.entry_id = e.id AND p.owner_id = $1
         JOIN accounts a ON a.id = p.account_id
         ORDER BY e.id DESC, p.id",
    )
    .bind(owner)
    .bind(&filter.asset)
    .bind(filter.kind)
    .bind(cursor)
    .bind(i64::from(page_size) + 1)
    .fetch_all(pool)
    .await?;

    let mut items = group(rows)?;
    let next_cursor = trim_page(&mut items, page_size, |item| item.entry_id);
    Ok(HistoryPage { items, next_cursor })
}

/// Cuts a page fetched with one row more than `page_size` back to size, and
/// returns the cursor of the next page (its last item's) if that row came.
pub(crate) fn trim_page<T, C>(
    items: &mut Vec<T>,
    page_size: u32,
    cursor: impl Fn(&T) -> C,
) -> Option<C> {
    let more = items.len() > page_size as usize;
    items.truncate(page_size as usize);
    items.last().filter(|_| more).map(cursor)
}

impl Ledger {
    /// One entry of the owner's history; `None` if it did not touch their accounts.
    pub async fn history_item(&self, owner: OwnerId, entry_id: i64) -> Result<Option<HistoryItem>> {
        item(&self.pool, owner, entry_id).await
    }

    pub async fn history(
        &self,
        owner: OwnerId,
        filter: &HistoryFilter,
        page_size: u32,
        cursor: Option<i64>,
    ) -> Result<HistoryPage> {
        page(&self.pool, owner, filter, page_size, cursor).await
    }
}

/// One entry, if it touched `owner`'s accounts.
pub async fn item(pool: &PgPool, owner: OwnerId, entry_id: i64) -> Result<Option<HistoryItem>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT e.id, e.kind, e.reference, e.metadata, e.created_at, p.asset, a.purpose, p.amount::text
         FROM entries e
         JOIN postings p ON p.entry_id = e.id AND p.owner_id = $1
         JOIN accounts a ON a.id = p.account_id
         WHERE e.id = $2
         ORDER BY p.id",
    )
    .bind(owner)
    .bind(entry_id)
    .fetch_all(pool)
    .await?;
    Ok(group(rows)?.into_iter().next())
}

/// Folds posting rows (ordered by entry id descending, then posting id) into
/// one item per entry, newest first.
fn group(rows: Vec<Row>) -> Result<Vec<HistoryItem>> {
    let mut items: BTreeMap<std::cmp::Reverse<i64>, HistoryItem> = BTreeMap::new();
    for (id, kind, reference, metadata, created_at, asset, purpose, amount) in rows {
        let amount = SignedAmount::parse(&amount)
            .map_err(|e| Error::Corrupt(format!("posting amount {amount}: {e}")))?;
        items
            .entry(std::cmp::Reverse(id))
            .or_insert_with(|| HistoryItem {
                entry_id: id,
                kind,
                reference,
                metadata,
                created_at,
                changes: Vec::new(),
            })
            .changes
            .push(BalanceChange {
                asset,
                purpose,
                amount,
            });
    }
    Ok(items.into_values().collect())
}
