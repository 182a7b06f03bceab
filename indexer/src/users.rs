//! Users and refresh-token families in PostgreSQL. Password hashing and
//! token minting live in `api`; this module stores what they produce and
//! enforces the state transitions: rotation, reuse detection, revocation.
//! Every transition of a user's sessions holds that user's row lock, so a
//! revocation never races a rotation or a login.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::ledger::{Ledger, retry_transient};
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
    /// Bumped whenever the user's sessions end (password change, disabling);
    /// a login names the epoch it checked the password under.
    pub session_epoch: i64,
    /// Unix seconds: access tokens issued (`iat`) before it are void.
    pub sessions_valid_after: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .field("session_epoch", &self.session_epoch)
            .field("sessions_valid_after", &self.sessions_valid_after)
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
        /// The user's `sessions_valid_after` when the rotation committed.
        sessions_valid_after: i64,
    },
    /// The token had already been rotated: the whole family is now revoked.
    ReuseDetected { user_id: Uuid, family_id: Uuid },
    /// Unknown, revoked, past its family's expiry, or its user is disabled.
    Rejected,
}

#[derive(Clone, Debug)]
pub struct Users {
    pool: PgPool,
}

/// family, expiry, rotated, revoked
type TokenRow = (
    Uuid,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);
type UserRow = (Uuid, String, String, Role, Option<DateTime<Utc>>, i64, i64);

const USER_COLUMNS: &str =
    "id, email, password_hash, role, disabled_at, session_epoch, sessions_valid_after";

fn to_user(
    (id, email, password_hash, role, disabled_at, session_epoch, sessions_valid_after): UserRow,
) -> User {
    User {
        id,
        email,
        password_hash,
        role,
        disabled: disabled_at.is_some(),
        session_epoch,
        sessions_valid_after,
    }
}

/// Locks the user row for the rest of `tx`. Everything that issues or
/// revokes a user's refresh tokens takes this lock first, so those
/// operations serialize per user: under READ COMMITTED a revocation would
/// otherwise miss a token that a concurrent rotation inserted after the
/// revocation's snapshot. `NO KEY UPDATE` leaves foreign-key checks of rows
/// that reference the user (wallets, offers) unblocked.
async fn lock_user(tx: &mut PgConnection, id: Uuid) -> Result<Option<User>> {
    let row: Option<UserRow> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR NO KEY UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(to_user))
}

/// The owner of a refresh token. A token's owner never changes, so reading
/// it before taking the owner's lock is safe.
async fn token_owner(tx: &mut PgConnection, token_hash: &[u8; 32]) -> Result<Option<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT user_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(&token_hash[..])
            .fetch_optional(&mut *tx)
            .await?,
    )
}

