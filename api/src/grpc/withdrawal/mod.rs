//! `coffer.v1.WithdrawalService`: requests, reads, the reviews before
//! signing and the resolution of manual rows, over `indexer::withdrawals::Withdrawals`, which enforces the
//! states, the hold, the daily limit and the four-eyes rule. Here: who
//! may call what, the destination's format (`destination`), and what a
//! withdrawal looks like to a client (its transactions and confirmations).

mod destination;

use std::collections::HashMap;
use std::sync::OnceLock;

use chains::Chain;
use indexer::users::{Role, User};
use indexer::withdrawals::{
    ManualResolution, NewWithdrawal, Withdrawal, WithdrawalFilter, WithdrawalPolicy,
    WithdrawalStatus, Withdrawals,
};
use tonic::{Request, Response, Status};

use super::pb::{self, withdrawal_service_server::WithdrawalService};
use super::wallet::chain_to_pb;
use super::{
    Access, Shared, acting_for, idempotency_key, internal, ledger_status, parse_amount, parse_uuid,
    require_role, timestamp,
};
use crate::auth::FieldError;

const DEFAULT_PAGE_SIZE: u32 = 50;
/// Page tokens are opaque to clients; the prefix versions their format.
const TOKEN_PREFIX: &str = "w1:";
const OWN_ADDRESS: &str = "destination: is one of Coffer's own addresses; paying a Coffer user is \
     a P2P transfer (use SettlementService.Transfer), not a withdrawal";

#[derive(Debug)]
pub struct WithdrawalApi {
    shared: Shared,
    policy: WithdrawalPolicy,
    /// Built on first use, once the database is there.
    store: OnceLock<Withdrawals>,
    /// Each chain's hot wallet address, derived once.
    hot_wallets: HashMap<Chain, String>,
}

impl WithdrawalApi {
    pub fn new(shared: Shared, policy: WithdrawalPolicy) -> Result<Self, signer::Error> {
        let hot_wallets = [Chain::Bitcoin, Chain::Ethereum, Chain::Solana]
            .into_iter()
            .map(|chain| {
                let address = shared.deposit_keys.hot_wallet_address(chain)?.address;
                Ok((chain, address))
            })
            .collect::<Result<_, signer::Error>>()?;
        Ok(Self {
            shared,
            policy,
            store: OnceLock::new(),
            hot_wallets,
        })
    }

    fn store(&self) -> Result<&Withdrawals, Status> {
        let ledger = self.shared.ledger()?;
        Ok(self
            .store
            .get_or_init(|| Withdrawals::new(ledger.clone(), self.policy.clone())))
    }

    /// The withdrawal `id` names, if the caller may see it: users see their
    /// own, staff and services everyone's. Anything else is NOT_FOUND, like
    /// a missing one, so existence does not leak.
    async fn visible(&self, caller: &User, id: &str) -> Result<Withdrawal, Status> {
        let id = parse_id(id)?;
        self.store()?
            .get(id)
            .await
            .map_err(internal)?
            .filter(|w| w.user == caller.id || caller.role != Role::User)
            .ok_or_else(|| Status::not_found("id: no such withdrawal"))
    }

    /// Refuses a destination that is a deposit address Coffer issued or a
    /// hot wallet: money between Coffer's users moves on the ledger.
    async fn refuse_own_address(&self, chain: Chain, destination: &str) -> Result<(), Status> {
        let hot = self
            .hot_wallets
            .get(&chain)
            .is_some_and(|hot| hot.eq_ignore_ascii_case(destination));
        let issued = self
            .shared
            .wallets()?
            .owner_of_address(chain, destination)
            .await
            .map_err(internal)?
            .is_some();
        if hot || issued {
            return Err(Status::invalid_argument(OWN_ADDRESS));
        }
        Ok(())
    }

