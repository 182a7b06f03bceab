//! `coffer.v1.SettlementService`.

use chrono::{DateTime, Utc};
use indexer::ledger::settlement::{NewOffer, Offer, OfferStatus, after_trade_fee};
use indexer::ledger::{AccountRef, EntryKind, Leg, NewEntry};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::pb::{self, settlement_service_server::SettlementService};
use super::{
    Access, Shared, idempotency_key, internal, ledger_status, parse_amount, parse_uuid, timestamp,
};
use crate::auth::FieldError;
use crate::auth::password::normalize_email;

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;

#[derive(Debug)]
pub struct SettlementApi {
    shared: Shared,
    /// Charged on the sell amount the taker receives, to the fee account.
    trade_fee_bps: u32,
}

impl SettlementApi {
    pub fn new(shared: Shared, trade_fee_bps: u32) -> Self {
        Self {
            shared,
            trade_fee_bps,
        }
    }
}

fn status_to_pb(status: OfferStatus) -> pb::OfferStatus {
    match status {
        OfferStatus::Open => pb::OfferStatus::Open,
        OfferStatus::Filled => pb::OfferStatus::Filled,
        OfferStatus::Cancelled => pb::OfferStatus::Cancelled,
        OfferStatus::Expired => pb::OfferStatus::Expired,
    }
}

fn offer_to_pb(offer: Offer) -> pb::Offer {
    pb::Offer {
        id: offer.id.to_string(),
        maker_user_id: offer.maker.to_string(),
        sell_asset: offer.sell_asset,
        sell_amount: offer.sell_amount.to_string(),
        buy_asset: offer.buy_asset,
        buy_amount: offer.buy_amount.to_string(),
        status: status_to_pb(offer.status).into(),
        taker_user_id: offer.taker.map(|t| t.to_string()).unwrap_or_default(),
        expires_at: offer.expires_at.map(timestamp),
        created_at: Some(timestamp(offer.created_at)),
    }
}

async fn known_asset(shared: &Shared, field: &'static str, code: &str) -> Result<String, Status> {
    let code = code.trim().to_uppercase();
    if code.is_empty() {
        return Err(FieldError::new(field, "is required").into());
    }
    match shared.ledger()?.asset(&code).await.map_err(internal)? {
        Some(_) => Ok(code),
        None => Err(FieldError::new(field, format!("unknown asset `{code}`")).into()),
    }
}

fn parse_offer_id(text: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(text.trim()).map_err(|_| FieldError::new("offer_id", "must be a UUID").into())
}

