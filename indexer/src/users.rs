//! Users and refresh-token families in PostgreSQL. Password hashing and
//! token minting live in `api`; this module stores what they produce and
//! enforces the state transitions: rotation, reuse detection, revocation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "user_role", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Own wallets, balances, history and transfers.
    User,
    /// Everything a user can, on behalf of any user.
    Service,
    /// Reads everything; never moves user funds.
    Operator,
    /// Everything, plus user and role management.
    Admin,
}

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// What presenting a refresh token led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: it is now spent, and `new_hash` continues the family.
    Rotated {
        user_id: Uuid,
        family_id: Uuid,
        expires_at: DateTime<Utc>,
    },
    /// The token had already been rotated: the whole family is now revoked.
    ReuseDetected { user_id: Uuid, family_id: Uuid },
    /// Unknown, revoked or past its family's expiry.
    Rejected,
}

#[derive(Clone, Debug)]
pub struct Users {
    pool: PgPool,
}

/// family, user, expiry, rotated, revoked
type TokenRow = (
    Uuid,
    Uuid,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);
type UserRow = (Uuid, String, String, Role, Option<DateTime<Utc>>);

fn to_user((id, email, password_hash, role, disabled_at): UserRow) -> User {
    User {
        id,
        email,
        password_hash,
        role,
        disabled: disabled_at.is_some(),
    }
}

impl Users {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates a user; `email` must already be normalized.
    pub async fn create(&self, email: &str, password_hash: &str, role: Role) -> Result<Uuid> {
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO users (id, email, password_hash, role) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(email)
            .bind(password_hash)
            .bind(role)
            .execute(&self.pool)
            .await
            .map_err(|err| match &err {
                sqlx::Error::Database(db) if db.constraint() == Some("users_email_unique") => {
                    Error::EmailTaken
                }
                _ => Error::Database(err),
            })?;
        Ok(id)
    }

    pub async fn by_email(&self, email: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, email, password_hash, role, disabled_at FROM users WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(to_user))
    }

    pub async fn by_id(&self, id: Uuid) -> Result<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, email, password_hash, role, disabled_at FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(to_user))
    }

    /// Returns false if there is no such user.
    pub async fn set_role(&self, id: Uuid, role: Role) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET role = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(role)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Disables the user and revokes every refresh-token family they hold.
    /// Returns false if there is no such user.
    pub async fn disable(&self, id: Uuid) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE users SET disabled_at = coalesce(disabled_at, now()), updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        revoke_all(&mut tx, id).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the password hash and revokes every refresh-token family.
    pub async fn change_password(&self, id: Uuid, password_hash: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
                .bind(id)
                .bind(password_hash)
                .execute(&mut *tx)
                .await?;
        revoke_all(&mut tx, id).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Starts a family (a login) with its first token.
    pub async fn start_family(
        &self,
        user_id: Uuid,
        token_hash: &[u8; 32],
        expires_at: DateTime<Utc>,
    ) -> Result<Uuid> {
        let family_id = Uuid::new_v4();
        sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(&token_hash[..])
            .bind(family_id)
            .bind(user_id)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(family_id)
    }

    /// Spends `presented` and continues its family with `new_hash`, exactly
    /// once. Of two racing presentations of one token, one rotates and the
    /// other is treated as reuse, revoking the family (RFC 9700 §4.14.2).
    pub async fn rotate(
        &self,
        presented: &[u8; 32],
        new_hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Rotation> {
        let mut tx = self.pool.begin().await?;
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT family_id, user_id, expires_at, rotated_at, revoked_at FROM refresh_tokens
             WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(&presented[..])
        .fetch_optional(&mut *tx)
        .await?;
        let Some((family_id, user_id, expires_at, rotated_at, revoked_at)) = row else {
            return Ok(Rotation::Rejected);
        };
        if revoked_at.is_some() || expires_at <= now {
            return Ok(Rotation::Rejected);
        }
        if rotated_at.is_some() {
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
                .bind(family_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Rotation::ReuseDetected { user_id, family_id });
        }
        sqlx::query("UPDATE refresh_tokens SET rotated_at = $2 WHERE token_hash = $1")
            .bind(&presented[..])
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&new_hash[..])
        .bind(family_id)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Rotation::Rotated {
            user_id,
            family_id,
            expires_at,
        })
    }

    /// Revokes the family `presented` belongs to (logout). Returns the user
    /// it belonged to, if the token was known.
    pub async fn revoke_family(&self, presented: &[u8; 32]) -> Result<Option<Uuid>> {
        let owner: Option<Uuid> = sqlx::query_scalar(
            "UPDATE refresh_tokens SET revoked_at = now()
             WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1) AND revoked_at IS NULL
             RETURNING user_id",
        )
        .bind(&presented[..])
        .fetch_optional(&self.pool)
        .await?;
        if owner.is_some() {
            return Ok(owner);
        }
        Ok(
            sqlx::query_scalar("SELECT user_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(&presented[..])
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

async fn revoke_all(tx: &mut sqlx::PgConnection, user_id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
