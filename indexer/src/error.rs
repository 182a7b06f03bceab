pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Chain(#[from] chains::Error),
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("idempotency key `{key}` was already used for a different request")]
    IdempotencyConflict { key: String },
    #[error("an entry with reference `{0}` already exists")]
    DuplicateReference(String),
    #[error("unbalanced entry: {0}")]
    Unbalanced(String),
    #[error("unknown asset: {0}")]
    UnknownAsset(String),
    #[error("asset `{0}` is already registered with different properties")]
    AssetConflict(String),
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("hold {0} not found")]
    HoldNotFound(i64),
    #[error("hold {id} is already {status:?}")]
    HoldFinalized {
        id: i64,
        status: crate::ledger::HoldStatus,
    },
    #[error("a user with this email already exists")]
    EmailTaken,
    #[error("the user already has a wallet on this chain")]
    WalletExists,
    #[error("offer not found")]
    OfferNotFound,
    #[error("the offer is {0:?}, not open")]
    OfferNotOpen(crate::ledger::settlement::OfferStatus),
    #[error("the trade fee would take the whole sell amount")]
    FeeTakesWholeAmount,
    #[error("user {0} does not exist")]
    UserNotFound(uuid::Uuid),
    #[error("user {0} is disabled")]
    UserDisabled(uuid::Uuid),
    #[error("withdrawal {0} not found")]
    WithdrawalNotFound(i64),
    #[error("withdrawal {id} is {status}; it cannot be {action}")]
    WithdrawalState {
        id: i64,
        status: crate::withdrawals::WithdrawalStatus,
        action: &'static str,
    },
    #[error("a withdrawal cannot be approved, rejected or resolved by its requester or its owner")]
    SelfApproval,
    #[error("amount: the daily withdrawal limit of {limit} {asset} would be exceeded")]
    DailyLimitExceeded {
        asset: String,
        limit: crate::ledger::Amount,
    },
    #[error("ledger events: {0}")]
    Events(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl From<chains::UnknownChain> for Error {
    fn from(err: chains::UnknownChain) -> Self {
        Error::Chain(err.into())
    }
}

impl Error {
    /// Serialization failures and deadlocks: the transaction did nothing and
    /// may simply run again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40001" | "40P01"))
            }
            _ => false,
        }
    }
}
