//! The Ethereum payout loop: it drives every row of the withdrawal
//! pipeline on Ethereum (withdrawals, sweeps, gas top-ups, fillers) from
//! approved to completed, one round per poll interval:
//!
//! 1. **Plan**: the hot wallet's balances, less what rows not yet in a
//!    block already owe, decide which approved withdrawals get a nonce;
//!    the rest wait (still held, marked so). Deposit addresses are swept.
//! 2. **Sign**: each reserved row is built (EIP-1559, fees from
//!    `eth_feeHistory`: max fee = 2 × base fee + tip, under the cap),
//!    signed by `signer`, and the round's bytes and hashes committed in
//!    one transaction before anything is sent.
//! 3. **Replace**: an attempt unmined `replace_after_blocks` after its
//!    first send is replaced under the same nonce with both fee fields
//!    raised at least 10% (up to the cap); every attempt stays a candidate.
//! 4. **Send**: committed bytes never sent, or not seen for
//!    `rebroadcast_after_blocks`, are sent (no row held, many at once),
//!    and the node's answer classified: accepted or already known →
//!    broadcast, recorded together; underpriced →
//!    replace; insufficient funds → wait; nonce too low → the chain says
//!    what landed; anything else → counted and shown with the row, and the
//!    same bytes sent again (a refusal proves nothing, and setting the row
//!    aside would leave its nonce a gap). Transport errors resend the same
//!    bytes next round.
//! 5. **Track**: one batch of receipts for every attempt in flight or in
//!    a manual row; a landed attempt → confirming (a manual row's too); a
//!    confirming one whose block left the chain → broadcast; one final (at
//!    the `finalized` tag, or at the configured depth) → completed or
//!    failed, with the ledger in the same transaction. An admin's
//!    resolution of a manual row is applied once the chain proves none of
//!    its attempts can land (no receipt, its nonce used at a final height).
//!
//! Each row is claimed with `FOR UPDATE SKIP LOCKED` for its step, so any
//! number of loops (threads or replicas) can run; one row's error is
//! logged and counted and never stops the others.

mod sweeps;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use chains::Chain;
use chains::ethereum::{
    BlockNumberOrTag, EthereumClient, GasCall, GasEstimate, SendOutcome, TxReceipt,
};
use signer::ethereum::{Payment, UnsignedTransaction};
use signer::{DepositKeys, KeyId};
use tokio_util::sync::CancellationToken;

use crate::ledger::Amount;
use crate::metrics::{
    HOT_WALLET_BALANCE, PAYOUT_LOOP_ERRORS, PAYOUT_STEP_DURATION, WITHDRAWAL_SENDS,
    WITHDRAWAL_TO_BROADCAST, WITHDRAWAL_TO_COMPLETION, WITHDRAWALS_BY_STATUS, WITHDRAWALS_STUCK,
    WITHDRAWALS_WAITING,
};
use crate::withdrawals::{
    Attempt, Claimed, Landing, Payout, PayoutKind, SignedAttempt, WithdrawalStatus, Withdrawals,
    bumped,
};
use crate::{Error, Result};

pub use sweeps::SweepThresholds;

const CHAIN: Chain = Chain::Ethereum;
/// Gas of a plain ether transfer to an account without code.
const TRANSFER_GAS: u64 = 21_000;
/// Gas assumed for a token transfer whose estimate fails (it then lands
/// and reverts, using its nonce, rather than leaving a gap).
const FALLBACK_TOKEN_GAS: u64 = 100_000;
/// Rows read per page of the in-flight set.
const PAGE: i64 = 500;
/// The most approved withdrawals one round budgets and reserves, in one
/// transaction.
const PLAN_BATCH: i64 = 500;
/// Calls to the node in flight at once for steps that hold no database
/// connection meanwhile (builds, sends).
const NODE_CONCURRENCY: usize = 32;
/// Gas estimates asked of the node in one JSON-RPC batch.
const ESTIMATE_BATCH: usize = 200;
/// Signed transactions sent in one JSON-RPC batch, and batches in flight.
const SEND_BATCH: usize = 100;
const SEND_BATCHES_IN_FLIGHT: usize = 4;

/// The loop's settings; `api::config` starts from [`Default`].
#[derive(Clone, Debug)]
pub struct EthereumPayoutConfig {
    pub chain_id: u64,
    /// The chain's native asset code, in which gas is booked.
    pub native_asset: String,
    /// Allow-listed tokens Coffer can pay out: asset code → contract.
    pub tokens: BTreeMap<String, Address>,
    pub poll_interval: Duration,
    /// The most any attempt offers per gas, in wei.
    pub max_fee_per_gas_cap: u128,
    /// The least priority fee offered, in wei.
    pub min_priority_fee_per_gas: u128,
    pub fee_history_blocks: u64,
    pub tip_percentile: f64,
    /// Blocks after an attempt's first send without it being mined before
    /// it is replaced.
    pub replace_after_blocks: u64,
    /// Blocks after a send before the same bytes are sent again.
    pub rebroadcast_after_blocks: u64,
    /// Final at the node's `finalized` tag when it serves one; otherwise,
    /// or with the tag off, at `confirmations` (the tip counts as one).
    pub use_finalized_tag: bool,
    pub confirmations: u64,
    /// The node refusing one attempt this many times in a row (for a
    /// reason the loop has no rule for) is logged as an error; the same
    /// bytes keep going out and the row shows the node's message.
    pub max_send_rejections: u32,
    /// A row signed longer ago than this and still unmined counts as stuck.
    pub stuck_after: Duration,
    pub sweeps: SweepThresholds,
    /// Rows signed, sent or tracked concurrently; each holds one database
    /// connection while it talks to the node, so keep it under the pool
    /// the loop shares.
    pub concurrency: usize,
}

impl Default for EthereumPayoutConfig {
    fn default() -> Self {
        Self {
            chain_id: 1,
            native_asset: "ETH".into(),
            tokens: BTreeMap::new(),
            poll_interval: Duration::from_secs(2),
            max_fee_per_gas_cap: 500_000_000_000,
            min_priority_fee_per_gas: 1_000_000_000,
            fee_history_blocks: 10,
            tip_percentile: 50.0,
            replace_after_blocks: 5,
            rebroadcast_after_blocks: 2,
            use_finalized_tag: true,
            confirmations: 12,
            max_send_rejections: 3,
            stuck_after: Duration::from_secs(600),
            sweeps: SweepThresholds::default(),
            concurrency: 4,
        }
    }
}

/// The Ethereum payout loop (see the module docs).
#[derive(Clone)]
pub struct EthereumPayouts {
    client: EthereumClient,
    store: Withdrawals,
    keys: std::sync::Arc<DepositKeys>,
    hot_wallet: Address,
    config: std::sync::Arc<EthereumPayoutConfig>,
}

