//! `coffer.v1.AuthService`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use indexer::users::{Role, Rotation};
use tonic::{Request, Response, Status};

use super::pb::{self, auth_service_server::AuthService};
use super::throttle::{Client, ClientAddresses, Throttle, ThrottleConfig, Throttled};
use super::{Shared, internal, parse_uuid, require_role};
use crate::auth::FieldError;
use crate::auth::hashing::{HashingError, PasswordHashing};
use crate::auth::password::{normalize_email, validate_new_password};
use crate::auth::tokens::{hash_refresh_token, new_refresh_token};
use crate::config::AuthSettings;

#[derive(Debug)]
pub struct AuthApi {
    shared: Shared,
    refresh_ttl: Duration,
    throttle: Arc<Throttle>,
    clients: ClientAddresses,
    hashing: PasswordHashing,
}

/// Keys in the throttle table at most (about 40 MB at the longest emails).
const THROTTLE_MAX_KEYS: usize = 100_000;

impl AuthApi {
    /// `Err` names the invalid entry of `auth.trusted_proxies` (config
    /// validation has checked them already).
    pub fn new(shared: Shared, auth: &AuthSettings) -> Result<Self, String> {
        let clients = ClientAddresses::new(&auth.trusted_proxies, &auth.client_address_header)
            .map_err(|(index, why)| format!("auth.trusted_proxies[{index}]: {why}"))?;
        let throttle = Throttle::new(ThrottleConfig {
            per_account_and_client: auth.login_failures_per_account_and_client,
            per_client: auth.login_failures_per_client,
            per_account: auth.login_failures_per_account,
            window: Duration::from_secs(auth.login_window_secs),
            backoff_max: Duration::from_secs(auth.login_backoff_max_secs),
            registrations_per_client: auth.registrations_per_client,
            max_keys: THROTTLE_MAX_KEYS,
        });
        Ok(Self {
            shared,
            refresh_ttl: Duration::from_secs(auth.refresh_ttl_days * 86_400),
            throttle,
            clients,
            hashing: PasswordHashing::new(auth.password_hash_concurrency),
        })
    }

    fn client<T>(&self, request: &Request<T>) -> Client {
        Client::from_ip(
            self.clients
                .resolve(request.remote_addr(), request.metadata()),
        )
    }

    /// `checked_at` is when the credentials or session this pair rests on
    /// were checked; `sessions_valid_after` the user's cut-off read then.
    fn token_pair(
        &self,
        user: uuid::Uuid,
        checked_at: DateTime<Utc>,
        sessions_valid_after: i64,
        refresh_token: String,
        refresh_expires_at: DateTime<Utc>,
    ) -> Result<pb::TokenPair, Status> {
        let (access_token, access_expires) = self
            .shared
            .tokens
            .issue(
                user,
                u64::try_from(checked_at.timestamp()).unwrap_or(0),
                u64::try_from(sessions_valid_after).unwrap_or(0),
            )
            .map_err(internal)?;
        Ok(pb::TokenPair {
            access_token,
            refresh_token,
            access_expires_at: Some(timestamp(i64::try_from(access_expires).unwrap_or(i64::MAX))),
            refresh_expires_at: Some(timestamp(refresh_expires_at.timestamp())),
        })
    }
}

fn throttled(what: &str, refusal: Throttled) -> Status {
    let seconds = refusal.retry_after_secs();
    let mut status = Status::resource_exhausted(format!("{what}; retry in {seconds} s"));
    if let Ok(value) = seconds.to_string().parse() {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

fn hashing_status(err: HashingError) -> Status {
    match err {
        HashingError::Busy => {
            Status::resource_exhausted("too many password checks in flight; retry shortly")
        }
        other => internal(other),
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

const BAD_LOGIN: &str = "invalid email or password";

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let client = self.client(&request);
        let body = request.into_inner();
        let email = normalize_email("email", &body.email)?;
        validate_new_password("password", &body.password)?;
        let users = self.shared.users()?;
        let attempt = self
            .throttle
            .begin_registration(client)
            .map_err(|refusal| throttled("too many registrations from this address", refusal))?;
        let hash = self
            .hashing
            .hash(body.password)
            .await
            .map_err(hashing_status)?;
        match users.create(&email, &hash, Role::User).await {
            Ok(id) => {
                attempt.succeeded();
                Ok(Response::new(pb::RegisterResponse {
                    user_id: id.to_string(),
                }))
            }
            // A taken email tells whether an account exists: it counts
            // against the client like a failed login.
            Err(indexer::Error::EmailTaken) => {
                attempt.failed();
                Err(Status::already_exists("email: is already registered"))
            }
            Err(other) => Err(internal(other)),
        }
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::TokenPair>, Status> {
        let client = self.client(&request);
        let body = request.into_inner();
        let email = normalize_email("email", &body.email)?;
        required("password", &body.password)?;
        let users = self.shared.users()?;
        // Reserved before the check, so concurrent guesses count at once.
        let attempt = self
            .throttle
            .begin_password_check(&email, client)
            .map_err(|refusal| throttled("too many failed logins", refusal))?;
        let checked_at = Utc::now();
        let user = users.by_email(&email).await.map_err(internal)?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        // Unknown users verify against a dummy hash: same error, similar time.
        let valid = self
            .hashing
            .verify(body.password, stored)
            .await
            .map_err(hashing_status)?;
        let Some(user) = user.filter(|u| valid && !u.disabled) else {
            attempt.failed();
            return Err(Status::unauthenticated(BAD_LOGIN));
        };
        attempt.succeeded();
        let (refresh_token, refresh_hash) = new_refresh_token().map_err(internal)?;
        let expires_at = checked_at + self.refresh_ttl;
        // Refused if the password changed or the user was disabled since
        // it was read: the password just checked may no longer be theirs.
        users
            .start_family(user.id, user.session_epoch, &refresh_hash, expires_at)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::unauthenticated(BAD_LOGIN))?;
        Ok(Response::new(self.token_pair(
            user.id,
            checked_at,
            user.sessions_valid_after,
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
        let checked_at = Utc::now();
        match users
            .rotate(&presented, &refresh_hash, checked_at)
            .await
            .map_err(internal)?
        {
            // `rotate` refuses disabled users under their row lock.
            Rotation::Rotated {
                user_id,
                expires_at,
                sessions_valid_after,
                ..
            } => Ok(Response::new(self.token_pair(
                user_id,
                checked_at,
                sessions_valid_after,
                refresh_token,
                expires_at,
            )?)),
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
        let client = self.client(&request);
        let body = request.into_inner();
        required("current_password", &body.current_password)?;
        validate_new_password("new_password", &body.new_password)?;
        // A stolen access token must not make a password-guessing oracle:
        // the check counts against the same limits as logins.
        let attempt = self
            .throttle
            .begin_password_check(&caller.email, client)
            .map_err(|refusal| throttled("too many failed password checks", refusal))?;
        let stored = caller.password_hash.clone();
        if !self
            .hashing
            .verify(body.current_password, Some(stored))
            .await
            .map_err(hashing_status)?
        {
            attempt.failed();
            return Err(FieldError::new("current_password", "is incorrect").into());
        }
        attempt.succeeded();
        let hash = self
            .hashing
            .hash(body.new_password)
            .await
            .map_err(hashing_status)?;
        // Refused if the sessions ended meanwhile (a concurrent change or
        // disabling): the caller's token is void by now as well.
        if !self
            .shared
            .users()?
            .change_password(caller.id, caller.session_epoch, &hash)
            .await
            .map_err(internal)?
        {
            return Err(Status::unauthenticated("invalid or expired access token"));
        }
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