    /// The client's view of `withdrawal`: its transactions' hashes and
    /// confirmations, reading each chain's recorded head at most once per
    /// call (`heads`).
    async fn to_pb(
        &self,
        withdrawal: Withdrawal,
        heads: &mut HashMap<Chain, Option<u64>>,
    ) -> Result<pb::Withdrawal, Status> {
        let attempts = match withdrawal.current_attempt_id {
            Some(_) => self
                .store()?
                .attempts(withdrawal.id)
                .await
                .map_err(internal)?,
            None => Vec::new(),
        };
        let tx_hash = attempts
            .iter()
            .find(|a| Some(a.id) == withdrawal.current_attempt_id)
            .map(|a| a.tx_hash.clone())
            .unwrap_or_default();
        let landed = attempts.iter().find_map(|a| a.landed_block_height);
        let confirmations = match landed {
            None => 0,
            Some(landed) => {
                let head = match heads.get(&withdrawal.chain) {
                    Some(head) => *head,
                    None => {
                        let pool = self.shared.pool()?;
                        let head = indexer::chain_heads::recorded_head(pool, withdrawal.chain)
                            .await
                            .map_err(internal)?
                            .map(|h| h.height);
                        heads.insert(withdrawal.chain, head);
                        head
                    }
                };
                // A head recorded before the block landed still means one.
                head.map_or(1, |head| head.saturating_sub(landed) + 1)
                    .max(1)
            }
        };
        Ok(pb::Withdrawal {
            id: withdrawal.id.to_string(),
            user_id: withdrawal.user.to_string(),
            asset: withdrawal.asset,
            chain: chain_to_pb(withdrawal.chain).into(),
            amount: withdrawal.amount.to_string(),
            fee: withdrawal.fee.to_string(),
            destination: withdrawal.destination,
            status: status_to_pb(withdrawal.status).into(),
            tx_hashes: attempts.into_iter().map(|a| a.tx_hash).collect(),
            tx_hash,
            confirmations,
            reason: withdrawal.reason.unwrap_or_default(),
            requested_by: withdrawal.requested_by.to_string(),
            approved_by: withdrawal
                .approved_by
                .map(|id| id.to_string())
                .unwrap_or_default(),
            requested_at: Some(timestamp(withdrawal.requested_at)),
            approved_at: withdrawal.approved_at.map(timestamp),
            finished_at: withdrawal.finished_at.map(timestamp),
            resolution: withdrawal
                .resolution
                .map_or(pb::ManualResolution::Unspecified, |r| match r {
                    ManualResolution::Release => pb::ManualResolution::Release,
                    ManualResolution::Settle => pb::ManualResolution::Settle,
                })
                .into(),
            resolved_by: withdrawal
                .resolution_by
                .map(|id| id.to_string())
                .unwrap_or_default(),
        })
    }

    async fn one(&self, withdrawal: Withdrawal) -> Result<Response<pb::Withdrawal>, Status> {
        Ok(Response::new(
            self.to_pb(withdrawal, &mut HashMap::new()).await?,
        ))
    }
}

fn parse_id(text: &str) -> Result<i64, Status> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| FieldError::new("id", "must be a withdrawal id").into())
}

fn status_to_pb(status: WithdrawalStatus) -> pb::WithdrawalStatus {
    use pb::WithdrawalStatus as P;
    match status {
        WithdrawalStatus::Requested => P::Requested,
        WithdrawalStatus::Approved => P::Approved,
        WithdrawalStatus::Reserved => P::Reserved,
        WithdrawalStatus::Signed => P::Signed,
        WithdrawalStatus::Broadcast => P::Broadcast,
        WithdrawalStatus::Confirming => P::Confirming,
        WithdrawalStatus::Completed => P::Completed,
        WithdrawalStatus::Failed => P::Failed,
        WithdrawalStatus::Manual => P::Manual,
        WithdrawalStatus::Rejected => P::Rejected,
        WithdrawalStatus::Cancelled => P::Cancelled,
    }
}

