//! The gRPC surface: generated `coffer.v1` types, caller authentication, and
//! the mapping of library errors to `tonic::Status`.

pub mod auth;
pub mod history;
pub mod settlement;
pub mod throttle;
pub mod wallet;
pub mod withdrawal;

use std::sync::{Arc, OnceLock};

use indexer::ledger::{Amount, IdempotencyKey};
use indexer::users::{Role, User, Users};
use sqlx::PgPool;
use tonic::{Request, Status};
use uuid::Uuid;

use crate::auth::FieldError;
use crate::auth::tokens::AccessTokens;

#[allow(
    unused_qualifications,
    missing_debug_implementations,
    clippy::all,
    clippy::unwrap_used
)]
pub mod pb {
    tonic::include_proto!("coffer.v1");

    /// For server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("coffer_descriptor");
}

/// What every service needs: the database (once connected) and the token keys.
#[derive(Clone, Debug)]
pub struct Shared {
    pool: Arc<OnceLock<PgPool>>,
    /// One ledger for the process, so its account-id cache is shared.
    ledger: Arc<OnceLock<indexer::ledger::Ledger>>,
    pub tokens: Arc<AccessTokens>,
    pub deposit_keys: Arc<signer::DepositKeys>,
}

impl Shared {
    pub fn new(
        pool: Arc<OnceLock<PgPool>>,
        tokens: Arc<AccessTokens>,
        deposit_keys: Arc<signer::DepositKeys>,
    ) -> Self {
        Self {
            pool,
            ledger: Arc::default(),
            tokens,
            deposit_keys,
        }
    }

    pub fn wallets(&self) -> Result<indexer::wallets::Wallets, Status> {
        Ok(indexer::wallets::Wallets::new(
            self.pool()?.clone(),
            Arc::clone(&self.deposit_keys),
        ))
    }

    pub fn ledger(&self) -> Result<&indexer::ledger::Ledger, Status> {
        let pool = self.pool()?;
        Ok(self
            .ledger
            .get_or_init(|| indexer::ledger::Ledger::new(pool.clone())))
    }

    /// The pool, or UNAVAILABLE while the daemon is still connecting.
    pub fn pool(&self) -> Result<&PgPool, Status> {
        self.pool.get().ok_or_else(|| {
            Status::unavailable("starting: the database is not ready yet; retry shortly")
        })
    }

    pub fn users(&self) -> Result<Users, Status> {
        Ok(Users::new(self.pool()?.clone()))
    }

