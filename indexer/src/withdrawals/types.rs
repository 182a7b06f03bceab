//! The pipeline's vocabulary: statuses, withdrawals, their attempts and
//! reservations, the per-asset policy, and what callers hand in.

use std::collections::BTreeMap;
use std::fmt;

use chains::Chain;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ledger::Amount;

/// Where a withdrawal stands. Each transition is one PostgreSQL
/// transaction that locks the row and checks the status it leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "withdrawal_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalStatus {
    /// Held (amount plus fee), awaiting an approver.
    Requested,
    /// Approved automatically under the asset's threshold, or by an approver.
    Approved,
    /// Its chain resource (Ethereum: a nonce) is reserved.
    Reserved,
    /// An attempt's raw bytes and hash are committed; nothing sent yet.
    Signed,
    /// Sent at least once; replacements share the reservation.
    Broadcast,
    /// An attempt landed; waiting for finality.
    Confirming,
    /// Final on chain; the hold is settled.
    Completed,
    /// The chain proves no attempt can land; the hold is released.
    Failed,
    /// Outcome unknown: never rebuilt automatically, alerted on.
    Manual,
    /// Refused by an approver; the hold is released.
    Rejected,
    /// Withdrawn before signing; the hold is released.
    Cancelled,
}

impl WithdrawalStatus {
    pub const ALL: [WithdrawalStatus; 11] = [
        WithdrawalStatus::Requested,
        WithdrawalStatus::Approved,
        WithdrawalStatus::Reserved,
        WithdrawalStatus::Signed,
        WithdrawalStatus::Broadcast,
        WithdrawalStatus::Confirming,
        WithdrawalStatus::Completed,
        WithdrawalStatus::Failed,
        WithdrawalStatus::Manual,
        WithdrawalStatus::Rejected,
        WithdrawalStatus::Cancelled,
    ];

    /// The snake_case name the database, metrics and the API use.
    pub const fn as_str(self) -> &'static str {
        match self {
            WithdrawalStatus::Requested => "requested",
            WithdrawalStatus::Approved => "approved",
            WithdrawalStatus::Reserved => "reserved",
            WithdrawalStatus::Signed => "signed",
            WithdrawalStatus::Broadcast => "broadcast",
            WithdrawalStatus::Confirming => "confirming",
            WithdrawalStatus::Completed => "completed",
            WithdrawalStatus::Failed => "failed",
            WithdrawalStatus::Manual => "manual",
            WithdrawalStatus::Rejected => "rejected",
            WithdrawalStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the withdrawal can still be cancelled: nothing is signed yet.
    pub const fn is_cancellable(self) -> bool {
        matches!(
            self,
            WithdrawalStatus::Requested | WithdrawalStatus::Approved | WithdrawalStatus::Reserved
        )
    }
}

impl fmt::Display for WithdrawalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WithdrawalStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        WithdrawalStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = WithdrawalStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown status `{text}`; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// What a row of the pipeline sends: a user's withdrawal, or one of
/// Coffer's own transfers, which share the nonce allocator, the
/// signed-bytes-first rule and the send and confirm loop but have no user,
/// hold or idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "payout_kind", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum PayoutKind {
    Withdrawal,
    /// A deposit address's balance into the hot wallet.
    Sweep,
    /// Hot wallet to a deposit address: the gas of its token sweep.
    GasTopUp,
    /// A zero-value self-transfer on a nonce a cancelled withdrawal left.
    Filler,
}

impl PayoutKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            PayoutKind::Withdrawal => "withdrawal",
            PayoutKind::Sweep => "sweep",
            PayoutKind::GasTopUp => "gas_top_up",
            PayoutKind::Filler => "filler",
        }
    }
}

/// A row of the pipeline as the send loop sees it, whatever its kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Payout {
    pub id: i64,
    pub kind: PayoutKind,
    pub chain: Chain,
    pub asset: String,
    pub amount: Amount,
    pub fee: Amount,
    pub destination: String,
    pub status: WithdrawalStatus,
    /// Withdrawals only.
    pub user: Option<Uuid>,
    pub hold_id: Option<i64>,
    pub from_address: Option<String>,
    /// The deposit key that signs a sweep; `None`: the hot wallet.
    pub from_key_index: Option<u32>,
    pub current_attempt_id: Option<i64>,
    pub waiting_reason: Option<String>,
    /// The node's refusals of the current attempt in a row.
    pub send_rejections: u32,
    pub requested_at: DateTime<Utc>,
    /// An admin's pending resolution of a manual withdrawal.
    pub resolution: Option<ManualResolution>,
}

/// One of Coffer's own transfers to create (see [`PayoutKind`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnTransfer {
    pub kind: PayoutKind,
    pub asset: String,
    pub amount: Amount,
    pub from_address: String,
    /// The deposit key that signs a sweep; `None` for the hot wallet.
    pub from_key_index: Option<u32>,
    pub destination: String,
}

/// One asset's withdrawal rules, in its base units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetPolicy {
    /// Charged on top of the amount, held with it, and booked to the fee
    /// account on completion.
    pub fee: Amount,
    /// The largest amount approved automatically; above it a withdrawal
    /// waits for an approver.
    pub approval_threshold: Amount,
    /// The most one user may withdraw of the asset in any 24 hours
    /// (amounts only, fees aside; rejected, cancelled and failed ones do
    /// not count).
    pub daily_limit: Amount,
}

