//! Holds: funds moved from a user's available to held, then settled to
//! destinations or released back, exactly once. The hold's row lock is the
//! exactly-once gate; offers reuse the same two steps, [`Ledger::hold_in`]
//! and [`Ledger::finish_hold_in`], inside their own transactions.

use serde::Serialize;
use sqlx::PgConnection;

use super::idempotency::Claim;
use super::posting::Prepared;
use super::{
    AccountPurpose, AccountRef, Amount, Hold, HoldStatus, IdempotencyKey, Ledger, Leg, NewEntry,
    OwnerId, PlaceHold, ReleaseHold, SettleHold,
};
use crate::{Error, Result};

type HoldRow = (i64, OwnerId, String, String, HoldStatus, i64, Option<i64>);

const HOLD_COLUMNS: &str =
    "id, owner_id, asset, amount::text, status, place_entry_id, final_entry_id";

fn to_hold(row: HoldRow) -> Result<Hold> {
    let (id, owner, asset, amount, status, place_entry_id, final_entry_id) = row;
    Ok(Hold {
        id,
        owner,
        asset,
        amount: Amount::from_stored(&amount)?,
        status,
        place_entry_id,
        final_entry_id,
    })
}

/// One hold; with `lock`, its row stays locked for the rest of the
/// caller's transaction.
async fn select_hold(conn: &mut PgConnection, id: i64, lock: bool) -> Result<Option<Hold>> {
    let sql = format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<HoldRow> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(to_hold).transpose()
}

/// The entry placing `request`'s hold; a hold of nothing is refused.
fn place_entry(request: &PlaceHold) -> Result<NewEntry> {
    if request.amount.is_zero() {
        return Err(Error::InvalidAmount(
            "a hold amount must be positive".into(),
        ));
    }
    Ok(NewEntry {
        kind: request.kind,
        reference: request.reference.clone(),
        metadata: request.metadata.clone(),
        legs: Hold::place_legs(request.owner, &request.asset, request.amount),
    })
}

/// The entry returning `hold` to its owner's available funds.
fn release_entry(request: &ReleaseHold, hold: &Hold) -> NewEntry {
    NewEntry {
        kind: request.kind,
        reference: request.reference.clone(),
        metadata: request.metadata.clone(),
        legs: Hold::release_legs(hold.owner, &hold.asset, hold.amount),
    }
}

impl Ledger {
    /// Moves `amount` of the owner's available funds to held.
    pub async fn place_hold(&self, key: &IdempotencyKey, request: &PlaceHold) -> Result<Hold> {
        let entry = place_entry(request)?;
        let prepared = &self.prepare(&entry).await?;
        let claim = Claim::new(key, "place_hold", request)?;
        self.idempotent(&claim, |mut tx| async move {
            let hold = self
                .hold_in(
                    &mut tx,
                    request.owner,
                    &request.asset,
                    request.amount,
                    prepared,
                )
                .await?;
            Ok((tx, hold))
        })
        .await
    }

    /// Settles a hold to its destinations, exactly once.
    pub async fn settle_hold(&self, key: &IdempotencyKey, request: &SettleHold) -> Result<Hold> {
        let hold = self.existing_hold(request.hold_id).await?;
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
        let entry = NewEntry {
            kind: request.kind,
            reference: request.reference.clone(),
            metadata: request.metadata.clone(),
            legs,
        };
        self.finish_hold(
            key,
            "settle_hold",
            request,
            &hold,
            HoldStatus::Settled,
            &entry,
        )
        .await
    }

    /// Returns a hold's amount to the owner's available funds, exactly once.
    pub async fn release_hold(&self, key: &IdempotencyKey, request: &ReleaseHold) -> Result<Hold> {
        let hold = self.existing_hold(request.hold_id).await?;
        let entry = release_entry(request, &hold);
        self.finish_hold(
            key,
            "release_hold",
            request,
            &hold,
            HoldStatus::Released,
            &entry,
        )
        .await
    }

    async fn existing_hold(&self, id: i64) -> Result<Hold> {
        self.hold(id).await?.ok_or(Error::HoldNotFound(id))
    }

