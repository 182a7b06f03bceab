//! Idempotency: every write names a client key, and a retried request gets
//! the stored response instead of acting twice.
//!
//! One vocabulary: a [`Claim`] is a key, the operation and the hash of the
//! request. Taking it inserts the key's row in the write's own transaction,
//! so a concurrent duplicate waits on that row and then replays the stored
//! response (or is refused if its request differs), and a failed write
//! rolls its claim back: only effects are remembered, never refusals.
//!
//! Each write takes its claim once, in one of two ways:
//! - [`Ledger::idempotent`], for writes of several statements (holds,
//!   offers): the claim is the transaction's first statement and the
//!   response is stored before it commits;
//! - [`CLAIM_STEP`], for `post`: the claim is a step of the one statement
//!   that inserts the entry, so a post stays one round trip. Its response is
//!   known before the entry exists (the id is drawn from the sequence), so
//!   the key row is written once, complete.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::retry::Tx;
use super::validation::validate_key;
use super::{IdempotencyKey, Ledger};
use crate::{Error, Result};

/// [`Claim::take`] as a step of the entry insert (`posting::INSERT`): claims
/// `$9`..`$12` (scope, key, operation, hash; all NULL for writers that claim
/// nothing) with the response the entry in `input` will have. The insert
/// goes on only if the claim was won.
pub(super) const CLAIM_STEP: &str = "claim AS (
     INSERT INTO idempotency_keys (scope, key, operation, request_hash, response)
     SELECT $9::text, $10::text, $11::text, $12::bytea,
            jsonb_build_object('id', id, 'kind', kind, 'reference', reference, 'created_at', now())
     FROM input WHERE $9::text IS NOT NULL
     ON CONFLICT DO NOTHING
     RETURNING 1
 )";

/// A request under its idempotency key, ready to be claimed.
pub(crate) struct Claim<'a> {
    pub(super) key: &'a IdempotencyKey,
    pub(super) operation: &'static str,
    pub(super) hash: [u8; 32],
}

impl<'a> Claim<'a> {
    /// Checks the key and hashes the operation with the request: the same
    /// key with another request is a conflict, never a replay.
    pub(crate) fn new<R: Serialize>(
        key: &'a IdempotencyKey,
        operation: &'static str,
        request: &R,
    ) -> Result<Self> {
        validate_key(key)?;
        let body = serde_json::to_vec(request)
            .map_err(|e| Error::InvalidRequest(format!("unserializable request: {e}")))?;
        let mut hasher = Sha256::new();
        hasher.update(operation.as_bytes());
        hasher.update([0]);
        hasher.update(&body);
        Ok(Self {
            key,
            operation,
            hash: hasher.finalize().into(),
        })
    }

    /// Takes the claim inside the caller's transaction: `None` if it is
    /// ours, the stored response if the same request already ran.
    async fn take<R: DeserializeOwned>(&self, conn: &mut PgConnection) -> Result<Option<R>> {
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, operation, request_hash) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.key.scope)
        .bind(&self.key.key)
        .bind(self.operation)
        .bind(&self.hash[..])
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            return Ok(None);
        }
        self.replay(conn).await.map(Some)
    }

    /// The response stored under a claim someone else won; a conflict if
    /// their request was a different one. Read in a statement of its own, so
    /// it sees the winner's commit.
    pub(super) async fn replay<R: DeserializeOwned>(&self, conn: &mut PgConnection) -> Result<R> {
        let (stored_hash, response): (Vec<u8>, Option<serde_json::Value>) = sqlx::query_as(
            "SELECT request_hash, response FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(&self.key.scope)
        .bind(&self.key.key)
        .fetch_one(&mut *conn)
        .await?;
        if stored_hash != self.hash {
            return Err(Error::IdempotencyConflict {
                key: self.key.key.clone(),
            });
        }
        let response =
            response.ok_or_else(|| Error::Corrupt("idempotency key without a response".into()))?;
        serde_json::from_value(response)
            .map_err(|e| Error::Corrupt(format!("stored idempotent response: {e}")))
    }

    /// Stores the response under the claim taken in this transaction.
    async fn record<R: Serialize>(&self, conn: &mut PgConnection, response: &R) -> Result<()> {
        let stored =
            serde_json::to_value(response).map_err(|e| Error::Corrupt(format!("response: {e}")))?;
        sqlx::query("UPDATE idempotency_keys SET response = $3 WHERE scope = $1 AND key = $2")
            .bind(&self.key.scope)
            .bind(&self.key.key)
            .bind(stored)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

impl Ledger {
    /// Runs `write` once per claim: in a transaction that takes the claim
    /// first and stores `write`'s response before committing; a replay
    /// returns the stored response and writes nothing.
    pub(crate) async fn idempotent<T, F, Fut>(&self, claim: &Claim<'_>, write: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Tx) -> Fut,
        Fut: Future<Output = Result<(Tx, T)>>,
    {
        self.transaction(|mut tx| async {
            if let Some(replayed) = claim.take(&mut tx).await? {
                return Ok((tx, replayed));
            }
            let (mut tx, response) = write(tx).await?;
            claim.record(&mut tx, &response).await?;
            Ok((tx, response))
        })
        .await
    }
}