/// Withdrawal rules per asset code; an asset without a policy cannot be
/// withdrawn.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WithdrawalPolicy {
    pub assets: BTreeMap<String, AssetPolicy>,
}

impl WithdrawalPolicy {
    pub fn asset(&self, code: &str) -> Option<&AssetPolicy> {
        self.assets.get(code)
    }
}

/// A withdrawal as asked for. `requested_by` is the caller: the user, or a
/// service acting for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWithdrawal {
    pub user: Uuid,
    pub asset: String,
    pub chain: Chain,
    pub amount: Amount,
    pub destination: String,
    pub requested_by: Uuid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Withdrawal {
    pub id: i64,
    pub user: Uuid,
    pub asset: String,
    pub chain: Chain,
    pub amount: Amount,
    pub fee: Amount,
    pub destination: String,
    pub status: WithdrawalStatus,
    /// The ledger hold on amount plus fee.
    pub hold_id: i64,
    pub requested_by: Uuid,
    /// `None` with `approved_at` set: approved automatically.
    pub approved_by: Option<Uuid>,
    /// Who rejected or cancelled it.
    pub closed_by: Option<Uuid>,
    pub reason: Option<String>,
    /// The paying address, once the chain resource is reserved.
    pub from_address: Option<String>,
    /// The attempt followed now (the latest replacement).
    pub current_attempt_id: Option<i64>,
    /// Why an approved withdrawal is not moving yet (the hot wallet cannot
    /// cover it, fees are above the cap).
    pub waiting_reason: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub approved_at: Option<DateTime<Utc>>,
    pub reserved_at: Option<DateTime<Utc>>,
    pub signed_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// An admin's resolution of a manual withdrawal: pending while it is
    /// manual, kept once the payout loop applied it.
    pub resolution: Option<ManualResolution>,
    pub resolution_by: Option<Uuid>,
}

/// What an admin found a manual withdrawal's outcome to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "manual_resolution", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ManualResolution {
    /// Nothing reached the destination: → failed, the hold released.
    Release,
    /// The destination was paid: → completed, the hold settled.
    Settle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "nonce_reservation_purpose", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum NoncePurpose {
    /// Used by the withdrawal's attempts.
    Withdrawal,
    /// The withdrawal was cancelled after reserving: a zero-value
    /// self-transfer must use the nonce so later ones are not stuck behind it.
    Filler,
}

/// An Ethereum nonce reserved for one withdrawal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NonceReservation {
    pub id: i64,
    pub from_address: String,
    pub nonce: u64,
    pub withdrawal_id: i64,
    pub purpose: NoncePurpose,
    pub filler_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A transaction the caller built and signed, to be committed before it
/// is sent anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedAttempt {
    pub tx_hash: String,
    pub raw_tx: Vec<u8>,
    /// The most the attempt can pay in network fees, in the chain's native
    /// base units (Ethereum: gas limit times max fee per gas).
    pub fee_limit: Amount,
    /// Ethereum (EIP-1559) only; required there.
    pub max_fee_per_gas: Option<Amount>,
    pub max_priority_fee_per_gas: Option<Amount>,
    pub gas_limit: Option<u64>,
    /// Solana: the last block height at which the attempt can land.
    pub valid_until_height: Option<u64>,
}

/// One signed attempt as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub id: i64,
    pub withdrawal_id: i64,
    pub chain: Chain,
    pub tx_hash: String,
    pub raw_tx: Vec<u8>,
    pub nonce_reservation_id: Option<i64>,
    pub fee_limit: Amount,
    pub max_fee_per_gas: Option<Amount>,
    pub max_priority_fee_per_gas: Option<Amount>,
    pub gas_limit: Option<u64>,
    pub valid_until_height: Option<u64>,
    pub fee_paid: Option<Amount>,
    pub created_at: DateTime<Utc>,
    /// First accepted by a node.
    pub broadcast_at: Option<DateTime<Utc>>,
    /// The chain's height at the latest send, and how many sends so far.
    pub last_broadcast_height: Option<u64>,
    pub broadcast_count: u32,
    /// The chain's height when a node first accepted it.
    pub first_broadcast_height: Option<u64>,
    pub landed_block_hash: Option<String>,
    pub landed_block_height: Option<u64>,
    /// Whether the landed transaction succeeded.
    pub landed_success: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WithdrawalFilter {
    pub user: Option<Uuid>,
    pub status: Option<WithdrawalStatus>,
}

/// A page of withdrawals, newest first; `next_cursor` continues strictly
/// below the last one, so later requests never shift a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalPage {
    pub items: Vec<Withdrawal>,
    pub next_cursor: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::WithdrawalStatus;

    #[test]
    fn statuses_round_trip_their_names() {
        for status in WithdrawalStatus::ALL {
            assert_eq!(status.as_str().parse::<WithdrawalStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).ok(),
                Some(serde_json::Value::String(status.as_str().into()))
            );
        }
        assert!("done".parse::<WithdrawalStatus>().is_err());
    }

    #[test]
    fn only_unsigned_withdrawals_can_be_cancelled() {
        let cancellable: Vec<_> = WithdrawalStatus::ALL
            .into_iter()
            .filter(|s| s.is_cancellable())
            .collect();
        assert_eq!(
            cancellable,
            [
                WithdrawalStatus::Requested,
                WithdrawalStatus::Approved,
                WithdrawalStatus::Reserved
            ]
        );
    }
}