/// A status filter: UNSPECIFIED is none.
fn status_from_pb(value: i32) -> Result<Option<WithdrawalStatus>, Status> {
    use pb::WithdrawalStatus as P;
    let status = match P::try_from(value) {
        Ok(P::Unspecified) => return Ok(None),
        Ok(P::Requested) => WithdrawalStatus::Requested,
        Ok(P::Approved) => WithdrawalStatus::Approved,
        Ok(P::Reserved) => WithdrawalStatus::Reserved,
        Ok(P::Signed) => WithdrawalStatus::Signed,
        Ok(P::Broadcast) => WithdrawalStatus::Broadcast,
        Ok(P::Confirming) => WithdrawalStatus::Confirming,
        Ok(P::Completed) => WithdrawalStatus::Completed,
        Ok(P::Failed) => WithdrawalStatus::Failed,
        Ok(P::Manual) => WithdrawalStatus::Manual,
        Ok(P::Rejected) => WithdrawalStatus::Rejected,
        Ok(P::Cancelled) => WithdrawalStatus::Cancelled,
        Err(_) => return Err(FieldError::new("status", format!("unknown value {value}")).into()),
    };
    Ok(Some(status))
}

fn encode_token(id: i64) -> String {
    super::encode_page_token(TOKEN_PREFIX, id)
}

fn decode_token(token: &str) -> Result<Option<i64>, Status> {
    super::decode_page_token(TOKEN_PREFIX, token.trim())
}