    async fn finish_hold<R: Serialize>(
        &self,
        key: &IdempotencyKey,
        operation: &'static str,
        request: &R,
        hold: &Hold,
        status: HoldStatus,
        entry: &NewEntry,
    ) -> Result<Hold> {
        let prepared = &self.prepare(entry).await?;
        let claim = Claim::new(key, operation, request)?;
        self.idempotent(&claim, |mut tx| async move {
            let finished = self
                .finish_hold_in(&mut tx, hold.id, status, prepared)
                .await?;
            Ok((tx, finished))
        })
        .await
    }

    /// [`Self::place_hold`] inside the caller's transaction, without an
    /// idempotency key: for writers whose own row, written in the same
    /// transaction, guards the transition (withdrawals). The entry's unique
    /// reference keeps a second placement from posting twice.
    pub async fn place_hold_in(
        &self,
        conn: &mut PgConnection,
        request: &PlaceHold,
    ) -> Result<Hold> {
        let entry = place_entry(request)?;
        let prepared = self.prepare_in(conn, &entry).await?;
        self.hold_in(
            conn,
            request.owner,
            &request.asset,
            request.amount,
            &prepared,
        )
        .await
    }

    /// Resolves the accounts a hold of `owner`'s `asset` posts to through
    /// the committed-id cache, so [`Self::place_hold_in`] inside a
    /// transaction finds them without a statement. Call it before the
    /// transaction begins: it takes a pool connection of its own on a miss.
    pub(crate) async fn warm_hold_accounts(&self, owner: OwnerId, asset: &str) -> Result<()> {
        let available = AccountRef::available(owner, asset);
        let held = AccountRef::user(owner, asset, AccountPurpose::Held);
        self.account_ids(&[&available, &held]).await.map(drop)
    }

    /// [`Self::release_hold`] inside the caller's transaction, without an
    /// idempotency key (see [`Self::place_hold_in`]); a hold already
    /// finished is refused with [`Error::HoldFinalized`].
    pub async fn release_hold_in(
        &self,
        conn: &mut PgConnection,
        request: &ReleaseHold,
    ) -> Result<Hold> {
        let hold = select_hold(conn, request.hold_id, true)
            .await?
            .ok_or(Error::HoldNotFound(request.hold_id))?;
        let entry = release_entry(request, &hold);
        let prepared = self.prepare_in(conn, &entry).await?;
        self.finish_hold_in(conn, hold.id, HoldStatus::Released, &prepared)
            .await
    }

    pub async fn hold(&self, id: i64) -> Result<Option<Hold>> {
        select_hold(&mut *self.pool.acquire().await?, id, false).await
    }

    /// Posts `prepared`, whose legs are [`Hold::place_legs`] of the amount, and
    /// records the hold it places, inside the caller's transaction.
    pub(crate) async fn hold_in(
        &self,
        conn: &mut PgConnection,
        owner: OwnerId,
        asset: &str,
        amount: Amount,
        prepared: &Prepared<'_>,
    ) -> Result<Hold> {
        let posted = self.insert_in(conn, prepared).await?;
        let id = sqlx::query_scalar(
            "INSERT INTO holds (owner_id, asset, amount, place_entry_id) VALUES ($1, $2, $3::numeric, $4) RETURNING id",
        )
        .bind(owner)
        .bind(asset)
        .bind(amount.to_string())
        .bind(posted.id)
        .fetch_one(&mut *conn)
        .await?;
        Ok(Hold {
            id,
            owner,
            asset: asset.to_owned(),
            amount,
            status: HoldStatus::Held,
            place_entry_id: posted.id,
            final_entry_id: None,
        })
    }

