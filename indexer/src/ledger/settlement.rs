//! P2P trade offers on the ledger. The maker's sell amount is held when the
//! offer is created; accepting settles both legs in one entry, cancelling
//! or expiring releases the hold. Each transition takes the offer's row
//! lock and finishes the offer and its hold together, so of any two racing
//! transitions exactly one wins. Creating and taking an offer hold a share
//! lock on the acting user's row, so disabling a user (which cancels their
//! open offers under that row's lock) never leaves one open.
//!
//! Offers are built on the ledger's crate API only: claims and idempotent
//! transactions, prepared entries, and the two hold steps.

use alloy_primitives::U256;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::history::trim_page;
use super::{
    AccountPurpose, AccountRef, Amount, Claim, EntryKind, Hold, HoldStatus, IdempotencyKey, Ledger,
    Leg, NewEntry, OwnerId,
};
use crate::users::lock_active_user;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "offer_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum OfferStatus {
    Open,
    Filled,
    Cancelled,
    Expired,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOffer {
    pub maker: OwnerId,
    pub sell_asset: String,
    pub sell_amount: Amount,
    pub buy_asset: String,
    pub buy_amount: Amount,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub id: Uuid,
    pub maker: OwnerId,
    pub sell_asset: String,
    pub sell_amount: Amount,
    pub buy_asset: String,
    pub buy_amount: Amount,
    pub status: OfferStatus,
    pub taker: Option<OwnerId>,
    pub trade_entry_id: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// An `offers` row as selected by [`OFFER_COLUMNS`]; amounts as text.
#[derive(sqlx::FromRow)]
struct OfferRow {
    id: Uuid,
    maker_id: Uuid,
    sell_asset: String,
    sell_amount: String,
    buy_asset: String,
    buy_amount: String,
    status: OfferStatus,
    taker_id: Option<Uuid>,
    trade_entry_id: Option<i64>,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    hold_id: i64,
}

const OFFER_COLUMNS: &str = "id, maker_id, sell_asset, sell_amount::text, buy_asset, buy_amount::text, status, \
                             taker_id, trade_entry_id, expires_at, created_at, hold_id";

/// The offer and the id of the hold on its sell amount.
fn to_offer(row: OfferRow) -> Result<(Offer, i64)> {
    let offer = Offer {
        sell_amount: Amount::from_stored(&row.sell_amount)?,
        buy_amount: Amount::from_stored(&row.buy_amount)?,
        id: row.id,
        maker: row.maker_id,
        sell_asset: row.sell_asset,
        buy_asset: row.buy_asset,
        status: row.status,
        taker: row.taker_id,
        trade_entry_id: row.trade_entry_id,
        expires_at: row.expires_at,
        created_at: row.created_at,
    };
    Ok((offer, row.hold_id))
}

/// One offer with its hold's id; with `lock`, the offer's row stays locked
/// for the rest of the caller's transaction.
async fn select_offer(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<(Offer, i64)>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!(
        "SELECT {OFFER_COLUMNS} FROM offers WHERE id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .map(to_offer)
    .transpose()
}

/// The fee on a trade of `amount`: `fee_bps` basis points, rounded up, so a
/// nonzero rate never charges nothing (many small trades cannot dodge it).
/// `None` on overflow.
pub fn trade_fee(amount: Amount, fee_bps: u32) -> Option<Amount> {
    let product = amount.as_u256().checked_mul(U256::from(fee_bps))?;
    Some(Amount::from_u256(product.div_ceil(U256::from(10_000u64))))
}

/// What the taker of an offer selling `amount` receives after the fee;
/// `FeeTakesWholeAmount` when the rounded-up fee leaves nothing.
pub fn after_trade_fee(amount: Amount, fee_bps: u32) -> Result<(Amount, Amount)> {
    let fee =
        trade_fee(amount, fee_bps).ok_or_else(|| Error::InvalidAmount("fee overflows".into()))?;
    match amount.checked_sub(fee) {
        Some(received) if !received.is_zero() => Ok((received, fee)),
        _ => Err(Error::FeeTakesWholeAmount),
    }
}

/// A request to take an offer, as hashed for idempotency.
#[derive(Serialize)]
struct AcceptRequest {
    offer: Uuid,
    taker: OwnerId,
    fee_bps: u32,
}

impl Ledger {
    /// Places the hold on the maker's sell amount and opens the offer.
    pub async fn create_offer(&self, key: &IdempotencyKey, request: &NewOffer) -> Result<Offer> {
        if request.sell_amount.is_zero() || request.buy_amount.is_zero() {
            return Err(Error::InvalidAmount(
                "offer amounts must be positive".into(),
            ));
        }
        if request.sell_asset == request.buy_asset {
            return Err(Error::InvalidRequest(
                "an offer trades two different assets".into(),
            ));
        }
        let id = Uuid::new_v4();
        let entry = NewEntry {
            kind: EntryKind::Trade,
            reference: format!("offer:{id}:hold"),
            metadata: serde_json::json!({ "offer_id": id, "phase": "hold" }),
            legs: Hold::place_legs(request.maker, &request.sell_asset, request.sell_amount),
        };
        let prepared = &self.prepare(&entry).await?;
        // Both assets must exist before the offer refers to them.
        self.account_ids(&[&AccountRef::available(request.maker, &request.buy_asset)])
            .await?;
        let claim = Claim::new(key, "create_offer", request)?;
        self.idempotent(&claim, |mut tx| async move {
            lock_active_user(&mut tx, request.maker).await?;
            let (maker, sell_asset, sell_amount) =
                (request.maker, &request.sell_asset, request.sell_amount);
            let hold = self
                .hold_in(&mut tx, maker, sell_asset, sell_amount, prepared)
                .await?;
            let created_at: DateTime<Utc> = sqlx::query_scalar(
                "INSERT INTO offers (id, maker_id, sell_asset, sell_amount, buy_asset, buy_amount, hold_id, expires_at)
                 VALUES ($1, $2, $3, $4::numeric, $5, $6::numeric, $7, $8) RETURNING created_at",
            )
            .bind(id)
            .bind(maker)
            .bind(sell_asset)
            .bind(sell_amount.to_string())
            .bind(&request.buy_asset)
            .bind(request.buy_amount.to_string())
            .bind(hold.id)
            .bind(request.expires_at)
            .fetch_one(&mut *tx)
            .await?;
            let offer = Offer {
                id,
                maker,
                sell_asset: sell_asset.clone(),
                sell_amount,
                buy_asset: request.buy_asset.clone(),
                buy_amount: request.buy_amount,
                status: OfferStatus::Open,
                taker: None,
                trade_entry_id: None,
                expires_at: request.expires_at,
                created_at,
            };
            Ok((tx, offer))
        })
        .await
    }

    pub async fn offer(&self, id: Uuid) -> Result<Option<Offer>> {
        Ok(self.offer_with_hold(id).await?.map(|(offer, _)| offer))
    }

    async fn offer_with_hold(&self, id: Uuid) -> Result<Option<(Offer, i64)>> {
        select_offer(&mut *self.pool.acquire().await?, id, false).await
    }

    /// Settles both legs in one entry: the maker's held sell amount to the
    /// taker (less the fee, `fee_bps` basis points rounded up, to the fee
    /// account), the taker's buy amount to the maker.
    pub async fn accept_offer(
        &self,
        key: &IdempotencyKey,
        offer_id: Uuid,
        taker: OwnerId,
        fee_bps: u32,
    ) -> Result<Offer> {
        let request = AcceptRequest {
            offer: offer_id,
            taker,
            fee_bps,
        };
        let claim = Claim::new(key, "accept_offer", &request)?;
        let Some((preview, _)) = self.offer_with_hold(offer_id).await? else {
            return Err(Error::OfferNotFound);
        };
        let (received, fee) = after_trade_fee(preview.sell_amount, fee_bps)?;
        let mut legs = vec![
            Leg::decrease(
                AccountRef::user(preview.maker, &preview.sell_asset, AccountPurpose::Held),
                preview.sell_amount,
            ),
            Leg::decrease(
                AccountRef::available(taker, &preview.buy_asset),
                preview.buy_amount,
            ),
            Leg::increase(
                AccountRef::available(preview.maker, &preview.buy_asset),
                preview.buy_amount,
            ),
            Leg::increase(AccountRef::available(taker, &preview.sell_asset), received),
        ];
        if !fee.is_zero() {
            legs.push(Leg::increase(
                AccountRef::system(&preview.sell_asset, AccountPurpose::Fees),
                fee,
            ));
        }
        let entry = NewEntry {
            kind: EntryKind::Trade,
            reference: format!("offer:{offer_id}:trade"),
            metadata: serde_json::json!({ "offer_id": offer_id, "phase": "trade", "maker": preview.maker, "taker": taker }),
            legs,
        };
        let prepared = &self.prepare(&entry).await?;
        self.idempotent(&claim, |mut tx| async move {
            // The user row before the offer: disabling locks them in that order.
            lock_active_user(&mut tx, taker).await?;
            let (offer, hold_id) = select_offer(&mut tx, offer_id, true)
                .await?
                .ok_or(Error::OfferNotFound)?;
            check_open(&offer, Utc::now())?;
            if offer.maker == taker {
                return Err(Error::InvalidRequest(
                    "a maker cannot take their own offer".into(),
                ));
            }
            let hold = self
                .finish_hold_in(&mut tx, hold_id, HoldStatus::Settled, prepared)
                .await?;
            let filled = close(&mut tx, offer, OfferStatus::Filled, Some(taker), &hold).await?;
            Ok((tx, filled))
        })
        .await
    }

    /// Open offers of makers other than `viewer`, newest first; `after` is
    /// the last offer of the previous page.
    pub async fn open_offers(
        &self,
        viewer: OwnerId,
        sell_asset: Option<&str>,
        buy_asset: Option<&str>,
        page_size: u32,
        after: Option<Uuid>,
    ) -> Result<(Vec<Offer>, Option<Uuid>)> {
        let rows: Vec<OfferRow> = sqlx::query_as(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers
             WHERE status = 'open' AND maker_id <> $1
               AND ($2::text IS NULL OR sell_asset = $2) AND ($3::text IS NULL OR buy_asset = $3)
               AND (expires_at IS NULL OR expires_at > now())
               AND ($4::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM offers WHERE id = $4))
             ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .bind(viewer)
        .bind(sell_asset)
        .bind(buy_asset)
        .bind(after)
        .bind(i64::from(page_size) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut offers = rows
            .into_iter()
            .map(|row| to_offer(row).map(|(offer, _)| offer))
            .collect::<Result<Vec<_>>>()?;
        let next = trim_page(&mut offers, page_size, |o| o.id);
        Ok((offers, next))
    }

    /// The maker withdraws an open offer; its hold returns to available.
    pub async fn cancel_offer(
        &self,
        key: &IdempotencyKey,
        offer_id: Uuid,
        maker: OwnerId,
    ) -> Result<Offer> {
        let claim = Claim::new(key, "cancel_offer", &(offer_id, maker))?;
        self.idempotent(&claim, |mut tx| async move {
            let (offer, hold_id) = select_offer(&mut tx, offer_id, true)
                .await?
                .filter(|(offer, _)| offer.maker == maker)
                .ok_or(Error::OfferNotFound)?;
            if offer.status != OfferStatus::Open {
                return Err(Error::OfferNotOpen(offer.status));
            }
            let cancelled = self
                .release(&mut tx, offer, hold_id, OfferStatus::Cancelled)
                .await?;
            Ok((tx, cancelled))
        })
        .await
    }

    /// Cancels every open offer of `maker` inside `tx`, releasing the holds.
    /// The caller has locked the maker's user row, so no offer of theirs can
    /// be created or taken meanwhile. Returns how many were cancelled.
    pub(crate) async fn cancel_open_offers(
        &self,
        tx: &mut PgConnection,
        maker: OwnerId,
    ) -> Result<usize> {
        // All of them locked in one statement, in id order, before any release.
        let rows: Vec<OfferRow> = sqlx::query_as(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers WHERE maker_id = $1 AND status = 'open' ORDER BY id FOR UPDATE"
        ))
        .bind(maker)
        .fetch_all(&mut *tx)
        .await?;
        let count = rows.len();
        for row in rows {
            let (offer, hold_id) = to_offer(row)?;
            self.release(tx, offer, hold_id, OfferStatus::Cancelled)
                .await?;
        }
        Ok(count)
    }

    /// Expires every open offer whose time has come, releasing its hold.
    /// Safe to run from several processes at once.
    pub async fn expire_offers(&self, now: DateTime<Utc>) -> Result<usize> {
        let due: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM offers WHERE status = 'open' AND expires_at <= $1 ORDER BY expires_at LIMIT 500",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut expired = 0;
        for id in due {
            let done = self
                .transaction(|mut tx| async move {
                    let Some((offer, hold_id)) = select_offer(&mut tx, id, true).await? else {
                        return Ok((tx, false));
                    };
                    if offer.status != OfferStatus::Open
                        || offer.expires_at.is_none_or(|at| at > now)
                    {
                        return Ok((tx, false));
                    }
                    self.release(&mut tx, offer, hold_id, OfferStatus::Expired)
                        .await?;
                    Ok((tx, true))
                })
                .await?;
            expired += usize::from(done);
        }
        Ok(expired)
    }

    /// Returns the hold to the maker and closes the offer with `status`.
    async fn release(
        &self,
        tx: &mut PgConnection,
        offer: Offer,
        hold_id: i64,
        status: OfferStatus,
    ) -> Result<Offer> {
        let phase = match status {
            OfferStatus::Expired => "expire",
            _ => "cancel",
        };
        let entry = NewEntry {
            kind: EntryKind::Trade,
            reference: format!("offer:{}:{phase}", offer.id),
            metadata: serde_json::json!({ "offer_id": offer.id, "phase": phase }),
            legs: Hold::release_legs(offer.maker, &offer.sell_asset, offer.sell_amount),
        };
        let prepared = self.prepare(&entry).await?;
        let hold = self
            .finish_hold_in(tx, hold_id, HoldStatus::Released, &prepared)
            .await?;
        close(tx, offer, status, None, &hold).await
    }
}

fn check_open(offer: &Offer, now: DateTime<Utc>) -> Result<()> {
    if offer.status != OfferStatus::Open {
        return Err(Error::OfferNotOpen(offer.status));
    }
    if offer.expires_at.is_some_and(|at| at <= now) {
        return Err(Error::OfferNotOpen(OfferStatus::Expired));
    }
    Ok(())
}

/// Closes the offer with `status`, after `hold` was finished by the entry
/// that closes it (the trade, for a filled offer).
async fn close(
    tx: &mut PgConnection,
    offer: Offer,
    status: OfferStatus,
    taker: Option<OwnerId>,
    hold: &Hold,
) -> Result<Offer> {
    let trade_entry_id = if status == OfferStatus::Filled {
        hold.final_entry_id
    } else {
        None
    };
    sqlx::query("UPDATE offers SET status = $2, taker_id = $3, trade_entry_id = $4, finished_at = now() WHERE id = $1")
        .bind(offer.id)
        .bind(status)
        .bind(taker)
        .bind(trade_entry_id)
        .execute(&mut *tx)
        .await?;
    Ok(Offer {
        status,
        taker,
        trade_entry_id,
        ..offer
    })
}
