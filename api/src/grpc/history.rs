//! `coffer.v1.HistoryService`.

use std::collections::HashMap;

use indexer::deposits::DepositView;
use indexer::ledger::history::MAX_PAGE_SIZE;
use indexer::ledger::{EntryKind, HistoryFilter, HistoryItem};
use tonic::{Request, Response, Status};

use super::pb::{self, history_service_server::HistoryService};
use super::{Access, Shared, acting_for, internal, timestamp};
use crate::auth::FieldError;

const DEFAULT_PAGE_SIZE: u32 = 50;
/// Page tokens are opaque to clients; the prefix versions their format.
const TOKEN_PREFIX: &str = "v1:";

#[derive(Debug)]
pub struct HistoryApi {
    shared: Shared,
}

impl HistoryApi {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

fn encode_token(entry_id: i64) -> String {
    super::encode_page_token(TOKEN_PREFIX, entry_id)
}

fn decode_token(token: &str) -> Result<Option<i64>, Status> {
    super::decode_page_token(TOKEN_PREFIX, token)
}

/// The deposit behind each deposit entry, for [`transaction_to_pb`].
async fn deposits_of(
    shared: &Shared,
    items: &[HistoryItem],
) -> Result<HashMap<i64, DepositView>, Status> {
    let ids: Vec<i64> = items.iter().filter_map(deposit_id).collect();
    indexer::deposits::views(shared.ledger()?.pool(), &ids)
        .await
        .map_err(internal)
}

fn deposit_id(item: &HistoryItem) -> Option<i64> {
    matches!(
        item.kind,
        EntryKind::DepositPending | EntryKind::DepositCredit | EntryKind::DepositReversal
    )
    .then(|| item.metadata.get("deposit_id")?.as_i64())
    .flatten()
}

fn transaction_to_pb(item: HistoryItem, deposits: &HashMap<i64, DepositView>) -> pb::Transaction {
    let deposit = deposit_id(&item)
        .and_then(|id| deposits.get(&id))
        .map(|d| pb::Deposit {
            id: d.id.to_string(),
            chain: d.chain.as_str().to_owned(),
            tx_id: d.tx_id.clone(),
            position: d.position,
            block_height: d.block_height,
            block_hash: d.block_hash.clone(),
            status: d.status.clone(),
            confirmations: d.confirmations,
        });
    pb::Transaction {
        deposit,
        id: item.entry_id.to_string(),
        kind: item.kind.as_str().to_owned(),
        reference: item.reference,
        metadata_json: item.metadata.to_string(),
        created_at: Some(timestamp(item.created_at)),
        changes: item
            .changes
            .into_iter()
            .map(|change| pb::BalanceChange {
                asset: change.asset,
                bucket: change.purpose.as_str().to_owned(),
                amount: change.amount.to_string(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl HistoryService for HistoryApi {
    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        let user = acting_for(&caller, body.user_id.as_deref(), Access::Read)?;
        let kind = match body.kind.as_deref().filter(|k| !k.is_empty()) {
            Some(text) => Some(
                text.parse::<EntryKind>()
                    .map_err(|e| FieldError::new("kind", e))?,
            ),
            None => None,
        };
        let asset = body.asset.filter(|a| !a.is_empty());
        if let Some(code) = &asset
            && !(2..=16).contains(&code.len())
        {
            return Err(FieldError::new("asset", "must be an asset code such as BTC").into());
        }
        let page_size = match body.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let cursor = decode_token(&body.page_token)?;
        let page = self
            .shared
            .ledger()?
            .history(user, &HistoryFilter { asset, kind }, page_size, cursor)
            .await
            .map_err(internal)?;
        let deposits = deposits_of(&self.shared, &page.items).await?;
        Ok(Response::new(pb::ListTransactionsResponse {
            transactions: page
                .items
                .into_iter()
                .map(|item| transaction_to_pb(item, &deposits))
                .collect(),
            next_page_token: page.next_cursor.map(encode_token).unwrap_or_default(),
        }))
    }

    async fn get_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        let user = acting_for(&caller, body.user_id.as_deref(), Access::Read)?;
        let id: i64 = body
            .id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| Status::from(FieldError::new("id", "must be a transaction id")))?;
        let item = self
            .shared
            .ledger()?
            .history_item(user, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("id: no such transaction"))?;
        let deposits = deposits_of(&self.shared, std::slice::from_ref(&item)).await?;
        Ok(Response::new(transaction_to_pb(item, &deposits)))
    }
}