    /// Finishes a held hold with `prepared`'s entry inside the caller's
    /// transaction. The row lock comes first: of two racing finishers, the
    /// second waits here, then finds the hold no longer held and posts
    /// nothing.
    pub(crate) async fn finish_hold_in(
        &self,
        conn: &mut PgConnection,
        id: i64,
        status: HoldStatus,
        prepared: &Prepared<'_>,
    ) -> Result<Hold> {
        let hold = select_hold(conn, id, true)
            .await?
            .ok_or(Error::HoldNotFound(id))?;
        if hold.status != HoldStatus::Held {
            return Err(Error::HoldFinalized {
                id,
                status: hold.status,
            });
        }
        let posted = self.insert_in(conn, prepared).await?;
        sqlx::query(
            "UPDATE holds SET status = $2, final_entry_id = $3, finalized_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(posted.id)
        .execute(&mut *conn)
        .await?;
        Ok(Hold {
            status,
            final_entry_id: Some(posted.id),
            ..hold
        })
    }

    /// [`Self::finish_hold_in`] for many holds in three statements: each
    /// `(hold, status, entry)` finishes its hold with its entry (settle
    /// entries as given; a release's legs are built here from the hold).
    /// If any hold is missing or no longer held, nothing is written and
    /// the error names it, so the caller can fall back to one at a time.
    pub(crate) async fn finish_holds_in(
        &self,
        conn: &mut PgConnection,
        finishes: &[HoldFinish],
    ) -> Result<Vec<Hold>> {
        if finishes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = finishes.iter().map(|f| f.hold_id).collect();
        let rows: Vec<HoldRow> = sqlx::query_as(&format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        ))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let mut holds: std::collections::HashMap<i64, Hold> = rows
            .into_iter()
            .map(|row| to_hold(row).map(|h| (h.id, h)))
            .collect::<Result<_>>()?;
        let mut entries = Vec::with_capacity(finishes.len());
        for finish in finishes {
            let hold = holds
                .get(&finish.hold_id)
                .ok_or(Error::HoldNotFound(finish.hold_id))?;
            if hold.status != HoldStatus::Held {
                return Err(Error::HoldFinalized {
                    id: hold.id,
                    status: hold.status,
                });
            }
            entries.push(match finish.status {
                HoldStatus::Released => NewEntry {
                    legs: Hold::release_legs(hold.owner, &hold.asset, hold.amount),
                    ..finish.entry.clone()
                },
                _ => finish.entry.clone(),
            });
        }
        let posted = self.post_referenced_in(conn, &entries).await?;
        let statuses: Vec<HoldStatus> = finishes.iter().map(|f| f.status).collect();
        sqlx::query(
            "UPDATE holds SET status = f.status, final_entry_id = f.entry_id, finalized_at = now()
             FROM unnest($1::bigint[], $2::hold_status[], $3::bigint[]) AS f(id, status, entry_id)
             WHERE holds.id = f.id",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(&posted)
        .execute(&mut *conn)
        .await?;
        finishes
            .iter()
            .zip(posted)
            .map(|(finish, entry_id)| {
                let hold = holds.remove(&finish.hold_id).ok_or_else(|| {
                    Error::Corrupt(format!("hold {} finished twice", finish.hold_id))
                })?;
                Ok(Hold {
                    status: finish.status,
                    final_entry_id: Some(entry_id),
                    ..hold
                })
            })
            .collect()
    }
}

/// One hold of a batch [`Ledger::finish_holds_in`] finishes: settled with
/// `entry`, or released (then `entry` gives kind, reference and metadata,
/// and its legs are the hold's release legs).
#[derive(Clone, Debug)]
pub(crate) struct HoldFinish {
    pub hold_id: i64,
    pub status: HoldStatus,
    pub entry: NewEntry,
}

impl Hold {
    /// The legs that move `amount` of the owner's available funds to held.
    pub fn place_legs(owner: OwnerId, asset: &str, amount: Amount) -> Vec<Leg> {
        vec![
            Leg::decrease(AccountRef::available(owner, asset), amount),
            Leg::increase(AccountRef::user(owner, asset, AccountPurpose::Held), amount),
        ]
    }

    /// The legs that move it back.
    pub fn release_legs(owner: OwnerId, asset: &str, amount: Amount) -> Vec<Leg> {
        vec![
            Leg::decrease(AccountRef::user(owner, asset, AccountPurpose::Held), amount),
            Leg::increase(AccountRef::available(owner, asset), amount),
        ]
    }
}