impl std::fmt::Debug for EthereumPayouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthereumPayouts")
            .field("hot_wallet", &self.hot_wallet)
            .finish_non_exhaustive()
    }
}

/// Fees for this round's new attempts.
#[derive(Clone, Copy, Debug)]
struct Fees {
    max_fee_per_gas: u128,
    max_priority_fee_per_gas: u128,
}

/// What a round knows of the chain.
#[derive(Clone, Copy, Debug)]
struct Round {
    head: u64,
    final_height: u64,
    /// `None` when the base fee is above the cap: nothing new is signed.
    fees: Option<Fees>,
}

impl EthereumPayouts {
    pub fn new(
        client: EthereumClient,
        store: Withdrawals,
        keys: std::sync::Arc<DepositKeys>,
        config: EthereumPayoutConfig,
    ) -> Result<Self> {
        let hot_wallet = keys
            .hot_wallet_address(CHAIN)
            .map_err(|e| Error::InvalidRequest(format!("hot wallet: {e}")))?
            .address
            .parse()
            .map_err(|e| Error::Corrupt(format!("hot wallet address: {e}")))?;
        Ok(Self {
            client,
            store,
            keys,
            hot_wallet,
            config: std::sync::Arc::new(config),
        })
    }

    pub fn hot_wallet(&self) -> Address {
        self.hot_wallet
    }

    /// Runs rounds until cancelled. A failed round is logged, counted and
    /// followed by the next.
    pub async fn run(self, cancel: CancellationToken) {
        tracing::info!(hot_wallet = %self.hot_wallet, "ethereum payout loop started");
        loop {
            if let Err(err) = self.round().await {
                tracing::warn!(error = %err, "ethereum payout round failed; retrying next round");
                count_error("round");
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        tracing::info!("ethereum payout loop stopped");
    }

    /// One round: plan, sign, track, replace, send; each step's time is
    /// recorded, and the whole round logged at debug level.
    pub async fn round(&self) -> Result<()> {
        let mut steps = Steps::start();
        let round = self.look().await?;
        steps.done("look");
        self.plan_and_sweep(&round).await?;
        steps.done("plan");
        let in_flight = self.in_flight().await?;
        self.sign_reserved(&round, &in_flight).await;
        steps.done("sign");
        let in_flight = self.in_flight().await?;
        if let Err(err) = self.track(&round, &in_flight).await {
            // Sends still go out this round.
            tracing::warn!(error = %err, "tracking receipts failed; retrying next round");
            count_error("track");
        }
        steps.done("track");
        let in_flight = self.in_flight().await?;
        self.replace_stale(&round, &in_flight).await;
        steps.done("replace");
        let in_flight = self.in_flight().await?;
        self.send_due(&round, &in_flight).await;
        steps.done("send");
        self.gauges().await?;
        tracing::debug!(in_flight = in_flight.len(), steps = %steps, "payout round");
        Ok(())
    }

    /// Only the first half of a round: plan, sweep and sign, committing
    /// signed bytes without sending them (the state a crash right after
    /// signing leaves; the next [`Self::round`] sends them).
    pub async fn sign_pending(&self) -> Result<()> {
        let round = self.look().await?;
        self.plan_and_sweep(&round).await?;
        let in_flight = self.in_flight().await?;
        self.sign_reserved(&round, &in_flight).await;
        Ok(())
    }

    async fn look(&self) -> Result<Round> {
        let head = chains::HeadSource::head(&self.client).await?.height;
        let by_depth = head.saturating_sub(self.config.confirmations.saturating_sub(1));
        let final_height = if self.config.use_finalized_tag {
            match self.client.finalized().await? {
                Some(finalized) => finalized.height,
                None => by_depth,
            }
        } else {
            by_depth
        };
        let suggestion = self
            .client
            .fee_suggestion(self.config.fee_history_blocks, self.config.tip_percentile)
            .await?;
        let tip = suggestion
            .priority_fee_per_gas
            .max(self.config.min_priority_fee_per_gas);
        let wanted = suggestion
            .base_fee_per_gas
            .saturating_mul(2)
            .saturating_add(tip);
        let cap = self.config.max_fee_per_gas_cap;
        let fees = (suggestion.base_fee_per_gas.saturating_add(tip) <= cap).then(|| Fees {
            max_fee_per_gas: wanted.min(cap),
            max_priority_fee_per_gas: tip.min(cap),
        });
        if fees.is_none() {
            tracing::warn!(
                base_fee = suggestion.base_fee_per_gas,
                cap,
                "base fee plus tip above max_fee_per_gas_cap; nothing new is signed"
            );
        }
        Ok(Round {
            head,
            final_height,
            fees,
        })
    }

    /// Plans and sweeps under the hot wallet's planning lock, so two loops
    /// (replicas) never budget the same balance twice; while another loop
    /// holds it, this one only signs, tracks and sends.
    async fn plan_and_sweep(&self, round: &Round) -> Result<()> {
        let Some(lock) = self
            .store
            .try_plan_lock(CHAIN, &self.hot_wallet.to_string())
            .await?
        else {
            return Ok(());
        };
        if let Err(err) = self.plan(round).await {
            tracing::warn!(error = %err, "planning failed; retrying next round");
            count_error("plan");
        }
        if let Err(err) = self.sweep(round).await {
            tracing::warn!(error = %err, "sweep planning failed");
            count_error("sweep");
        }
        lock.release().await
    }

    /// Reserves nonces for the approved withdrawals the hot wallet covers.
    async fn plan(&self, round: &Round) -> Result<()> {
        let hot = self.hot_wallet;
        let native = &self.config.native_asset;
        let mut have: BTreeMap<String, Amount> = BTreeMap::new();
        let eth = self.client.balance(hot, BlockNumberOrTag::Latest).await?;
        have.insert(native.clone(), Amount::from_u256(eth));
        for (asset, token) in &self.config.tokens {
            match self
                .client
                .token_balance(*token, hot, BlockNumberOrTag::Latest)
                .await
            {
                Ok(balance) => {
                    have.insert(asset.clone(), Amount::from_u256(balance));
                }
                Err(err) => {
                    tracing::warn!(asset, error = %err, "hot wallet token balance unavailable");
                    count_error("balance");
                }
            }
        }
        for (asset, amount) in &have {
            metrics::gauge!(HOT_WALLET_BALANCE, "chain" => CHAIN.as_str(), "asset" => asset.clone())
                .set(u128::try_from(amount.as_u256()).unwrap_or(u128::MAX) as f64);
        }
        let owed = self
            .store
            .in_flight_spend(CHAIN, &hot.to_string(), native)
            .await?;
        let mut budget: BTreeMap<String, Amount> = have
            .into_iter()
            .map(|(asset, amount)| {
                let owed = owed.get(&asset).copied().unwrap_or_default();
                (asset, amount.checked_sub(owed).unwrap_or_default())
            })
            .collect();
        let Some(fees) = round.fees else {
            return Ok(());
        };
        let gas_of =
            |gas: u64| Amount::from_u128(fees.max_fee_per_gas.saturating_mul(u128::from(gas)));
        // What the next transaction may need for gas stays in the native
        // budget whatever is paid, so a covered withdrawal always fits.
        let reserve = gas_of(FALLBACK_TOKEN_GAS);
        let left = |budget: &BTreeMap<String, Amount>, asset: &str| {
            budget.get(asset).copied().unwrap_or_default()
        };
        let (mut chosen, mut uncovered) = (Vec::new(), Vec::new());
        for queued in self.store.approved_queue(PLAN_BATCH).await? {
            let is_native = queued.asset == *native;
            let covered = if is_native {
                queued
                    .amount
                    .checked_add(reserve)
                    .is_some_and(|needed| left(&budget, native) >= needed)
            } else {
                budget.contains_key(&queued.asset)
                    && left(&budget, &queued.asset) >= queued.amount
                    && left(&budget, native) >= reserve
            };
            if !covered {
                uncovered.push(queued.id);
                continue;
            }
            let gas = gas_of(if is_native {
                TRANSFER_GAS
            } else {
                FALLBACK_TOKEN_GAS
            });
            for (asset, amount) in [(queued.asset.as_str(), queued.amount), (native, gas)] {
                if let Some(left) = budget.get_mut(asset) {
                    *left = left.checked_sub(amount).unwrap_or_default();
                }
            }
            chosen.push(queued.id);
        }
        self.store
            .mark_waiting(&uncovered, crate::withdrawals::HOT_WALLET_SHORT)
            .await?;
        if !chosen.is_empty() {
            let pending = self.client.pending_nonce(hot).await?;
            self.store
                .reserve_nonces(&hot.to_string(), pending, &chosen)
                .await?;
        }
        Ok(())
    }

    /// Every row in flight (reserved through confirming), with attempts.
    async fn in_flight(&self) -> Result<Vec<(Payout, Vec<Attempt>)>> {
        let mut rows = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.in_flight(CHAIN, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let full = page.len() as i64 == PAGE;
            rows.extend(page);
            if !full {
                break;
            }
        }
        let ids: Vec<i64> = rows.iter().map(|p| p.id).collect();
        let mut attempts: HashMap<i64, Vec<Attempt>> = HashMap::new();
        for attempt in self.store.attempts_of(&ids).await? {
            attempts
                .entry(attempt.withdrawal_id)
                .or_default()
                .push(attempt);
        }
        Ok(rows
            .into_iter()
            .map(|p| {
                let a = attempts.remove(&p.id).unwrap_or_default();
                (p, a)
            })
            .collect())
    }

    /// Runs `f` on each item, `concurrency` (the config's) at a time;
    /// an item's error is logged and counted, never stopping the others.
    async fn for_each<'a, T, F, Fut>(
        &self,
        items: impl IntoIterator<Item = T>,
        step: &'static str,
        f: F,
    ) where
        F: Fn(T) -> Fut,
        Fut: Future<Output = Result<()>> + 'a,
    {
        self.for_each_at(items, step, self.config.concurrency, f)
            .await;
    }

    async fn for_each_at<'a, T, F, Fut>(
        &self,
        items: impl IntoIterator<Item = T>,
        step: &'static str,
        concurrency: usize,
        f: F,
    ) where
        F: Fn(T) -> Fut,
        Fut: Future<Output = Result<()>> + 'a,
    {
        use futures::StreamExt;
        let results: Vec<Result<()>> = futures::stream::iter(items)
            .map(f)
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        for err in results.into_iter().filter_map(|r| r.err()) {
            tracing::warn!(step, error = %err, "payout step failed for one row; retrying next round");
            count_error(step);
        }
    }

