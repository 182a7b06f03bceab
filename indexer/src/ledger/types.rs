//! The ledger's vocabulary.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::amount::{Amount, SignedAmount};

/// A user (or, later, any owner of user-style accounts).
pub type OwnerId = Uuid;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(type_name = "account_purpose", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AccountPurpose {
    /// A user's spendable funds.
    Available,
    /// A user's deposits seen on chain but not yet final.
    Pending,
    /// A user's funds reserved for a withdrawal or an escrowed trade.
    Held,
    /// What Coffer holds on chain (hot wallet), per asset.
    Custody,
    /// The world outside Coffer: counterpart of deposits and withdrawals.
    External,
    /// Fees collected.
    Fees,
    /// Where reorg reversals land when a credit can no longer be taken back.
    Suspense,
    /// Network fees (gas) Coffer paid for its own transactions, per native
    /// asset: custody's counterpart when a landed transaction burns fees.
    NetworkFees,
}

impl AccountPurpose {
    pub const fn is_user(self) -> bool {
        matches!(
            self,
            AccountPurpose::Available | AccountPurpose::Pending | AccountPurpose::Held
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "entry_kind", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    DepositPending,
    DepositCredit,
    DepositReversal,
    WithdrawalHold,
    WithdrawalSettle,
    WithdrawalRelease,
    Transfer,
    Trade,
    Fee,
    Adjustment,
    /// Gas a transaction of Coffer's burned: custody -> network fees.
    NetworkFee,
}

impl EntryKind {
    pub const ALL: [EntryKind; 11] = [
        EntryKind::DepositPending,
        EntryKind::DepositCredit,
        EntryKind::DepositReversal,
        EntryKind::WithdrawalHold,
        EntryKind::WithdrawalSettle,
        EntryKind::WithdrawalRelease,
        EntryKind::Transfer,
        EntryKind::Trade,
        EntryKind::Fee,
        EntryKind::Adjustment,
        EntryKind::NetworkFee,
    ];
}

impl std::str::FromStr for EntryKind {
    type Err = String;

    /// The snake_case names the database and the API use, such as `deposit_credit`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
            let names: Vec<String> = EntryKind::ALL
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect();
            format!(
                "unknown kind `{text}`; expected one of {}",
                names.join(", ")
            )
        })
    }
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::DepositPending => "deposit_pending",
            EntryKind::DepositCredit => "deposit_credit",
            EntryKind::DepositReversal => "deposit_reversal",
            EntryKind::WithdrawalHold => "withdrawal_hold",
            EntryKind::WithdrawalSettle => "withdrawal_settle",
            EntryKind::WithdrawalRelease => "withdrawal_release",
            EntryKind::Transfer => "transfer",
            EntryKind::Trade => "trade",
            EntryKind::Fee => "fee",
            EntryKind::Adjustment => "adjustment",
            EntryKind::NetworkFee => "network_fee",
        }
    }
}

impl AccountPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountPurpose::Available => "available",
            AccountPurpose::Pending => "pending",
            AccountPurpose::Held => "held",
            AccountPurpose::Custody => "custody",
            AccountPurpose::External => "external",
            AccountPurpose::Fees => "fees",
            AccountPurpose::Suspense => "suspense",
            AccountPurpose::NetworkFees => "network_fees",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "hold_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Held,
    Settled,
    Released,
}

/// An asset to register: its code is unique across chains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub code: String,
    pub chain: chains::Chain,
    pub decimals: u8,
    /// ERC-20 contract or SPL mint; `None` for the native asset.
    pub contract: Option<String>,
}

/// An account named by what it is rather than by its id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountRef {
    pub owner: Option<OwnerId>,
    pub asset: String,
    pub purpose: AccountPurpose,
}

impl AccountRef {
    pub fn user(owner: OwnerId, asset: impl Into<String>, purpose: AccountPurpose) -> Self {
        Self {
            owner: Some(owner),
            asset: asset.into(),
            purpose,
        }
    }

    pub fn available(owner: OwnerId, asset: impl Into<String>) -> Self {
        Self::user(owner, asset, AccountPurpose::Available)
    }

    pub fn system(asset: impl Into<String>, purpose: AccountPurpose) -> Self {
        Self {
            owner: None,
            asset: asset.into(),
            purpose,
        }
    }
}

/// One leg of an entry: an amount added to or taken from an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub account: AccountRef,
    pub amount: SignedAmount,
}

impl Leg {
    pub fn increase(account: AccountRef, amount: Amount) -> Self {
        Self {
            account,
            amount: SignedAmount::increase(amount),
        }
    }

    pub fn decrease(account: AccountRef, amount: Amount) -> Self {
        Self {
            account,
            amount: SignedAmount::decrease(amount),
        }
    }
}

/// An entry to post: two or more legs that sum to zero per asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEntry {
    pub kind: EntryKind,
    /// Unique across the ledger; names what caused the entry.
    pub reference: String,
    pub metadata: serde_json::Value,
    pub legs: Vec<Leg>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedEntry {
    pub id: i64,
    pub kind: EntryKind,
    pub reference: String,
    pub created_at: DateTime<Utc>,
}

/// A request to move `amount` of a user's available funds to held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceHold {
    pub owner: OwnerId,
    pub asset: String,
    pub amount: Amount,
    pub kind: EntryKind,
    pub reference: String,
    pub metadata: serde_json::Value,
}

/// Settles a hold: its whole amount leaves held for the destinations, whose
/// amounts must add up to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleHold {
    pub hold_id: i64,
    pub destinations: Vec<(AccountRef, Amount)>,
    pub kind: EntryKind,
    pub reference: String,
    pub metadata: serde_json::Value,
}

/// Releases a hold: its amount returns from held to available.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseHold {
    pub hold_id: i64,
    pub kind: EntryKind,
    pub reference: String,
    pub metadata: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: i64,
    pub owner: OwnerId,
    pub asset: String,
    pub amount: Amount,
    pub status: HoldStatus,
    pub place_entry_id: i64,
    pub final_entry_id: Option<i64>,
}

/// A user's balances in one asset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub asset: String,
    pub available: Amount,
    pub pending: Amount,
    pub held: Amount,
}

/// Scopes a client's idempotency key (for example a user id, or a service
/// name for system writers).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey {
    pub scope: String,
    pub key: String,
}

impl IdempotencyKey {
    pub fn new(scope: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            scope: scope.into(),
            key: key.into(),
        }
    }
}

/// What an entry did to one of the owner's accounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceChange {
    pub asset: String,
    pub purpose: AccountPurpose,
    pub amount: SignedAmount,
}

/// One entry in a user's history, with its effect on their accounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    pub entry_id: i64,
    pub kind: EntryKind,
    pub reference: String,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub changes: Vec<BalanceChange>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub asset: Option<String>,
    pub kind: Option<EntryKind>,
}

/// A page of history, newest first. `next_cursor` continues strictly below
/// the last item; entries committed later never shift a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    pub next_cursor: Option<i64>,
}
