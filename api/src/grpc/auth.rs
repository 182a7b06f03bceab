//! `coffer.v1.AuthService`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use indexer::users::{Role, Rotation};
use tonic::{Request, Response, Status};

use super::pb::{self, auth_service_server::AuthService};
use super::throttle::LoginThrottle;
use super::{Shared, internal, parse_uuid, require_role};
use crate::auth::FieldError;
use crate::auth::password::{
    hash_password, normalize_email, validate_new_password, verify_password,
};
use crate::auth::tokens::{hash_refresh_token, new_refresh_token};

#[derive(Debug)]
pub struct AuthApi {
    shared: Shared,
    refresh_ttl: Duration,
    throttle: Arc<LoginThrottle>,
}

impl AuthApi {
    pub fn new(shared: Shared, refresh_ttl: Duration, throttle: LoginThrottle) -> Self {
        Self {
            shared,
            refresh_ttl,
            throttle: Arc::new(throttle),
        }
    }

    fn token_pair(
        &self,
        user: uuid::Uuid,
        refresh_token: String,
        refresh_expires_at: DateTime<Utc>,
    ) -> Result<pb::TokenPair, Status> {
        let now = Utc::now();
        let (access_token, access_expires) = self
            .shared
            .tokens
            .issue(user, u64::try_from(now.timestamp()).unwrap_or(0))
            .map_err(internal)?;
        Ok(pb::TokenPair {
            access_token,
            refresh_token,
            access_expires_at: Some(timestamp(i64::try_from(access_expires).unwrap_or(i64::MAX))),
            refresh_expires_at: Some(timestamp(refresh_expires_at.timestamp())),
        })
    }
}

/// Token expiries are whole seconds, as in the tokens themselves.
fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::User => pb::Role::User,
        Role::Service => pb::Role::Service,
        Role::Operator => pb::Role::Operator,
        Role::Admin => pb::Role::Admin,
    }
}

fn role_from_pb(value: i32) -> Result<Role, Status> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::User) => Ok(Role::User),
        Ok(pb::Role::Service) => Ok(Role::Service),
        Ok(pb::Role::Operator) => Ok(Role::Operator),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Unspecified) => Err(FieldError::new("role", "must be set").into()),
        Err(_) => Err(FieldError::new("role", format!("unknown value {value}")).into()),
    }
}

fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str, Status> {
    if value.is_empty() {
        return Err(FieldError::new(field, "is required").into());
    }
    Ok(value)
}

/// argon2 is deliberately slow: it runs on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work).await.map_err(internal)
}

const BAD_LOGIN: &str = "invalid email or password";

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let body = request.into_inner();
        let email = normalize_email("email", &body.email)?;
        validate_new_password("password", &body.password)?;
        let users = self.shared.users()?;
        let hash = blocking(move || hash_password(&body.password))
            .await?
            .map_err(internal)?;
        let id = users
            .create(&email, &hash, Role::User)
            .await
            .map_err(|err| match err {
                indexer::Error::EmailTaken => {
                    Status::already_exists("email: is already registered")
                }
                other => internal(other),
            })?;
        Ok(Response::new(pb::RegisterResponse {
            user_id: id.to_string(),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let client = request.remote_addr().map(|addr| addr.ip());
        let body = request.into_inner();
        let email = normalize_email("email", &body.email)?;
        required("password", &body.password)?;
        if !self.throttle.allows(&email, client) {
            return Err(Status::resource_exhausted(
                "too many failed logins; retry later",
            ));
        }
        let users = self.shared.users()?;
        let user = users.by_email(&email).await.map_err(internal)?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        // Unknown users verify against a dummy hash: same error, similar time.
        let password = body.password;
        let valid = blocking(move || verify_password(&password, stored.as_deref())).await?;
        let Some(user) = user.filter(|u| valid && !u.disabled) else {
            self.throttle.record_failure(&email, client);
            return Err(Status::unauthenticated(BAD_LOGIN));
        };
        self.throttle.record_success(&email, client);
        let (refresh_token, refresh_hash) = new_refresh_token().map_err(internal)?;
        let expires_at = Utc::now() + self.refresh_ttl;
        users
            .start_family(user.id, &refresh_hash, expires_at)
            .await
            .map_err(internal)?;
        Ok(Response::new(self.token_pair(
            user.id,
            refresh_token,
            expires_at,
        )?))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let body = request.into_inner();
        let presented = hash_refresh_token(required("refresh_token", body.refresh_token.trim())?);
        let users = self.shared.users()?;
        let (refresh_token, refresh_hash) = new_refresh_token().map_err(internal)?;
        match users
            .rotate(&presented, &refresh_hash, Utc::now())
            .await
            .map_err(internal)?
        {
            Rotation::Rotated {
                user_id,
                expires_at,
                ..
            } => {
                let active = users
                    .by_id(user_id)
                    .await
                    .map_err(internal)?
                    .is_some_and(|u| !u.disabled);
                if !active {
                    return Err(Status::unauthenticated("invalid refresh token"));
                }
                Ok(Response::new(self.token_pair(
                    user_id,
                    refresh_token,
                    expires_at,
                )?))
            }
            Rotation::ReuseDetected { user_id, family_id } => {
                tracing::warn!(%user_id, %family_id, "refresh token reused; session revoked");
                Err(Status::unauthenticated(
                    "refresh token was already used; the session is revoked",
                ))
            }
            Rotation::Rejected => Err(Status::unauthenticated("invalid refresh token")),
        }
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let body = request.into_inner();
        let presented = hash_refresh_token(required("refresh_token", body.refresh_token.trim())?);
        // Unknown tokens succeed too: logging out twice is not an error.
        self.shared
            .users()?
            .revoke_family(&presented)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = self.shared.caller(&request).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            user_id: caller.id.to_string(),
            email: caller.email,
            role: role_to_pb(caller.role).into(),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = self.shared.caller(&request).await?;
        let body = request.into_inner();
        required("current_password", &body.current_password)?;
        validate_new_password("new_password", &body.new_password)?;
        let (current, stored) = (body.current_password, caller.password_hash.clone());
        if !blocking(move || verify_password(&current, Some(&stored))).await? {
            return Err(FieldError::new("current_password", "is incorrect").into());
        }
        let new_password = body.new_password;
        let hash = blocking(move || hash_password(&new_password))
            .await?
            .map_err(internal)?;
        self.shared
            .users()?
            .change_password(caller.id, &hash)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn set_role(
        &self,
        request: Request<pb::SetRoleRequest>,
    ) -> Result<Response<pb::SetRoleResponse>, Status> {
        let caller = self.shared.caller(&request).await?;
        require_role(&caller, &[Role::Admin])?;
        let body = request.into_inner();
        let user = parse_uuid("user_id", &body.user_id)?;
        let role = role_from_pb(body.role)?;
        if !self
            .shared
            .users()?
            .set_role(user, role)
            .await
            .map_err(internal)?
        {
            return Err(Status::not_found("user_id: no such user"));
        }
        Ok(Response::new(pb::SetRoleResponse {}))
    }

    async fn disable_user(
        &self,
        request: Request<pb::DisableUserRequest>,
    ) -> Result<Response<pb::DisableUserResponse>, Status> {
        let caller = self.shared.caller(&request).await?;
        require_role(&caller, &[Role::Admin])?;
        let user = parse_uuid("user_id", &request.into_inner().user_id)?;
        if !self.shared.users()?.disable(user).await.map_err(internal)? {
            return Err(Status::not_found("user_id: no such user"));
        }
        Ok(Response::new(pb::DisableUserResponse {}))
    }
}