    /// Signs and commits the first attempt of each reserved row.
    async fn sign_reserved(&self, round: &Round, rows: &[(Payout, Vec<Attempt>)]) {
        let Some(fees) = round.fees else { return };
        let reserved = rows
            .iter()
            .filter(|(p, _)| p.status == WithdrawalStatus::Reserved)
            .map(|(p, _)| p.clone())
            .collect::<Vec<_>>();
        if reserved.is_empty() {
            return;
        }
        let ids: Vec<i64> = reserved.iter().map(|p| p.id).collect();
        let nonces = match self.store.nonce_reservations_of(&ids).await {
            Ok(nonces) => nonces,
            Err(err) => {
                tracing::warn!(error = %err, "reading reserved nonces failed; retrying next round");
                count_error("sign");
                return;
            }
        };
        let limits = match self.gas_limits(&reserved).await {
            Ok(limits) => limits,
            Err(err) => {
                tracing::warn!(error = %err, "gas estimates failed; retrying next round");
                count_error("sign");
                return;
            }
        };
        let signed = std::sync::Mutex::new(Vec::new());
        // Builds hold no database connection; a row left without an
        // estimate asks the node on its own.
        self.for_each_at(reserved, "sign", NODE_CONCURRENCY, |payout| {
            let (signed, nonces, limits) = (&signed, &nonces, &limits);
            async move {
                let payout = &payout;
                let nonce = nonces
                    .get(&payout.id)
                    .ok_or_else(|| {
                        Error::Corrupt(format!("row {} reserved without a nonce", payout.id))
                    })?
                    .nonce;
                let built = match limits.get(&payout.id) {
                    Some(Some(gas)) => self.build_with_gas(payout, nonce, fees, None, *gas).await?,
                    Some(None) => None,
                    None => self.build(payout, nonce, fees, None).await?,
                };
                match built {
                    Some(attempt) => signed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((payout.id, attempt)),
                    None => self.unsendable(payout).await?,
                }
                Ok(())
            }
        })
        .await;
        let signed = signed
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One commit for the round's signatures; if any row refuses, each
        // is recorded on its own, so one bad row never holds the others.
        if let Err(err) = self.store.record_signed_many(&signed).await {
            tracing::warn!(error = %err, "recording signatures together failed; recording them one by one");
            self.for_each(signed, "sign", |(id, attempt)| async move {
                self.store.record_signed(id, &attempt).await.map(|_| ())
            })
            .await;
        }
    }

