//! The double-entry ledger on PostgreSQL.
//!
//! Every write runs in one transaction that also records the client's
//! idempotency key, so a retried request returns the stored response instead
//! of acting twice. The schema (as it stands: `migrations/schema.sql`) enforces the
//! invariants on its own: entries balance per asset at commit, user balances
//! never go negative, postings are append-only. Rust checks the same rules
//! first to fail fast with a precise error.
//!
//! Hot system accounts (custody, external, fees, suspense) keep no maintained
//! balance row, so writers never queue behind one row lock; their balance is
//! the sum of their postings. User accounts keep one row each, updated by the
//! posting trigger, which is what serializes two spenders of the same funds.
//!
//! One module per job, each adding its part of [`Ledger`]: `assets`,
//! `posting` (the one entry insert), `holds`, `balances`, `accounts`
//! (resolution and its cache), `idempotency`, `validation`, `retry`,
//! [`history`]; [`settlement`] (P2P offers) builds on their crate API only.

mod accounts;
mod amount;
mod assets;
mod balances;
pub mod history;
mod holds;
mod idempotency;
mod posting;
mod retry;
pub mod settlement;
mod types;
mod validation;

use std::sync::Arc;

use sqlx::PgPool;

pub use amount::{Amount, AmountError, SignedAmount};
pub(crate) use holds::HoldFinish;
pub(crate) use idempotency::Claim;
pub(crate) use retry::retry_transient;
pub use types::*;

/// The ledger: a pool and the account-id cache, cheap to clone and share.
#[derive(Clone, Debug)]
pub struct Ledger {
    pool: PgPool,
    accounts: Arc<accounts::AccountCache>,
    assets: Arc<assets::AssetCache>,
}

impl Ledger {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            accounts: Arc::default(),
            assets: Arc::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Checks an entry against the rules the database enforces, without
    /// writing it: for batch writers that set refused items aside instead
    /// of failing the batch.
    pub fn check_entry(entry: &NewEntry) -> crate::Result<()> {
        validation::validate_entry(entry)
    }
}