/// Ends every session of a user whose row `tx` has locked: revokes all
/// refresh tokens, bumps the epoch (so a login that checked the old password
/// starts nothing) and moves `sessions_valid_after` past this second and
/// past its previous value, which voids every access token issued so far.
async fn end_sessions(tx: &mut PgConnection, user: &User) -> Result<()> {
    let valid_after = (Utc::now().timestamp() + 1).max(user.sessions_valid_after + 1);
    sqlx::query(
        "UPDATE users SET session_epoch = session_epoch + 1, sessions_valid_after = $2, updated_at = now()
         WHERE id = $1",
    )
    .bind(user.id)
    .bind(valid_after)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user.id)
    .execute(&mut *tx)
    .await?;
    Ok(())
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
        let row: Option<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(to_user))
    }

    pub async fn by_id(&self, id: Uuid) -> Result<Option<User>> {
        let row: Option<UserRow> =
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
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

    /// Disables the user, ends every session, and cancels their open offers
    /// (releasing the holds), all in one transaction. Offers are created
    /// under a share lock of the maker's row, so none can appear after
    /// this commits. Returns false if there is no such user.
    pub async fn disable(&self, id: Uuid) -> Result<bool> {
        let ledger = Ledger::new(self.pool.clone());
        retry_transient(|| async {
            let mut tx = self.pool.begin().await?;
            let Some(user) = lock_user(&mut tx, id).await? else {
                return Ok(false);
            };
            sqlx::query(
                "UPDATE users SET disabled_at = coalesce(disabled_at, now()), updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            end_sessions(&mut tx, &user).await?;
            let cancelled = ledger.cancel_open_offers(&mut tx, id).await?;
            tx.commit().await?;
            tracing::info!(user_id = %id, cancelled_offers = cancelled, "user disabled");
            Ok(true)
        })
        .await
    }

    /// Replaces the password hash and ends every session, if the user's
    /// session epoch is still `verified_epoch`, the one the current password
    /// was checked under. Returns false if there is no such user or the
    /// sessions changed meanwhile (another password change won the race).
    pub async fn change_password(
        &self,
        id: Uuid,
        verified_epoch: i64,
        password_hash: &str,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let Some(user) = lock_user(&mut tx, id).await? else {
            return Ok(false);
        };
        if user.session_epoch != verified_epoch || user.disabled {
            return Ok(false);
        }
        sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(id)
            .bind(password_hash)
            .execute(&mut *tx)
            .await?;
        end_sessions(&mut tx, &user).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Starts a family (a login) with its first token, if the user is still
    /// enabled and their session epoch is still `verified_epoch`, the one
    /// the password was checked under. Returns the family, or `None` when a
    /// password change or disabling got in between.
    pub async fn start_family(
        &self,
        user_id: Uuid,
        verified_epoch: i64,
        token_hash: &[u8; 32],
        expires_at: DateTime<Utc>,
    ) -> Result<Option<Uuid>> {
        let mut tx = self.pool.begin().await?;
        let current = lock_user(&mut tx, user_id).await?;
        if !current.is_some_and(|u| !u.disabled && u.session_epoch == verified_epoch) {
            return Ok(None);
        }
        let family_id = Uuid::new_v4();
        sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(&token_hash[..])
            .bind(family_id)
            .bind(user_id)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(family_id))
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
        let Some(user_id) = token_owner(&mut tx, presented).await? else {
            return Ok(Rotation::Rejected);
        };
        let Some(user) = lock_user(&mut tx, user_id).await? else {
            return Ok(Rotation::Rejected);
        };
        // Under the user's lock nobody else writes this user's tokens.
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT family_id, expires_at, rotated_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(&presented[..])
        .fetch_optional(&mut *tx)
        .await?;
        let Some((family_id, expires_at, rotated_at, revoked_at)) = row else {
            return Ok(Rotation::Rejected);
        };
        if revoked_at.is_some() || expires_at <= now || user.disabled {
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
            sessions_valid_after: user.sessions_valid_after,
        })
    }

    /// Revokes the family `presented` belongs to (logout). Returns the user
    /// it belonged to, if the token was known.
    pub async fn revoke_family(&self, presented: &[u8; 32]) -> Result<Option<Uuid>> {
        let mut tx = self.pool.begin().await?;
        let Some(user_id) = token_owner(&mut tx, presented).await? else {
            return Ok(None);
        };
        lock_user(&mut tx, user_id).await?;
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = now()
             WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1) AND revoked_at IS NULL",
        )
        .bind(&presented[..])
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(user_id))
    }
}

/// Refuses an unknown or disabled user, and holds a share lock on their row
/// for the rest of `tx`, so disabling them (which cancels what they have
/// open) waits for this transaction: offers and withdrawals take it before
/// they hold funds.
pub(crate) async fn lock_active_user(tx: &mut PgConnection, id: Uuid) -> Result<()> {
    let disabled: Option<bool> =
        sqlx::query_scalar("SELECT disabled_at IS NOT NULL FROM users WHERE id = $1 FOR SHARE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    require_active(id, disabled)
}

/// Refuses user `id` whose row said `disabled` (`None`: no row).
pub(crate) fn require_active(id: Uuid, disabled: Option<bool>) -> Result<()> {
    match disabled {
        None => Err(Error::UserNotFound(id)),
        Some(true) => Err(Error::UserDisabled(id)),
        Some(false) => Ok(()),
    }
}