    /// Builds and signs a row's transaction at `nonce`; with `replacing`,
    /// a replacement of its current attempt (same payment and gas limit,
    /// fees bumped; an ether sweep pays the higher fee out of its value).
    /// `None` when there is nothing to sign: the node says the transfer
    /// fails, or a sweep's balance cannot pay the higher fee.
    async fn build(
        &self,
        payout: &Payout,
        nonce: u64,
        fees: Fees,
        replacing: Option<Replacing<'_>>,
    ) -> Result<Option<SignedAttempt>> {
        let from = parse_address(
            payout.from_address.as_deref().unwrap_or_default(),
            "from_address",
        )?;
        let payment = self.payment(payout)?;
        let gas_limit = match replacing.and_then(|r| r.current.gas_limit) {
            Some(gas) => gas,
            None => match self.gas_limit(from, &payment).await? {
                Some(gas) => gas,
                None => return Ok(None),
            },
        };
        self.build_with_gas(payout, nonce, fees, replacing, gas_limit)
            .await
    }

    /// [`Self::build`] with the gas limit known.
    async fn build_with_gas(
        &self,
        payout: &Payout,
        nonce: u64,
        fees: Fees,
        replacing: Option<Replacing<'_>>,
        gas_limit: u64,
    ) -> Result<Option<SignedAttempt>> {
        let from = parse_address(
            payout.from_address.as_deref().unwrap_or_default(),
            "from_address",
        )?;
        let previous = replacing.map(|r| r.current);
        let mut payment = self.payment(payout)?;
        let (max_fee, tip) = match previous {
            None => (fees.max_fee_per_gas, fees.max_priority_fee_per_gas),
            Some(previous) => {
                let old_fee = previous.max_fee_per_gas.unwrap_or_default();
                let old_tip = previous.max_priority_fee_per_gas.unwrap_or_default();
                let fee = to_u128(bumped(old_fee))?.max(fees.max_fee_per_gas);
                let tip = to_u128(bumped(old_tip))?.max(fees.max_priority_fee_per_gas);
                (fee, tip)
            }
        };
        let fee_limit = max_fee.saturating_mul(u128::from(gas_limit));
        if let (Some(replacing), Payment::Ether { value, .. }) = (replacing, &mut payment)
            && payout.kind == PayoutKind::Sweep
        {
            // A sweep empties its address: value plus the first attempt's
            // fee limit is all there is (less, if fees rose between sizing
            // and signing), so a higher fee comes out of the value, which
            // leaves a replacement spending no more than the address holds.
            let held = self.client.balance(from, BlockNumberOrTag::Latest).await?;
            let budget = value
                .saturating_add(replacing.first.fee_limit.as_u256())
                .min(held);
            match budget.checked_sub(U256::from(fee_limit)) {
                Some(left) if !left.is_zero() => *value = left,
                _ => return Ok(None),
            }
        }
        let key = match payout.from_key_index {
            Some(index) => KeyId::Deposit(index),
            None => KeyId::HotWallet,
        };
        let unsigned = UnsignedTransaction {
            chain_id: self.config.chain_id,
            nonce,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip.min(max_fee),
            gas_limit,
            payment,
        };
        let signed = self
            .keys
            .sign_ethereum(key, &unsigned)
            .map_err(|e| Error::InvalidRequest(format!("signing row {}: {e}", payout.id)))?;
        if signed.from != from {
            return Err(Error::Corrupt(format!(
                "row {} pays from {from} but its key signs for {}",
                payout.id, signed.from
            )));
        }
        Ok(Some(SignedAttempt {
            tx_hash: signed.hash.to_string(),
            raw_tx: signed.raw,
            fee_limit: Amount::from_u128(fee_limit),
            max_fee_per_gas: Some(Amount::from_u128(max_fee)),
            max_priority_fee_per_gas: Some(Amount::from_u128(unsigned.max_priority_fee_per_gas)),
            gas_limit: Some(gas_limit),
            valid_until_height: None,
        }))
    }

    /// The node says a reserved row's transfer would fail. If the hot
    /// wallet is merely short (a race with the plan's budget), it waits;
    /// otherwise the transfer itself fails (a destination or token that
    /// refuses it): the row fails without spending more than a filler's
    /// gas, its nonce handed to a zero-value self-transfer.
    async fn unsendable(&self, payout: &Payout) -> Result<()> {
        if payout.from_key_index.is_none() && !self.hot_wallet_covers(payout).await? {
            if let Some(claimed) = self
                .store
                .claim(payout.id, &[WithdrawalStatus::Reserved])
                .await?
            {
                claimed
                    .set_waiting("waiting for the hot wallet: it cannot cover this transfer yet")
                    .await?;
            }
            return Ok(());
        }
        let failed = self
            .store
            .fail_unsendable(
                payout.id,
                "the node refuses the transfer (its gas estimate fails: the destination or the token rejects it); nothing was sent and the hold is released",
            )
            .await?;
        tracing::warn!(
            id = failed.id,
            kind = failed.kind.as_str(),
            "transfer refused by the chain before signing; failed"
        );
        Ok(())
    }

    async fn hot_wallet_covers(&self, payout: &Payout) -> Result<bool> {
        let latest = BlockNumberOrTag::Latest;
        let eth = self.client.balance(self.hot_wallet, latest).await?;
        if payout.asset == self.config.native_asset {
            return Ok(eth >= payout.amount.as_u256());
        }
        let Some(token) = self.config.tokens.get(&payout.asset) else {
            return Ok(false);
        };
        let held = self
            .client
            .token_balance(*token, self.hot_wallet, latest)
            .await?;
        Ok(held >= payout.amount.as_u256() && !eth.is_zero())
    }

    fn payment(&self, payout: &Payout) -> Result<Payment> {
        let to = parse_address(&payout.destination, "destination")?;
        if payout.asset == self.config.native_asset {
            return Ok(Payment::Ether {
                to,
                value: payout.amount.as_u256(),
            });
        }
        let token = self.config.tokens.get(&payout.asset).ok_or_else(|| {
            Error::InvalidRequest(format!(
                "asset: {} is not an allow-listed Ethereum token",
                payout.asset
            ))
        })?;
        Ok(Payment::Erc20 {
            token: *token,
            recipient: to,
            amount: payout.amount.as_u256(),
        })
    }

    /// The node's estimate, with a margin for contract calls. `Ok(None)`
    /// when the node answers that the transfer fails (a destination that
    /// reverts, a token that refuses).
    async fn gas_limit(&self, from: Address, payment: &Payment) -> Result<Option<u64>> {
        let call = gas_call(from, payment);
        let estimate = self
            .client
            .estimate_gas(call.from, call.to, call.value, &call.data)
            .await?;
        Ok(gas_limit_of(&call, estimate))
    }