#[tonic::async_trait]
impl WithdrawalService for WithdrawalApi {
    async fn request_withdrawal(
        &self,
        request: Request<pb::RequestWithdrawalRequest>,
    ) -> Result<Response<pb::Withdrawal>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        // The request's own transaction refuses a missing or disabled user
        // (NOT_FOUND or FAILED_PRECONDITION naming `user_id`) under the row
        // lock, so it is not looked up here first.
        let user = acting_for(&caller, body.user_id.as_deref(), Access::Write)?;
        let key = idempotency_key(user, &body.idempotency_key)?;
        let code = body.asset.trim().to_uppercase();
        if code.is_empty() {
            return Err(FieldError::new("asset", "is required").into());
        }
        let asset = self
            .shared
            .ledger()?
            .asset(&code)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Status::from(FieldError::new("asset", format!("unknown asset `{code}`")))
            })?;
        let amount = parse_amount("amount", &body.amount)?;
        let network = self.shared.deposit_keys.bitcoin_network();
        let destination = destination::canonical(asset.chain, &body.destination, network)?;
        if self.policy.asset(&code).is_none() {
            return Err(Status::failed_precondition(format!(
                "asset: withdrawals of `{code}` are not enabled"
            )));
        }
        self.refuse_own_address(asset.chain, &destination).await?;
        let withdrawal = self
            .store()?
            .request(
                &key,
                &NewWithdrawal {
                    user,
                    asset: code,
                    chain: asset.chain,
                    amount,
                    destination,
                    requested_by: caller.id,
                },
            )
            .await
            .map_err(ledger_status)?;
        self.one(withdrawal).await
    }

    async fn get_withdrawal(
        &self,
        request: Request<pb::GetWithdrawalRequest>,
    ) -> Result<Response<pb::Withdrawal>, Status> {
        let caller = self.shared.caller(&request).await?;
        let withdrawal = self.visible(&caller, &request.get_ref().id).await?;
        self.one(withdrawal).await
    }

    async fn list_withdrawals(
        &self,
        request: Request<pb::ListWithdrawalsRequest>,
    ) -> Result<Response<pb::ListWithdrawalsResponse>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        let named = body.user_id.as_deref().filter(|id| !id.trim().is_empty());
        // Users list their own; everyone else everyone's, or one user's.
        let user = match (caller.role, named) {
            (Role::User, _) => Some(acting_for(&caller, named, Access::Read)?),
            (_, Some(id)) => Some(parse_uuid("user_id", id)?),
            (_, None) => None,
        };
        let filter = WithdrawalFilter {
            user,
            status: status_from_pb(body.status)?,
        };
        let page_size = match body.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(indexer::withdrawals::MAX_PAGE_SIZE),
        };
        let cursor = decode_token(&body.page_token)?;
        let page = self
            .store()?
            .list(&filter, page_size, cursor)
            .await
            .map_err(ledger_status)?;
        let mut heads = HashMap::new();
        let mut withdrawals = Vec::with_capacity(page.items.len());
        for withdrawal in page.items {
            withdrawals.push(self.to_pb(withdrawal, &mut heads).await?);
        }
        Ok(Response::new(pb::ListWithdrawalsResponse {
            withdrawals,
            next_page_token: page.next_cursor.map(encode_token).unwrap_or_default(),
        }))
    }

    async fn cancel_withdrawal(
        &self,
        request: Request<pb::CancelWithdrawalRequest>,
    ) -> Result<Response<pb::Withdrawal>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        let withdrawal = self.visible(&caller, &body.id).await?;
        // The owner, or whoever may act for them; an operator rejects instead.
        if withdrawal.user != caller.id && !matches!(caller.role, Role::Service | Role::Admin) {
            return Err(Status::permission_denied(
                "id: only its owner, a service or an admin may cancel a withdrawal (operators reject)",
            ));
        }
        let cancelled = self
            .store()?
            .cancel(withdrawal.id, caller.id, body.reason.as_deref())
            .await
            .map_err(ledger_status)?;
        self.one(cancelled).await
    }

    async fn approve_withdrawal(
        &self,
        request: Request<pb::ApproveWithdrawalRequest>,
    ) -> Result<Response<pb::Withdrawal>, Status> {
        let caller = self.shared.caller(&request).await?;
        require_role(&caller, &[Role::Operator, Role::Admin])?;
        let withdrawal = self.visible(&caller, &request.get_ref().id).await?;
        // A disabled account's withdrawal can be rejected, never sent.
        let owner = self.shared.users()?.by_id(withdrawal.user).await;
        if owner.map_err(internal)?.is_none_or(|owner| owner.disabled) {
            return Err(Status::failed_precondition(
                "id: the withdrawal's owner is disabled; reject it instead",
            ));
        }
        let approved = self
            .store()?
            .approve(withdrawal.id, caller.id)
            .await
            .map_err(ledger_status)?;
        self.one(approved).await
    }

    async fn reject_withdrawal(
        &self,
        request: Request<pb::RejectWithdrawalRequest>,
    ) -> Result<Response<pb::Withdrawal>, Status> {
        let caller = self.shared.caller(&request).await?;
        require_role(&caller, &[Role::Operator, Role::Admin])?;
        let body = request.into_inner();
        let id = parse_id(&body.id)?;
        let rejected = self
            .store()?
            .reject(id, caller.id, &body.reason)
            .await
            .map_err(ledger_status)?;
        self.one(rejected).await
    }

    async fn resolve_withdrawal(
        &self,
        request: Request<pb::ResolveWithdrawalRequest>,
    ) -> Result<Response<pb::Withdrawal>, Status> {
        let caller = self.shared.caller(&request).await?;
        require_role(&caller, &[Role::Admin])?;
        let body = request.into_inner();
        let id = parse_id(&body.id)?;
        let resolution = match pb::ManualResolution::try_from(body.resolution) {
            Ok(pb::ManualResolution::Release) => ManualResolution::Release,
            Ok(pb::ManualResolution::Settle) => ManualResolution::Settle,
            Ok(pb::ManualResolution::Unspecified) => {
                return Err(
                    FieldError::new("resolution", "is required (RELEASE or SETTLE)").into(),
                );
            }
            Err(_) => {
                return Err(FieldError::new(
                    "resolution",
                    format!("unknown value {}", body.resolution),
                )
                .into());
            }
        };
        let resolved = self
            .store()?
            .resolve_manual(id, caller.id, resolution, &body.reason)
            .await
            .map_err(ledger_status)?;
        self.one(resolved).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn every_status_maps_both_ways() {
        for status in WithdrawalStatus::ALL {
            let value = i32::from(status_to_pb(status));
            assert_eq!(status_from_pb(value).ok(), Some(Some(status)));
        }
        assert_eq!(status_from_pb(0).ok(), Some(None));
        assert!(status_from_pb(99).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_strangers() {
        assert_eq!(decode_token(&encode_token(42)).ok(), Some(Some(42)));
        assert_eq!(decode_token("").ok(), Some(None));
        for bad in ["42", "djE6NDI", &URL_SAFE_NO_PAD.encode("w1:-1")] {
            assert!(decode_token(bad).is_err(), "{bad}");
        }
    }
}
