//! Sweeps: deposit addresses whose final balance passes a threshold are
//! emptied into the hot wallet through the same pipeline as withdrawals.
//!
//! Ether: the balance less the sweep's own gas at this round's max fee
//! (what the node reserves up front), so the transaction always fits;
//! whatever the fee leaves unspent stays at the address, counted in
//! custody, and is swept with the next deposit. A token: if the address
//! lacks the ether for the token transfer's gas, the hot wallet first
//! sends it exactly that (a gas top-up); the next round, with the top-up
//! landed, the token sweep is created. An address with a token to sweep
//! is never ether-swept meanwhile, so the top-up is not swept back.
//! Only what is final is swept (the smaller of the balance at the final
//! height and now), so a reorg never takes back funds a sweep spent.

use std::collections::BTreeMap;

use alloy_primitives::{Address, U256};
use chains::ethereum::{BlockNumberOrTag, GasEstimate};

use super::{CHAIN, EthereumPayouts, Round, TRANSFER_GAS, erc20_transfer};
use crate::Result;
use crate::ledger::Amount;
use crate::metrics::SWEEPS;
use crate::withdrawals::{OwnTransfer, PayoutKind};

/// Per asset, the smallest balance worth sweeping, in base units; an
/// asset without a threshold is never swept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepThresholds {
    pub assets: BTreeMap<String, Amount>,
}

impl EthereumPayouts {
    pub(super) async fn sweep(&self, round: &Round) -> Result<()> {
        let Some(fees) = round.fees else {
            return Ok(());
        };
        let thresholds = &self.config.sweeps.assets;
        if thresholds.is_empty() {
            return Ok(());
        }
        let final_tag = BlockNumberOrTag::Number(round.final_height);
        let native = self.config.native_asset.clone();
        for candidate in self.store.sweep_candidates(CHAIN).await? {
            let Ok(address) = candidate.address.parse::<Address>() else {
                continue;
            };
            let eth = self.client.balance(address, final_tag).await?.min(
                self.client
                    .balance(address, BlockNumberOrTag::Latest)
                    .await?,
            );
            // Tokens first: their gas must not be swept away.
            let mut token_due = false;
            for asset in &candidate.assets {
                let (Some(token), Some(threshold)) =
                    (self.config.tokens.get(asset), thresholds.get(asset))
                else {
                    continue;
                };
                let balance = self
                    .client
                    .token_balance(*token, address, final_tag)
                    .await?
                    .min(
                        self.client
                            .token_balance(*token, address, BlockNumberOrTag::Latest)
                            .await?,
                    );
                if balance.is_zero() || Amount::from_u256(balance) < *threshold {
                    continue;
                }
                token_due = true;
                let estimate = self
                    .client
                    .estimate_gas(
                        address,
                        *token,
                        U256::ZERO,
                        &erc20_transfer(self.hot_wallet, balance),
                    )
                    .await?;
                let gas = match estimate {
                    GasEstimate::Gas(gas) => gas.saturating_mul(6) / 5,
                    GasEstimate::Fails(reason) => {
                        // A token that refuses (a frozen holder, a paused
                        // contract) is not swept: a sweep would only revert
                        // and burn a top-up's gas each time.
                        tracing::warn!(%address, asset, %reason, "token sweep would fail; not swept");
                        continue;
                    }
                };
                let needed = U256::from(fees.max_fee_per_gas.saturating_mul(u128::from(gas)));
                if eth < needed {
                    let top_up = needed - eth;
                    self.create(
                        PayoutKind::GasTopUp,
                        &native,
                        Amount::from_u256(top_up),
                        self.hot_wallet,
                        None,
                        address,
                    )
                    .await?;
                } else {
                    self.create(
                        PayoutKind::Sweep,
                        asset,
                        Amount::from_u256(balance),
                        address,
                        Some(candidate.derivation_index),
                        self.hot_wallet,
                    )
                    .await?;
                }
                // One transaction per address per round: nonces stay simple.
                break;
            }
            if token_due {
                continue;
            }
            let Some(threshold) = thresholds.get(&native) else {
                continue;
            };
            let gas_cost = U256::from(
                fees.max_fee_per_gas
                    .saturating_mul(u128::from(TRANSFER_GAS)),
            );
            if Amount::from_u256(eth) < *threshold || eth <= gas_cost {
                continue;
            }
            self.create(
                PayoutKind::Sweep,
                &native,
                Amount::from_u256(eth - gas_cost),
                address,
                Some(candidate.derivation_index),
                self.hot_wallet,
            )
            .await?;
        }
        Ok(())
    }

    async fn create(
        &self,
        kind: PayoutKind,
        asset: &str,
        amount: Amount,
        from: Address,
        from_key_index: Option<u32>,
        to: Address,
    ) -> Result<()> {
        let pending = self.client.pending_nonce(from).await?;
        let (payout, reservation) = self
            .store
            .create_own_transfer(
                &OwnTransfer {
                    kind,
                    asset: asset.to_owned(),
                    amount,
                    from_address: from.to_string(),
                    from_key_index,
                    destination: to.to_string(),
                },
                pending,
            )
            .await?;
        metrics::counter!(SWEEPS, "chain" => CHAIN.as_str(), "asset" => asset.to_owned(), "kind" => kind.as_str())
            .increment(1);
        tracing::info!(
            id = payout.id,
            kind = kind.as_str(),
            asset,
            %amount,
            %from,
            nonce = reservation.nonce,
            "own transfer created"
        );
        Ok(())
    }
}