    /// Authenticates the request's bearer token and loads the caller. The
    /// user row is read on every call, so disabling a user or changing a
    /// role applies to the next request, not at token expiry; so does a
    /// password change, which voids tokens issued (`iat`) before it.
    pub async fn caller<T>(&self, request: &Request<T>) -> Result<User, Status> {
        let value = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <access_token>` metadata")
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be `Bearer <access_token>`")
            })?;
        let claims = self
            .tokens
            .verify(token.trim())
            .map_err(|_| Status::unauthenticated("invalid or expired access token"))?;
        let id = Uuid::parse_str(&claims.sub)
            .map_err(|_| Status::unauthenticated("invalid or expired access token"))?;
        let issued_at = i64::try_from(claims.iat).unwrap_or(i64::MAX);
        self.users()?
            .by_id(id)
            .await
            .map_err(internal)?
            .filter(|user| !user.disabled && issued_at >= user.sessions_valid_after)
            .ok_or_else(|| Status::unauthenticated("invalid or expired access token"))
    }

    /// `acting_for`, and for a write on another user's behalf that user
    /// must exist and be enabled: nobody acts for a disabled user.
    pub async fn acting_for(
        &self,
        caller: &User,
        requested: Option<&str>,
        access: Access,
    ) -> Result<Uuid, Status> {
        let id = acting_for(caller, requested, access)?;
        if access == Access::Write && id != caller.id {
            self.require_enabled("user_id", id).await?;
        }
        Ok(id)
    }

    /// NOT_FOUND for an unknown user, FAILED_PRECONDITION for a disabled
    /// one, both naming `field`.
    pub async fn require_enabled(&self, field: &'static str, id: Uuid) -> Result<(), Status> {
        match self.users()?.by_id(id).await.map_err(internal)? {
            None => Err(Status::not_found(format!("{field}: no such user"))),
            Some(user) if user.disabled => Err(Status::failed_precondition(format!(
                "{field}: the user is disabled"
            ))),
            Some(_) => Ok(()),
        }
    }
}

pub fn require_role(caller: &User, allowed: &[Role]) -> Result<(), Status> {
    if allowed.contains(&caller.role) {
        Ok(())
    } else {
        Err(Status::permission_denied(
            format!("the {:?} role may not do this", caller.role).to_lowercase(),
        ))
    }
}

impl From<FieldError> for Status {
    fn from(err: FieldError) -> Self {
        Status::invalid_argument(err.to_string())
    }
}

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Logs the detail and tells the client only what it can act on: UNAVAILABLE
/// while PostgreSQL cannot be reached (retry it), ABORTED for a
/// serialization failure or deadlock (retry the request), and INTERNAL, a
/// bug, for everything else.
pub fn internal(err: impl std::fmt::Display + 'static) -> Status {
    let any: &dyn std::any::Any = &err;
    let database = match any.downcast_ref::<indexer::Error>() {
        Some(indexer::Error::Database(db)) => Some(db),
        _ => any.downcast_ref::<sqlx::Error>(),
    };
    match database.map(classify_database_error) {
        Some(DatabaseFailure::Unavailable) => {
            tracing::warn!(error = %err, "request failed: the database is unavailable");
            Status::unavailable("the database is unavailable; retry shortly")
        }
        Some(DatabaseFailure::Conflict) => {
            tracing::warn!(error = %err, "request failed: transaction conflict");
            Status::aborted("the request conflicted with a concurrent one; retry it")
        }
        _ => {
            tracing::error!(error = %err, "request failed");
            Status::internal("internal error")
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseFailure {
    /// PostgreSQL cannot be reached, is shutting down or is out of connections.
    Unavailable,
    /// Serialization failure or deadlock: the transaction did nothing.
    Conflict,
    Other,
}

pub fn classify_database_error(err: &sqlx::Error) -> DatabaseFailure {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => DatabaseFailure::Unavailable,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // Class 08: connection exceptions; 57P01..03: the server is
            // shutting down, crashed or starting; 53300: too many connections.
            Some(code) if code.starts_with("08") => DatabaseFailure::Unavailable,
            Some("57P01" | "57P02" | "57P03" | "53300") => DatabaseFailure::Unavailable,
            Some("40001" | "40P01") => DatabaseFailure::Conflict,
            _ => DatabaseFailure::Other,
        },
        _ => DatabaseFailure::Other,
    }
}

pub fn parse_uuid(field: &'static str, value: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(value.trim()).map_err(|_| FieldError::new(field, "must be a UUID").into())
}

/// Base units: digits only. "1.5" of a base unit is over-precise.
pub fn parse_amount(field: &'static str, text: &str) -> Result<Amount, Status> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(FieldError::new(field, "must be positive").into());
    }
    if text.contains('.') {
        return Err(
            FieldError::new(field, "is base units and cannot have a fractional part").into(),
        );
    }
    let amount = Amount::parse(text).map_err(|e| FieldError::new(field, e.to_string()))?;
    if amount.is_zero() {
        return Err(FieldError::new(field, "must be positive").into());
    }
    Ok(amount)
}

/// A client's idempotency key, scoped to the user the request acts for.
pub fn idempotency_key(user: Uuid, key: &str) -> Result<IdempotencyKey, Status> {
    let key = key.trim();
    if key.is_empty() || key.len() > 200 {
        return Err(FieldError::new("idempotency_key", "must be 1 to 200 characters").into());
    }
    Ok(IdempotencyKey::new(user.to_string(), key))
}

/// Maps the indexer's refusals (ledger, offers, withdrawals) to codes a
/// client can act on; anything else goes through [`internal`].
pub fn ledger_status(err: indexer::Error) -> Status {
    use indexer::Error as E;
    match err {
        E::InsufficientFunds => Status::failed_precondition("amount: insufficient available funds"),
        E::IdempotencyConflict { .. } => {
            Status::already_exists("idempotency_key: already used for a different request")
        }
        E::DuplicateReference(_) => Status::already_exists("idempotency_key: already used"),
        E::UnknownAsset(_) => Status::invalid_argument("asset: unknown asset"),
        E::OfferNotFound => Status::not_found("offer_id: no such offer"),
        E::OfferNotOpen(status) => {
            Status::failed_precondition(format!("offer_id: the offer is {status:?}").to_lowercase())
        }
        E::FeeTakesWholeAmount => Status::failed_precondition(
            "offer_id: the sell amount is too small to pay the trade fee",
        ),
        E::WithdrawalNotFound(_) => Status::not_found("id: no such withdrawal"),
        E::WithdrawalState { status, action, .. } => Status::failed_precondition(format!(
            "id: the withdrawal is {status}; it cannot be {action}"
        )),
        E::SelfApproval => Status::permission_denied(
            "id: a withdrawal cannot be approved, rejected or resolved by its requester or its owner",
        ),
        // Its message starts with `amount:`.
        err @ E::DailyLimitExceeded { .. } => Status::failed_precondition(err.to_string()),
        E::UserNotFound(_) => Status::not_found("user_id: no such user"),
        E::UserDisabled(_) => Status::failed_precondition("user_id: the user is disabled"),
        E::InvalidRequest(message) | E::InvalidAmount(message) => Status::invalid_argument(message),
        other => internal(other),
    }
}

/// What a request does with the data of the user it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The user a request acts for: the caller, or the `user_id` it names. Only
/// `service` and `admin` may act for another user; `operator` may read any
/// user's data but change none.
pub fn acting_for(caller: &User, requested: Option<&str>, access: Access) -> Result<Uuid, Status> {
    let Some(text) = requested.filter(|text| !text.trim().is_empty()) else {
        return Ok(caller.id);
    };
    let id = parse_uuid("user_id", text)?;
    let allowed = id == caller.id
        || matches!(caller.role, Role::Service | Role::Admin)
        || (caller.role == Role::Operator && access == Access::Read);
    if allowed {
        Ok(id)
    } else {
        Err(Status::permission_denied(
            "user_id: only the service and admin roles may act for another user (operator may only read)",
        ))
    }
}

/// A keyset page token: `prefix` and the last id, base64url. Each list
/// has its own prefix, so one list's token is refused by another.
pub(crate) fn encode_page_token(prefix: &str, id: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{prefix}{id}"))
}

/// The id in a token [`encode_page_token`] made with `prefix`; `None` for
/// an empty token (the first page).
pub(crate) fn decode_page_token(prefix: &str, token: &str) -> Result<Option<i64>, Status> {
    use base64::Engine;
    if token.is_empty() {
        return Ok(None);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(prefix)?.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .map(Some)
        .ok_or_else(|| FieldError::new("page_token", "is not a token this server issued").into())
}
