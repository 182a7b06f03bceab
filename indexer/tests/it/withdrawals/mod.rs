//! The withdrawal pipeline's first states on a real PostgreSQL: requests
//! and their holds, approval, rejection and cancellation, nonce
//! reservation, signed attempts, and racing transitions.

mod ethereum;
mod nonces;
mod races;
mod requests;
mod reviews;
mod signing;

use chains::Chain;
use indexer::devnet::TestDb;
use indexer::ledger::{Amount, Balance, IdempotencyKey, Ledger};
use indexer::users::{Role, Users};
use indexer::withdrawals::{
    AssetPolicy, NewWithdrawal, SignedAttempt, Withdrawal, WithdrawalPolicy, Withdrawals,
};
use uuid::Uuid;

use crate::support::{fund, ledger_with_assets};

/// The hot wallet the tests reserve nonces for.
pub const HOT_WALLET: &str = "0x00000000000000000000000000000000000000aa";
/// ETH's withdrawal fee in the tests' policy.
pub const ETH_FEE: u64 = 1_000;
/// ETH amounts above this wait for an approver.
pub const ETH_THRESHOLD: u64 = 1_000_000;
/// What one user may withdraw of ETH in 24 hours.
pub const ETH_DAILY_LIMIT: u64 = 100_000_000;

pub fn policy() -> WithdrawalPolicy {
    let mut policy = WithdrawalPolicy::default();
    policy.assets.insert(
        "ETH".into(),
        AssetPolicy {
            fee: Amount::from_u64(ETH_FEE),
            approval_threshold: Amount::from_u64(ETH_THRESHOLD),
            daily_limit: Amount::from_u64(ETH_DAILY_LIMIT),
        },
    );
    policy.assets.insert(
        "BTC".into(),
        AssetPolicy {
            fee: Amount::from_u64(500),
            approval_threshold: Amount::from_u64(100_000),
            daily_limit: Amount::from_u64(1_000_000),
        },
    );
    policy
}

/// A fresh database with the support assets and [`policy`].
pub struct Setup {
    pub db: TestDb,
    pub ledger: Ledger,
    pub withdrawals: Withdrawals,
}

impl Setup {
    pub async fn new() -> Self {
        let db = TestDb::new().await.expect("database");
        let ledger = ledger_with_assets(db.pool()).await;
        let withdrawals = Withdrawals::new(ledger.clone(), policy());
        Self {
            db,
            ledger,
            withdrawals,
        }
    }

    pub async fn user(&self, role: Role) -> Uuid {
        Users::new(self.db.pool().clone())
            .create(&format!("{}@example.com", Uuid::new_v4()), "h", role)
            .await
            .expect("user")
    }

    /// A user holding `eth` wei available.
    pub async fn funded_user(&self, eth: u64) -> Uuid {
        let user = self.user(Role::User).await;
        fund(&self.ledger, user, "ETH", eth).await;
        user
    }

    pub async fn balance(&self, user: Uuid, asset: &str) -> Balance {
        self.ledger.balance(user, asset).await.expect("balance")
    }

    /// Requests `amount` wei for `user`, asked by the user, under a fresh key.
    pub async fn request_eth(&self, user: Uuid, amount: u64) -> Withdrawal {
        self.withdrawals
            .request(&key(), &eth_withdrawal(user, amount))
            .await
            .expect("request")
    }

    /// An approved ETH withdrawal reserved on [`HOT_WALLET`].
    pub async fn reserved_eth(&self, user: Uuid, amount: u64) -> Withdrawal {
        let requested = self.request_eth(user, amount).await;
        let (reserved, _) = self
            .withdrawals
            .reserve_nonce(HOT_WALLET, 0)
            .await
            .expect("reserve")
            .expect("an approved withdrawal to reserve");
        assert_eq!(reserved.id, requested.id, "the only approved withdrawal");
        reserved
    }
}

pub fn key() -> IdempotencyKey {
    IdempotencyKey::new("withdrawal-test", Uuid::new_v4().to_string())
}

pub fn eth_withdrawal(user: Uuid, amount: u64) -> NewWithdrawal {
    NewWithdrawal {
        user,
        asset: "ETH".into(),
        chain: Chain::Ethereum,
        amount: Amount::from_u64(amount),
        destination: "0x1111111111111111111111111111111111111111".into(),
        requested_by: user,
    }
}

/// A signed EIP-1559 attempt as the signer would hand it over (the bytes
/// only need to be bytes here).
pub fn signed(label: &str) -> SignedAttempt {
    SignedAttempt {
        tx_hash: format!("0x{:0>64}", hex_of(label)),
        raw_tx: format!("02f8-{label}").into_bytes(),
        fee_limit: Amount::from_u64(21_000 * 30),
        max_fee_per_gas: Some(Amount::from_u64(30)),
        max_priority_fee_per_gas: Some(Amount::from_u64(2)),
        gas_limit: Some(21_000),
        valid_until_height: None,
    }
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

pub fn amount(value: u64) -> Amount {
    Amount::from_u64(value)
}