    /// [`Self::gas_limit`] of each row's first attempt, asked of the node
    /// in batches; a row whose payment cannot be built is left out (its
    /// build reports why).
    async fn gas_limits(&self, rows: &[Payout]) -> Result<HashMap<i64, Option<u64>>> {
        let mut calls = Vec::with_capacity(rows.len());
        for payout in rows {
            let Ok(from) = parse_address(
                payout.from_address.as_deref().unwrap_or_default(),
                "from_address",
            ) else {
                continue;
            };
            let Ok(payment) = self.payment(payout) else {
                continue;
            };
            calls.push((payout.id, gas_call(from, &payment)));
        }
        let mut limits = HashMap::with_capacity(calls.len());
        for chunk in calls.chunks(ESTIMATE_BATCH) {
            let batch: Vec<GasCall> = chunk.iter().map(|(_, call)| call.clone()).collect();
            let estimates = self.client.estimate_gas_many(&batch).await?;
            for ((id, call), estimate) in chunk.iter().zip(estimates) {
                limits.insert(*id, gas_limit_of(call, estimate));
            }
        }
        Ok(limits)
    }

    /// Replaces each attempt unmined `replace_after_blocks` after its
    /// first send.
    async fn replace_stale(&self, round: &Round, rows: &[(Payout, Vec<Attempt>)]) {
        let Some(fees) = round.fees else { return };
        let after = self.config.replace_after_blocks;
        let native = &self.config.native_asset;
        let stale = rows
            .iter()
            .filter(|(p, attempts)| {
                // A token sweep's gas is exactly the top-up it got, so a
                // dearer replacement could never be paid for; it waits for
                // its fee to be met instead.
                let token_sweep = p.kind == PayoutKind::Sweep && p.asset != *native;
                p.status == WithdrawalStatus::Broadcast
                    && !token_sweep
                    && current(p, attempts).is_some_and(|a| {
                        a.first_broadcast_height
                            .is_some_and(|first| round.head >= first.saturating_add(after))
                    })
            })
            .map(|(p, _)| p.clone())
            .collect::<Vec<_>>();
        self.for_each(stale, "replace", |payout| async move {
            // Only the sender's next nonce is worth a higher fee: a row
            // queued behind another waits for it, and raising its fee
            // would buy nothing.
            let Some(reservation) = self.store.nonce_reservation(payout.id).await? else {
                return Ok(());
            };
            let from = parse_address(
                payout.from_address.as_deref().unwrap_or_default(),
                "from_address",
            )?;
            let next = self.client.nonce_at(from, BlockNumberOrTag::Latest).await?;
            if next != reservation.nonce {
                return Ok(());
            }
            let Some(claimed) = self
                .store
                .claim(payout.id, &[WithdrawalStatus::Broadcast])
                .await?
            else {
                return Ok(());
            };
            // Another loop may have replaced it meanwhile.
            let still_stale = claimed.current().is_some_and(|a| {
                a.landed_block_hash.is_none()
                    && a.first_broadcast_height
                        .is_some_and(|first| round.head >= first.saturating_add(after))
            });
            if still_stale {
                self.replace(claimed, fees).await?;
            }
            Ok(())
        })
        .await;
    }

    /// Commits a replacement of the claimed row's current attempt; the
    /// send step sends it. Nothing when the cap leaves no room to bump.
    async fn replace(&self, mut claimed: Claimed, fees: Fees) -> Result<()> {
        let Some(current) = claimed.current().cloned() else {
            return Ok(());
        };
        let cap = self.config.max_fee_per_gas_cap;
        let old_fee = to_u128(current.max_fee_per_gas.unwrap_or_default())?;
        if to_u128(bumped(Amount::from_u128(old_fee)))? > cap {
            claimed
                .set_waiting("replacement due, but max_fee_per_gas_cap leaves no room for a 10% bump; resending")
                .await?;
            return Ok(());
        }
        // On the claim's own connection: a loop holding claims never waits
        // for a second one.
        let nonce = claimed.nonce().await?;
        let capped = Fees {
            max_fee_per_gas: fees.max_fee_per_gas.min(cap),
            ..fees
        };
        let Some(first) = claimed.attempts.first().cloned() else {
            return Ok(());
        };
        let replacing = Replacing {
            current: &current,
            first: &first,
        };
        let Some(attempt) = self
            .build(&claimed.payout, nonce, capped, Some(replacing))
            .await?
        else {
            claimed
                .set_waiting(
                    "replacement due, but the sweep's balance cannot pay a higher fee; resending",
                )
                .await?;
            return Ok(());
        };
        let (payout, stored) = claimed.record_replacement(&attempt).await?;
        tracing::info!(
            id = payout.id,
            tx_hash = %stored.tx_hash,
            max_fee_per_gas = %attempt.max_fee_per_gas.unwrap_or_default(),
            "replacement signed and committed"
        );
        Ok(())
    }

    /// Sends each row whose current attempt is due: never sent, or not
    /// sent for `rebroadcast_after_blocks`.
    async fn send_due(&self, round: &Round, rows: &[(Payout, Vec<Attempt>)]) {
        let every = self.config.rebroadcast_after_blocks.max(1);
        let due = rows
            .iter()
            .filter(|(p, attempts)| {
                matches!(
                    p.status,
                    WithdrawalStatus::Signed | WithdrawalStatus::Broadcast
                ) && current(p, attempts).is_some_and(|a| {
                    a.landed_block_hash.is_none()
                        && (a.broadcast_count == 0
                            || a.last_broadcast_height
                                .is_none_or(|last| round.head >= last.saturating_add(every)))
                })
            })
            .filter_map(|(p, attempts)| Some((p.clone(), current(p, attempts)?.clone())))
            .collect::<Vec<_>>();
        // No row is held while its bytes go out: sending committed bytes
        // again can only be answered "already known", so two loops racing
        // here cost a duplicate send, never a second payment.
        // In batches, each sender's in reservation (so nonce) order, so the
        // node rarely holds a transaction waiting for the one before it.
        let mut due = due;
        due.sort_by(|(a, x), (b, y)| {
            (&a.from_address, x.nonce_reservation_id)
                .cmp(&(&b.from_address, y.nonce_reservation_id))
        });
        use futures::StreamExt;
        let answered: Vec<(Payout, Attempt, chains::Result<SendOutcome>)> =
            futures::stream::iter(due.chunks(SEND_BATCH).map(<[_]>::to_vec))
                .map(|chunk| async move {
                    let raws: Vec<&[u8]> = chunk.iter().map(|(_, a)| a.raw_tx.as_slice()).collect();
                    match self.client.send_raw_transactions(&raws).await {
                        Ok(answers) => chunk
                            .iter()
                            .cloned()
                            .zip(answers)
                            .map(|((payout, attempt), answer)| (payout, attempt, answer))
                            .collect::<Vec<_>>(),
                        Err(err) => {
                            // Nothing recorded: the same bytes go out next round.
                            for _ in &chunk {
                                count_send("transport");
                            }
                            tracing::warn!(rows = chunk.len(), error = %err, "a batch of sends failed; the same bytes are sent next round");
                            count_error("send");
                            Vec::new()
                        }
                    }
                })
                .buffered(SEND_BATCHES_IN_FLIGHT)
                .flat_map(futures::stream::iter)
                .collect()
                .await;
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for (payout, attempt, answer) in answered {
            match answer {
                Ok(outcome @ (SendOutcome::Accepted(_) | SendOutcome::AlreadyKnown)) => {
                    count_send(if matches!(outcome, SendOutcome::AlreadyKnown) {
                        "already_known"
                    } else {
                        "accepted"
                    });
                    accepted.push((payout.id, attempt.id));
                }
                Ok(outcome) => refused.push((payout, attempt, outcome)),
                Err(err) => {
                    // Nothing recorded: the same bytes go out next round.
                    count_send("transport");
                    tracing::warn!(id = payout.id, error = %err, "send failed; the same bytes are sent next round");
                    count_error("send");
                }
            }
        }
        match self.store.record_sent_many(&accepted, round.head).await {
            Ok(first_sends) => {
                for first in first_sends {
                    if first.kind == PayoutKind::Withdrawal {
                        metrics::histogram!(WITHDRAWAL_TO_BROADCAST, "chain" => CHAIN.as_str())
                            .record(seconds_since(first.requested_at));
                    }
                }
            }
            Err(err) => {
                // The node has the bytes; the next round's sends are
                // answered "already known" and recorded then.
                tracing::warn!(error = %err, "recording accepted sends failed; retrying next round");
                count_error("send");
            }
        }
        self.for_each(refused, "send", |(payout, attempt, outcome)| async move {
            let Some(claimed) = self
                .store
                .claim(
                    payout.id,
                    &[WithdrawalStatus::Signed, WithdrawalStatus::Broadcast],
                )
                .await?
            else {
                return Ok(());
            };
            // A replacement committed meanwhile is sent next round; this
            // answer was about bytes the row no longer follows.
            if claimed.current().map(|c| c.id) != Some(attempt.id) {
                return Ok(());
            }
            self.refused(claimed, &attempt, outcome, round).await
        })
        .await;
    }

