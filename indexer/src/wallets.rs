//! Wallets (one per user and chain) and their deposit addresses.

use std::sync::Arc;

use chains::Chain;
use chrono::{DateTime, Utc};
use signer::DepositKeys;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    pub id: Uuid,
    pub user_id: Uuid,
    pub chain: Chain,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedAddress {
    pub chain: Chain,
    pub address: String,
    pub wallet_id: Uuid,
    pub derivation_path: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct Wallets {
    pool: PgPool,
    keys: Arc<DepositKeys>,
}

type WalletRow = (Uuid, Uuid, String, DateTime<Utc>);

fn to_wallet((id, user_id, chain, created_at): WalletRow) -> Result<Wallet> {
    Ok(Wallet {
        id,
        user_id,
        chain: chain.parse()?,
        created_at,
    })
}

impl Wallets {
    pub fn new(pool: PgPool, keys: Arc<DepositKeys>) -> Self {
        Self { pool, keys }
    }

    pub async fn create(&self, user_id: Uuid, chain: Chain) -> Result<Wallet> {
        let row: WalletRow = sqlx::query_as(
            "INSERT INTO wallets (id, user_id, chain) VALUES ($1, $2, $3) RETURNING id, user_id, chain, created_at",
        )
        .bind(Uuid::new_v4())
        .bind(user_id)
        .bind(chain.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.constraint() == Some("wallets_one_per_chain") => Error::WalletExists,
            _ => Error::Database(err),
        })?;
        to_wallet(row)
    }

    pub async fn list(&self, user_id: Uuid) -> Result<Vec<Wallet>> {
        let rows: Vec<WalletRow> = sqlx::query_as(
            "SELECT id, user_id, chain, created_at FROM wallets WHERE user_id = $1 ORDER BY chain",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(to_wallet).collect()
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Wallet>> {
        let row: Option<WalletRow> =
            sqlx::query_as("SELECT id, user_id, chain, created_at FROM wallets WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(to_wallet).transpose()
    }

    /// The user an issued deposit address belongs to, if `address` is one.
    /// Ethereum addresses compare without regard to case (they are stored
    /// EIP-55 checksummed, so the lookup normalizes to that form); other
    /// chains' compare as given, in the form Coffer issues them (Bitcoin:
    /// lowercase bech32).
    pub async fn owner_of_address(&self, chain: Chain, address: &str) -> Result<Option<Uuid>> {
        let address = match chain {
            Chain::Ethereum => match address.parse::<alloy_primitives::Address>() {
                Ok(parsed) => signer::ethereum::checksummed(&parsed),
                Err(_) => return Ok(None),
            },
            Chain::Bitcoin | Chain::Solana => address.to_owned(),
        };
        Ok(sqlx::query_scalar(
            "SELECT w.user_id FROM deposit_addresses d JOIN wallets w ON w.id = d.wallet_id
             WHERE d.chain = $1 AND d.address = $2",
        )
        .bind(chain.as_str())
        .bind(address)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Issues the chain's next HD child as a deposit address and adds it to
    /// the watched set, in one transaction.
    pub async fn new_address(&self, wallet: &Wallet) -> Result<IssuedAddress> {
        let mut tx = self.pool.begin().await?;
        // The counter row lock serializes issuance per chain: no index twice.
        let index: i64 = sqlx::query_scalar(
            "UPDATE address_counters SET next_index = next_index + 1 WHERE chain = $1 RETURNING next_index - 1",
        )
        .bind(wallet.chain.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let child = u32::try_from(index)
            .ok()
            .filter(|i| *i < 0x8000_0000)
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "{} address index {index} is out of range",
                    wallet.chain
                ))
            })?;
        let derived = self
            .keys
            .address(wallet.chain, child)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let created_at: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO deposit_addresses (chain, address, wallet_id, derivation_index, derivation_path)
             VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
        )
        .bind(wallet.chain.as_str())
        .bind(&derived.address)
        .bind(wallet.id)
        .bind(index)
        .bind(&derived.derivation_path)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO watched_addresses (chain, address, user_id) VALUES ($1, $2, $3)")
            .bind(wallet.chain.as_str())
            .bind(&derived.address)
            .bind(wallet.user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(IssuedAddress {
            chain: wallet.chain,
            address: derived.address,
            wallet_id: wallet.id,
            derivation_path: derived.derivation_path,
            created_at,
        })
    }
}
