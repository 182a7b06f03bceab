//! Assets: what the ledger counts in. A code names one asset across all
//! chains; registering is idempotent and never changes a registered asset.

use super::validation::validate_asset;
use super::{Asset, Ledger};
use crate::{Error, Result};

type AssetRow = (String, String, i16, Option<String>);

/// Registered assets by code, as read from the database.
#[derive(Debug, Default)]
pub(super) struct AssetCache(std::sync::RwLock<std::collections::HashMap<String, Asset>>);

fn to_asset((code, chain, decimals, contract): AssetRow) -> Result<Asset> {
    Ok(Asset {
        code,
        chain: chain.parse()?,
        decimals: u8::try_from(decimals)
            .map_err(|_| Error::Corrupt(format!("asset decimals {decimals}")))?,
        contract,
    })
}

impl Ledger {
    /// Registers an asset. Registering the same asset again is a no-op;
    /// registering a different one under a taken code or contract is refused.
    pub async fn register_asset(&self, asset: &Asset) -> Result<()> {
        validate_asset(asset)?;
        sqlx::query(
            "INSERT INTO assets (code, chain, decimals, contract) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(&asset.code)
        .bind(asset.chain.as_str())
        .bind(i16::from(asset.decimals))
        .bind(&asset.contract)
        .execute(&self.pool)
        .await?;
        match self.asset(&asset.code).await? {
            Some(stored) if stored == *asset => Ok(()),
            _ => Err(Error::AssetConflict(asset.code.clone())),
        }
    }

    /// The asset under `code`. A registered asset never changes, so one
    /// found is kept; one not found is asked again next time (another
    /// process may register it).
    pub async fn asset(&self, code: &str) -> Result<Option<Asset>> {
        let poisoned = || Error::Corrupt("asset cache poisoned".into());
        if let Some(asset) = self.assets.0.read().map_err(|_| poisoned())?.get(code) {
            return Ok(Some(asset.clone()));
        }
        let found =
            sqlx::query_as("SELECT code, chain, decimals, contract FROM assets WHERE code = $1")
                .bind(code)
                .fetch_optional(&self.pool)
                .await?
                .map(to_asset)
                .transpose()?;
        if let Some(asset) = &found {
            // Only registered codes enter, so the cache stays as small as
            // the asset list.
            self.assets
                .0
                .write()
                .map_err(|_| poisoned())?
                .insert(asset.code.clone(), asset.clone());
        }
        Ok(found)
    }

    pub async fn assets(&self) -> Result<Vec<Asset>> {
        let rows: Vec<AssetRow> =
            sqlx::query_as("SELECT code, chain, decimals, contract FROM assets ORDER BY code")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(to_asset).collect()
    }
}