    /// What the node's refusal of the claimed row's current attempt means.
    async fn refused(
        &self,
        claimed: Claimed,
        attempt: &Attempt,
        outcome: SendOutcome,
        round: &Round,
    ) -> Result<()> {
        let id = claimed.payout.id;
        match outcome {
            // Recorded together by `send_due`.
            SendOutcome::Accepted(_) | SendOutcome::AlreadyKnown => {}
            SendOutcome::Underpriced => {
                count_send("underpriced");
                if let Some(fees) = round.fees {
                    self.replace(claimed, fees).await?;
                }
            }
            SendOutcome::InsufficientFunds => {
                count_send("insufficient_funds");
                claimed
                    .set_waiting(
                        "the sender cannot pay value plus gas yet; the same bytes are sent again",
                    )
                    .await?;
            }
            SendOutcome::NonceTooLow => {
                count_send("nonce_too_low");
                drop(claimed);
                self.nonce_used(id, round).await?;
            }
            SendOutcome::Rejected(reason) => {
                count_send("rejected");
                tracing::warn!(id, tx_hash = %attempt.tx_hash, reason, "node refused the transaction");
                let (_, count) = claimed.record_rejected(&reason).await?;
                // A refusal is no proof the bytes cannot land (a full pool,
                // a rate limit, another node holding them), and moving the
                // row aside would leave its nonce a gap: the same bytes are
                // sent again, and the row shows why it is not moving.
                if count >= self.config.max_send_rejections {
                    tracing::error!(
                        id,
                        count,
                        reason,
                        "node keeps refusing the transaction; resending the same bytes"
                    );
                }
            }
        }
        Ok(())
    }

    /// The node says the row's nonce is used. If one of its attempts
    /// landed, tracking records it; if none did and the nonce is used at
    /// a final height, something Coffer did not sign used it: manual.
    async fn nonce_used(&self, id: i64, round: &Round) -> Result<()> {
        let attempts = self.store.attempts(id).await?;
        let hashes = attempts
            .iter()
            .map(|a| parse_hash(&a.tx_hash))
            .collect::<Result<Vec<_>>>()?;
        let receipts = self.client.receipts(&hashes).await?;
        if let Some((attempt, receipt)) = attempts
            .iter()
            .zip(receipts)
            .find_map(|(a, r)| Some((a, r?)))
        {
            if let Some(claimed) = self
                .store
                .claim(id, &[WithdrawalStatus::Signed, WithdrawalStatus::Broadcast])
                .await?
            {
                claimed
                    .record_landed(&landing(attempt.id, &receipt))
                    .await?;
            }
            return Ok(());
        }
        let Some(payout) = self.store.payout(id).await? else {
            return Ok(());
        };
        let Some((nonce, from)) = self.nonce_used_at_final(&payout, round).await? else {
            return Ok(());
        };
        if let Some(claimed) = self
            .store
            .claim(id, &[WithdrawalStatus::Signed, WithdrawalStatus::Broadcast])
            .await?
        {
            claimed
                .to_manual(&format!(
                    "nonce {nonce} of {from} was used at a final height by a transaction that is none of this row's attempts"
                ))
                .await?;
        }
        Ok(())
    }

