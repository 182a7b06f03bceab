//! `coffer.v1.WalletService`.

use std::collections::HashMap;

use chains::Chain;
use indexer::users::Role;
use indexer::wallets::Wallet;
use tonic::{Request, Response, Status};

use super::pb::{self, wallet_service_server::WalletService};
use super::{Access, Shared, acting_for, internal, parse_uuid, timestamp};
use crate::auth::FieldError;

#[derive(Debug)]
pub struct WalletApi {
    shared: Shared,
}

impl WalletApi {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

fn chain_from_pb(value: i32) -> Result<Chain, Status> {
    match pb::Chain::try_from(value) {
        Ok(pb::Chain::Bitcoin) => Ok(Chain::Bitcoin),
        Ok(pb::Chain::Ethereum) => Ok(Chain::Ethereum),
        Ok(pb::Chain::Solana) => Ok(Chain::Solana),
        Ok(pb::Chain::Unspecified) => Err(FieldError::new("chain", "must be set").into()),
        Err(_) => Err(FieldError::new("chain", format!("unknown value {value}")).into()),
    }
}

pub(super) fn chain_to_pb(chain: Chain) -> pb::Chain {
    match chain {
        Chain::Bitcoin => pb::Chain::Bitcoin,
        Chain::Ethereum => pb::Chain::Ethereum,
        Chain::Solana => pb::Chain::Solana,
    }
}

fn wallet_to_pb(wallet: Wallet) -> pb::Wallet {
    pb::Wallet {
        id: wallet.id.to_string(),
        user_id: wallet.user_id.to_string(),
        chain: chain_to_pb(wallet.chain).into(),
        created_at: Some(timestamp(wallet.created_at)),
    }
}

#[tonic::async_trait]
impl WalletService for WalletApi {
    async fn create_wallet(
        &self,
        request: Request<pb::CreateWalletRequest>,
    ) -> Result<Response<pb::Wallet>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        let user = self
            .shared
            .acting_for(&caller, body.user_id.as_deref(), Access::Write)
            .await?;
        let chain = chain_from_pb(body.chain)?;
        let wallet = self
            .shared
            .wallets()?
            .create(user, chain)
            .await
            .map_err(|err| match err {
                indexer::Error::WalletExists => {
                    Status::already_exists(format!("chain: the user already has a {chain} wallet"))
                }
                other => internal(other),
            })?;
        Ok(Response::new(wallet_to_pb(wallet)))
    }

    async fn list_wallets(
        &self,
        request: Request<pb::ListWalletsRequest>,
    ) -> Result<Response<pb::ListWalletsResponse>, Status> {
        let caller = self.shared.caller(&request).await?;
        let user = acting_for(&caller, request.get_ref().user_id.as_deref(), Access::Read)?;
        let wallets = self.shared.wallets()?.list(user).await.map_err(internal)?;
        Ok(Response::new(pb::ListWalletsResponse {
            wallets: wallets.into_iter().map(wallet_to_pb).collect(),
        }))
    }

    async fn new_deposit_address(
        &self,
        request: Request<pb::NewDepositAddressRequest>,
    ) -> Result<Response<pb::DepositAddress>, Status> {
        let caller = self.shared.caller(&request).await?;
        let wallet_id = parse_uuid("wallet_id", &request.get_ref().wallet_id)?;
        let wallets = self.shared.wallets()?;
        // Another user's wallet is NOT_FOUND, exactly like a missing one.
        let wallet = wallets
            .get(wallet_id)
            .await
            .map_err(internal)?
            .filter(|w| {
                w.user_id == caller.id || matches!(caller.role, Role::Service | Role::Admin)
            })
            .ok_or_else(|| Status::not_found("wallet_id: no such wallet"))?;
        if wallet.user_id != caller.id {
            self.shared
                .require_enabled("wallet_id", wallet.user_id)
                .await?;
        }
        let issued = wallets.new_address(&wallet).await.map_err(internal)?;
        Ok(Response::new(pb::DepositAddress {
            address: issued.address,
            chain: chain_to_pb(issued.chain).into(),
            wallet_id: issued.wallet_id.to_string(),
            derivation_path: issued.derivation_path,
            created_at: Some(timestamp(issued.created_at)),
        }))
    }

    async fn get_balances(
        &self,
        request: Request<pb::GetBalancesRequest>,
    ) -> Result<Response<pb::GetBalancesResponse>, Status> {
        let caller = self.shared.caller(&request).await?;
        let user = acting_for(&caller, request.get_ref().user_id.as_deref(), Access::Read)?;
        let ledger = self.shared.ledger()?;
        let decimals: HashMap<String, u8> = ledger
            .assets()
            .await
            .map_err(internal)?
            .into_iter()
            .map(|asset| (asset.code, asset.decimals))
            .collect();
        let balances = ledger.balances(user).await.map_err(internal)?;
        Ok(Response::new(pb::GetBalancesResponse {
            balances: balances
                .into_iter()
                .map(|b| pb::Balance {
                    decimals: decimals
                        .get(&b.asset)
                        .copied()
                        .map(u32::from)
                        .unwrap_or_default(),
                    asset: b.asset,
                    available: b.available.to_string(),
                    pending: b.pending.to_string(),
                    held: b.held.to_string(),
                })
                .collect(),
        }))
    }
}