#[tonic::async_trait]
impl SettlementService for SettlementApi {
    async fn transfer(
        &self,
        request: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::TransferResponse>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        let from = self
            .shared
            .acting_for(&caller, body.user_id.as_deref(), Access::Write)
            .await?;
        let users = self.shared.users()?;
        // Errors about the recipient name the field the caller used.
        let (field, recipient) = match body.recipient {
            Some(pb::transfer_request::Recipient::ToUserId(id)) => (
                "to_user_id",
                users.by_id(parse_uuid("to_user_id", &id)?).await,
            ),
            Some(pb::transfer_request::Recipient::ToEmail(email)) => (
                "to_email",
                users.by_email(&normalize_email("to_email", &email)?).await,
            ),
            None => return Err(FieldError::new("to_user_id", "or to_email is required").into()),
        };
        let recipient = recipient
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("{field}: no such recipient")))?;
        if recipient.disabled {
            return Err(Status::failed_precondition(format!(
                "{field}: the recipient's account is disabled"
            )));
        }
        if recipient.id == from {
            return Err(FieldError::new(field, "cannot be the sender").into());
        }
        let asset = known_asset(&self.shared, "asset", &body.asset).await?;
        let amount = parse_amount("amount", &body.amount)?;
        let memo = body.memo.unwrap_or_default();
        if memo.len() > 500 {
            return Err(FieldError::new("memo", "must be at most 500 bytes").into());
        }
        let key = idempotency_key(from, &body.idempotency_key)?;
        let entry = NewEntry {
            kind: EntryKind::Transfer,
            reference: format!("transfer:{from}:{}", key.key),
            metadata: serde_json::json!({ "from": from, "to": recipient.id, "memo": memo }),
            legs: vec![
                Leg::decrease(AccountRef::available(from, &asset), amount),
                Leg::increase(AccountRef::available(recipient.id, &asset), amount),
            ],
        };
        let posted = self
            .shared
            .ledger()?
            .post(&key, &entry)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(pb::TransferResponse {
            transaction_id: posted.id.to_string(),
            created_at: Some(timestamp(posted.created_at)),
        }))
    }

    async fn create_offer(
        &self,
        request: Request<pb::CreateOfferRequest>,
    ) -> Result<Response<pb::Offer>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        let maker = self
            .shared
            .acting_for(&caller, body.user_id.as_deref(), Access::Write)
            .await?;
        let sell_asset = known_asset(&self.shared, "sell_asset", &body.sell_asset).await?;
        let buy_asset = known_asset(&self.shared, "buy_asset", &body.buy_asset).await?;
        if sell_asset == buy_asset {
            return Err(FieldError::new("buy_asset", "must differ from sell_asset").into());
        }
        let expires_at = match body.expires_at {
            Some(ts) => {
                let at = DateTime::<Utc>::from_timestamp(
                    ts.seconds,
                    u32::try_from(ts.nanos).unwrap_or(0),
                )
                .ok_or_else(|| Status::from(FieldError::new("expires_at", "is out of range")))?;
                if at <= Utc::now() {
                    return Err(FieldError::new("expires_at", "must be in the future").into());
                }
                Some(at)
            }
            None => None,
        };
        let sell_amount = parse_amount("sell_amount", &body.sell_amount)?;
        if after_trade_fee(sell_amount, self.trade_fee_bps).is_err() {
            return Err(FieldError::new(
                "sell_amount",
                format!(
                    "is too small to pay the {} bps trade fee, which rounds up",
                    self.trade_fee_bps
                ),
            )
            .into());
        }
        let offer = NewOffer {
            maker,
            sell_asset,
            sell_amount,
            buy_asset,
            buy_amount: parse_amount("buy_amount", &body.buy_amount)?,
            expires_at,
        };
        let key = idempotency_key(maker, &body.idempotency_key)?;
        let created = self
            .shared
            .ledger()?
            .create_offer(&key, &offer)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(offer_to_pb(created)))
    }

    async fn list_offers(
        &self,
        request: Request<pb::ListOffersRequest>,
    ) -> Result<Response<pb::ListOffersResponse>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        let viewer = super::acting_for(&caller, body.user_id.as_deref(), Access::Read)?;
        let sell = match body.sell_asset.filter(|a| !a.is_empty()) {
            Some(code) => Some(known_asset(&self.shared, "sell_asset", &code).await?),
            None => None,
        };
        let buy = match body.buy_asset.filter(|a| !a.is_empty()) {
            Some(code) => Some(known_asset(&self.shared, "buy_asset", &code).await?),
            None => None,
        };
        let after = match body.page_token.trim() {
            "" => None,
            token => Some(Uuid::parse_str(token).map_err(|_| {
                Status::from(FieldError::new(
                    "page_token",
                    "is not a token this server issued",
                ))
            })?),
        };
        let page_size = match body.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let (offers, next) = self
            .shared
            .ledger()?
            .open_offers(viewer, sell.as_deref(), buy.as_deref(), page_size, after)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListOffersResponse {
            offers: offers.into_iter().map(offer_to_pb).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_offer(
        &self,
        request: Request<pb::GetOfferRequest>,
    ) -> Result<Response<pb::Offer>, Status> {
        let caller = self.shared.caller(&request).await?;
        let id = parse_offer_id(&request.get_ref().offer_id)?;
        let offer = self.shared.ledger()?.offer(id).await.map_err(internal)?;
        // Open offers are public; finished ones only to their parties and staff.
        let visible = offer.filter(|o| {
            o.status == OfferStatus::Open
                || o.maker == caller.id
                || o.taker == Some(caller.id)
                || caller.role != indexer::users::Role::User
        });
        visible
            .map(|o| Response::new(offer_to_pb(o)))
            .ok_or_else(|| Status::not_found("offer_id: no such offer"))
    }

    async fn accept_offer(
        &self,
        request: Request<pb::AcceptOfferRequest>,
    ) -> Result<Response<pb::Offer>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        let taker = self
            .shared
            .acting_for(&caller, body.user_id.as_deref(), Access::Write)
            .await?;
        let id = parse_offer_id(&body.offer_id)?;
        let key = idempotency_key(taker, &body.idempotency_key)?;
        let offer = self
            .shared
            .ledger()?
            .accept_offer(&key, id, taker, self.trade_fee_bps)
            .await
            .map_err(|err| match err {
                // Only a self-trade: the offer is the field at fault.
                indexer::Error::InvalidRequest(why) => {
                    Status::invalid_argument(format!("offer_id: {why}"))
                }
                other => ledger_status(other),
            })?;
        Ok(Response::new(offer_to_pb(offer)))
    }

    async fn cancel_offer(
        &self,
        request: Request<pb::CancelOfferRequest>,
    ) -> Result<Response<pb::Offer>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        let maker = self
            .shared
            .acting_for(&caller, body.user_id.as_deref(), Access::Write)
            .await?;
        let id = parse_offer_id(&body.offer_id)?;
        let key = idempotency_key(maker, &body.idempotency_key)?;
        let offer = self
            .shared
            .ledger()?
            .cancel_offer(&key, id, maker)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(offer_to_pb(offer)))
    }
}