    /// Receipts for every attempt in flight, in one batch: landed ones
    /// move to confirming, reorged ones back to broadcast, final ones
    /// finish.
    async fn track(&self, round: &Round, rows: &[(Payout, Vec<Attempt>)]) -> Result<()> {
        let tracked: Vec<&(Payout, Vec<Attempt>)> = rows
            .iter()
            .filter(|(p, a)| {
                p.status == WithdrawalStatus::Manual
                    || (!a.is_empty()
                        && matches!(
                            p.status,
                            WithdrawalStatus::Signed
                                | WithdrawalStatus::Broadcast
                                | WithdrawalStatus::Confirming
                        ))
            })
            .collect();
        let mut hashes = Vec::new();
        for (_, attempts) in &tracked {
            for attempt in attempts {
                hashes.push(parse_hash(&attempt.tx_hash)?);
            }
        }
        let mut receipts: HashMap<B256, TxReceipt> = HashMap::new();
        for chunk in hashes.chunks(200) {
            for receipt in self.client.receipts(chunk).await?.into_iter().flatten() {
                receipts.insert(receipt.hash, receipt);
            }
        }
        let receipts = &receipts;
        // Landings and finishes, the bulk of a busy round, commit together;
        // the rest (reorgs, resolutions), or all of it if the batch
        // refuses, go row by row.
        let (batched, mut single): (Vec<_>, Vec<_>) =
            tracked
                .into_iter()
                .cloned()
                .partition(|(payout, attempts)| {
                    match track_step(payout, attempts, receipts, round) {
                        TrackStep::Land(..) | TrackStep::Finish => true,
                        TrackStep::Unland | TrackStep::Resolve | TrackStep::Wait => false,
                    }
                });
        if let Err(err) = self.track_batch(&batched, receipts, round).await {
            tracing::warn!(error = %err, "recording landings together failed; recording them one by one");
            count_error("track");
            single.extend(batched);
        }
        self.for_each(single, "track", |(payout, attempts)| async move {
            match track_step(&payout, &attempts, receipts, round) {
                TrackStep::Land(attempt_id, receipt) => {
                    let landable = [
                        WithdrawalStatus::Signed,
                        WithdrawalStatus::Broadcast,
                        WithdrawalStatus::Manual,
                    ];
                    if let Some(claimed) = self.store.claim(payout.id, &landable).await? {
                        if claimed.payout.status == WithdrawalStatus::Manual {
                            tracing::warn!(
                                id = payout.id,
                                attempt_id,
                                "an attempt of a manual row landed; following it to completion"
                            );
                        }
                        claimed
                            .record_landed(&landing(attempt_id, &receipt))
                            .await?;
                    }
                }
                TrackStep::Resolve => self.resolve(&payout, round).await?,
                TrackStep::Finish | TrackStep::Unland => {
                    let Some(claimed) = self
                        .store
                        .claim(payout.id, &[WithdrawalStatus::Confirming])
                        .await?
                    else {
                        return Ok(());
                    };
                    // Judged on the claimed row: another loop may have
                    // unlanded and landed it again since the snapshot.
                    match track_step(&claimed.payout, &claimed.attempts, receipts, round) {
                        TrackStep::Unland => {
                            tracing::warn!(
                                id = payout.id,
                                "landed transaction left the canonical chain; back to broadcast"
                            );
                            claimed.record_unlanded().await?;
                        }
                        TrackStep::Finish => {
                            let done = claimed.finish(&self.config.native_asset).await?;
                            finished(&done, done.status);
                        }
                        _ => {}
                    }
                }
                TrackStep::Wait => {}
            }
            Ok(())
        })
        .await;
        Ok(())
    }

    /// Records the landings and finishes among `rows` in one transaction,
    /// each judged again on the row as claimed (another loop may have
    /// moved it since the snapshot); a row another worker holds is left to
    /// the next round.
    async fn track_batch(
        &self,
        rows: &[(Payout, Vec<Attempt>)],
        receipts: &HashMap<B256, TxReceipt>,
        round: &Round,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = rows.iter().map(|(p, _)| p.id).collect();
        let mut batch = self
            .store
            .claim_batch(
                &ids,
                &[
                    WithdrawalStatus::Signed,
                    WithdrawalStatus::Broadcast,
                    WithdrawalStatus::Manual,
                    WithdrawalStatus::Confirming,
                ],
            )
            .await?;
        let (mut landings, mut finishing) = (Vec::new(), Vec::new());
        for (payout, attempts) in &batch.rows {
            match track_step(payout, attempts, receipts, round) {
                TrackStep::Land(attempt_id, receipt) => {
                    landings.push((payout.id, landing(attempt_id, &receipt)));
                }
                TrackStep::Finish => finishing.push(payout.clone()),
                TrackStep::Unland | TrackStep::Resolve | TrackStep::Wait => {}
            }
        }
        batch.record_landed(&landings).await?;
        let ids: Vec<i64> = finishing.iter().map(|p| p.id).collect();
        let statuses = batch.finish(&ids, &self.config.native_asset).await?;
        batch.commit().await?;
        for (payout, status) in finishing.iter().zip(statuses) {
            finished(payout, status);
        }
        Ok(())
    }

    /// The row's nonce and sender when the sender's nonce at the final
    /// height is past it (something used it for good); `None` otherwise,
    /// or when the row reserved none.
    async fn nonce_used_at_final(
        &self,
        payout: &Payout,
        round: &Round,
    ) -> Result<Option<(u64, Address)>> {
        let Some(reservation) = self.store.nonce_reservation(payout.id).await? else {
            return Ok(None);
        };
        let from = parse_address(
            payout.from_address.as_deref().unwrap_or_default(),
            "from_address",
        )?;
        let final_nonce = self
            .client
            .nonce_at(from, BlockNumberOrTag::Number(round.final_height))
            .await?;
        Ok((final_nonce > reservation.nonce).then_some((reservation.nonce, from)))
    }

    /// Applies an admin's resolution of a manual row once the chain proves
    /// none of its attempts can land: none has a receipt (read this round)
    /// and its nonce is used at a final height. Until then it waits, so a
    /// release never refunds a payment still in some node's pool.
    async fn resolve(&self, payout: &Payout, round: &Round) -> Result<()> {
        if self.nonce_used_at_final(payout, round).await?.is_none() {
            tracing::info!(
                id = payout.id,
                "resolution waits: the row's nonce is not used at a final height, so an attempt may still land"
            );
            return Ok(());
        }
        if let Some(claimed) = self
            .store
            .claim(payout.id, &[WithdrawalStatus::Manual])
            .await?
            && claimed.payout.resolution.is_some()
        {
            claimed.apply_resolution().await?;
        }
        Ok(())
    }

    async fn gauges(&self) -> Result<()> {
        for kind in ["withdrawal", "sweep", "gas_top_up", "filler"] {
            for status in WithdrawalStatus::ALL {
                metrics::gauge!(WITHDRAWALS_BY_STATUS, "chain" => CHAIN.as_str(), "kind" => kind, "status" => status.as_str())
                    .set(0.0);
            }
        }
        for row in self.store.status_counts(CHAIN).await? {
            metrics::gauge!(WITHDRAWALS_BY_STATUS, "chain" => CHAIN.as_str(), "kind" => row.kind, "status" => row.status)
                .set(row.count as f64);
        }
        let since = chrono::Utc::now()
            - chrono::Duration::from_std(self.config.stuck_after).unwrap_or_default();
        let (stuck, waiting) = self.store.stuck_and_waiting(CHAIN, since).await?;
        metrics::gauge!(WITHDRAWALS_STUCK, "chain" => CHAIN.as_str()).set(stuck as f64);
        metrics::gauge!(WITHDRAWALS_WAITING, "chain" => CHAIN.as_str()).set(waiting as f64);
        Ok(())
    }
}

/// Counts and logs a payout that ended in `status`.
fn finished(payout: &Payout, status: WithdrawalStatus) {
    if payout.kind == PayoutKind::Withdrawal {
        metrics::histogram!(WITHDRAWAL_TO_COMPLETION, "chain" => CHAIN.as_str())
            .record(seconds_since(payout.requested_at));
    }
    tracing::info!(id = payout.id, kind = payout.kind.as_str(), %status, "payout finished");
}

/// What tracking does with a row, given this round's receipts.
enum TrackStep {
    /// One of its attempts is in a block (attempt id and receipt).
    Land(i64, TxReceipt),
    /// Its landed attempt is still there and final.
    Finish,
    /// Its landed attempt's block left the chain.
    Unland,
    /// A manual row with an admin's resolution and nothing landed.
    Resolve,
    Wait,
}

