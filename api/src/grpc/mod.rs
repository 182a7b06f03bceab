//! The gRPC surface: generated `coffer.v1` types, caller authentication, and
//! the mapping of library errors to `tonic::Status`.

pub mod auth;
pub mod throttle;

use std::sync::{Arc, OnceLock};

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
    pub tokens: Arc<AccessTokens>,
}

impl Shared {
    pub fn new(pool: Arc<OnceLock<PgPool>>, tokens: Arc<AccessTokens>) -> Self {
        Self { pool, tokens }
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
    /// role applies to the next request, not at token expiry.
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
        self.users()?
            .by_id(id)
            .await
            .map_err(internal)?
            .filter(|user| !user.disabled)
            .ok_or_else(|| Status::unauthenticated("invalid or expired access token"))
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

/// Logs the detail and tells the client only that something failed.
pub fn internal(err: impl std::fmt::Display) -> Status {
    tracing::error!(error = %err, "request failed");
    Status::internal("internal error")
}

pub fn parse_user_id(field: &'static str, value: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(value.trim()).map_err(|_| FieldError::new(field, "must be a UUID").into())
}
