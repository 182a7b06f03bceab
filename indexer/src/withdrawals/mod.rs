//! The chain-independent withdrawal pipeline on PostgreSQL.
//!
//! A withdrawal moves requested → approved → reserved → signed → broadcast
//! → confirming → completed, or ends rejected, cancelled, failed or manual
//! (see [`WithdrawalStatus`]). Every transition is one transaction that
//! locks the withdrawal's row and checks the status it leaves, so of two
//! racing transitions exactly one finds its status and the other is
//! refused; money moves inside the same transaction, through the ledger's
//! hold (placed on request, released on reject or cancel).
//!
//! What must happen before any network call happens here, committed: the
//! chain resource is reserved under a unique constraint (Ethereum: the
//! nonce, [`Withdrawals::reserve_nonce`]) and the signed bytes are stored
//! ([`Withdrawals::record_signed`]). Callers sign and send; this module
//! never speaks to a chain.
//!
//! One module per job: `types`, `rows` (reads and pages), `request`,
//! `review` (approve, reject, cancel, resolve manual), `nonces`, `signing`.

mod claim;
mod nonces;
mod request;
mod review;
mod rows;
mod signing;
mod types;
mod workload;

use std::sync::Arc;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

pub use claim::{Claimed, ClaimedBatch, FirstSend, Landing, REPLACEMENT_BUMP_PERCENT, bumped};
pub use nonces::{HOT_WALLET_SHORT, Queued};
pub use rows::MAX_PAGE_SIZE;
pub use types::*;
pub use workload::{PlanLock, StatusCount, SweepCandidate};

use crate::ledger::{IdempotencyKey, Ledger, retry_transient};
use crate::metrics::WITHDRAWAL_TRANSITIONS;
use crate::{Error, Result};

/// A transaction a transition's body owns and hands back to be committed
/// (owned, so the body's future stays `Send`).
type Tx = Transaction<'static, Postgres>;

/// The pipeline's store: the ledger it holds funds through and the
/// per-asset policy. Cheap to clone and share between workers.
#[derive(Clone, Debug)]
pub struct Withdrawals {
    ledger: Ledger,
    policy: Arc<WithdrawalPolicy>,
}

impl Withdrawals {
    pub fn new(ledger: Ledger, policy: WithdrawalPolicy) -> Self {
        Self {
            ledger,
            policy: Arc::new(policy),
        }
    }

    pub fn pool(&self) -> &PgPool {
        self.ledger.pool()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn policy(&self) -> &WithdrawalPolicy {
        &self.policy
    }

    /// Runs `body` in a transaction and commits what it returns, all again
    /// after a serialization failure or a deadlock.
    async fn transaction<T, F, Fut>(&self, body: F) -> Result<T>
    where
        F: Fn(Tx) -> Fut,
        Fut: Future<Output = Result<(Tx, T)>>,
    {
        retry_transient(|| async {
            let tx = self.pool().begin().await?;
            let (tx, done) = body(tx).await?;
            tx.commit().await?;
            Ok(done)
        })
        .await
    }
}

/// Counts a committed transition into `status`.
fn count_transition(status: WithdrawalStatus) {
    metrics::counter!(WITHDRAWAL_TRANSITIONS, "status" => status.as_str()).increment(1);
}

/// Serializes the transactions that name `what` until they end: an
/// advisory lock on its 64-bit hash (a collision only serializes two
/// unrelated requests).
async fn lock_name(conn: &mut PgConnection, what: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(what)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A write naming a person (requester, approver, closer) who is not a
/// user: [`Error::UserNotFound`] instead of a foreign-key error.
fn person_error(err: sqlx::Error, person: uuid::Uuid) -> Error {
    if let sqlx::Error::Database(db) = &err
        && matches!(
            db.constraint(),
            Some(
                "withdrawals_requested_by_fkey"
                    | "withdrawals_approved_by_fkey"
                    | "withdrawals_closed_by_fkey"
                    | "withdrawals_resolution_by_fkey"
            )
        )
    {
        return Error::UserNotFound(person);
    }
    Error::Database(err)
}

/// An idempotency key is 1 to 200 bytes in a scope of 1 to 200 bytes.
fn validate_key(key: &IdempotencyKey) -> Result<()> {
    if key.key.is_empty() || key.key.len() > 200 {
        return Err(Error::InvalidRequest(
            "idempotency_key: must be 1 to 200 bytes".into(),
        ));
    }
    if key.scope.is_empty() || key.scope.len() > 200 {
        return Err(Error::InvalidRequest(
            "idempotency scope must be 1 to 200 bytes".into(),
        ));
    }
    Ok(())
}

/// A reason given by a person: optional unless `required`, at most 1000
/// bytes, not blank.
fn validate_reason(reason: Option<&str>, required: bool) -> Result<Option<String>> {
    match reason.map(str::trim) {
        None | Some("") if required => Err(Error::InvalidRequest("reason: is required".into())),
        None | Some("") => Ok(None),
        Some(text) if text.len() > 1000 => Err(Error::InvalidRequest(
            "reason: must be at most 1000 bytes".into(),
        )),
        Some(text) => Ok(Some(text.to_owned())),
    }
}