fn landed_attempt<'a>(
    attempts: &'a [Attempt],
    receipts: &HashMap<B256, TxReceipt>,
) -> Option<(&'a Attempt, TxReceipt)> {
    attempts.iter().find_map(|a| {
        let receipt = receipts.get(&parse_hash(&a.tx_hash).ok()?)?;
        Some((a, *receipt))
    })
}

fn track_step(
    payout: &Payout,
    attempts: &[Attempt],
    receipts: &HashMap<B256, TxReceipt>,
    round: &Round,
) -> TrackStep {
    let landed = landed_attempt(attempts, receipts);
    match (payout.status, landed) {
        (
            WithdrawalStatus::Signed | WithdrawalStatus::Broadcast | WithdrawalStatus::Manual,
            Some((attempt, receipt)),
        ) => TrackStep::Land(attempt.id, receipt),
        (WithdrawalStatus::Manual, None) if payout.resolution.is_some() => TrackStep::Resolve,
        (WithdrawalStatus::Confirming, landed) => {
            let recorded = attempts.iter().find(|a| a.landed_block_hash.is_some());
            let still_there = match (recorded, landed) {
                (Some(recorded), Some((attempt, receipt))) => {
                    attempt.id == recorded.id
                        && recorded.landed_block_hash.as_deref()
                            == Some(receipt.block_hash.to_string().as_str())
                }
                _ => false,
            };
            if !still_there {
                TrackStep::Unland
            } else if recorded
                .and_then(|r| r.landed_block_height)
                .is_some_and(|h| h <= round.final_height)
            {
                TrackStep::Finish
            } else {
                TrackStep::Wait
            }
        }
        _ => TrackStep::Wait,
    }
}

/// The time each step of a round took, recorded as it ends.
struct Steps {
    last: std::time::Instant,
    taken: Vec<(&'static str, Duration)>,
}

impl Steps {
    fn start() -> Self {
        Self {
            last: std::time::Instant::now(),
            taken: Vec::new(),
        }
    }

    fn done(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        let took = now - self.last;
        self.last = now;
        metrics::histogram!(PAYOUT_STEP_DURATION, "chain" => CHAIN.as_str(), "step" => step)
            .record(took.as_secs_f64());
        self.taken.push((step, took));
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (step, took)) in self.taken.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{step}={}ms", took.as_millis())?;
        }
        Ok(())
    }
}

/// The attempts a replacement is built from.
#[derive(Clone, Copy)]
struct Replacing<'a> {
    /// The attempt replaced: its fees are bumped, its gas limit kept.
    current: &'a Attempt,
    /// The row's first attempt: its value plus fee limit is what an ether
    /// sweep may spend in all.
    first: &'a Attempt,
}

fn current<'a>(payout: &Payout, attempts: &'a [Attempt]) -> Option<&'a Attempt> {
    let id = payout.current_attempt_id?;
    attempts.iter().find(|a| a.id == id)
}

fn landing(attempt_id: i64, receipt: &TxReceipt) -> Landing {
    Landing {
        attempt_id,
        block_hash: receipt.block_hash.to_string(),
        block_height: receipt.block_number,
        success: receipt.status,
        fee_paid: Amount::from_u128(
            u128::from(receipt.gas_used).saturating_mul(receipt.effective_gas_price),
        ),
    }
}

/// What to estimate for `from` making `payment`.
fn gas_call(from: Address, payment: &Payment) -> GasCall {
    let (to, value, data) = match payment {
        Payment::Ether { to, value } => (*to, *value, Vec::new()),
        Payment::Erc20 {
            token,
            recipient,
            amount,
        } => (*token, U256::ZERO, erc20_transfer(*recipient, *amount)),
    };
    GasCall {
        from,
        to,
        value,
        data,
    }
}

/// The gas limit to sign with for the node's `estimate` of `call`: a plain
/// transfer's exact 21,000, anything else with a fifth more as margin;
/// `None` when the node says the transfer fails.
fn gas_limit_of(call: &GasCall, estimate: GasEstimate) -> Option<u64> {
    match estimate {
        GasEstimate::Gas(TRANSFER_GAS) if call.data.is_empty() => Some(TRANSFER_GAS),
        GasEstimate::Gas(estimate) => Some(estimate.saturating_mul(6) / 5),
        GasEstimate::Fails(reason) => {
            tracing::info!(%reason, "the node says the transfer would fail");
            None
        }
    }
}

/// `transfer(address,uint256)` calldata.
fn erc20_transfer(recipient: Address, amount: U256) -> Vec<u8> {
    let mut data = vec![0xa9, 0x05, 0x9c, 0xbb];
    data.extend_from_slice(recipient.into_word().as_slice());
    data.extend_from_slice(&amount.to_be_bytes::<32>());
    data
}

fn parse_address(text: &str, field: &str) -> Result<Address> {
    text.parse()
        .map_err(|e| Error::Corrupt(format!("stored {field} `{text}`: {e}")))
}

fn parse_hash(text: &str) -> Result<B256> {
    text.parse()
        .map_err(|e| Error::Corrupt(format!("stored tx hash `{text}`: {e}")))
}

fn to_u128(amount: Amount) -> Result<u128> {
    u128::try_from(amount.as_u256())
        .map_err(|_| Error::Corrupt(format!("fee {amount} does not fit 128 bits")))
}

fn seconds_since(at: chrono::DateTime<chrono::Utc>) -> f64 {
    let millis = (chrono::Utc::now() - at).num_milliseconds().max(0);
    Duration::from_millis(millis.unsigned_abs()).as_secs_f64()
}

fn count_send(outcome: &'static str) {
    metrics::counter!(WITHDRAWAL_SENDS, "chain" => CHAIN.as_str(), "outcome" => outcome)
        .increment(1);
}

fn count_error(step: &'static str) {
    metrics::counter!(PAYOUT_LOOP_ERRORS, "chain" => CHAIN.as_str(), "step" => step).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only while the loop's future can be a tokio task.
    #[allow(dead_code)]
    fn the_loop_runs_as_a_task(payouts: EthereumPayouts) {
        drop(tokio::spawn(payouts.run(CancellationToken::new())));
    }

    #[test]
    fn token_transfer_calldata_is_the_erc20_abi() {
        let data = erc20_transfer(Address::repeat_byte(0x11), U256::from(5));
        assert_eq!(data.len(), 4 + 32 + 32);
        assert_eq!(&data[..4], &[0xa9, 0x05, 0x9c, 0xbb]);
        assert_eq!(&data[16..36], Address::repeat_byte(0x11).as_slice());
        assert_eq!(data[67], 5);
    }
}
