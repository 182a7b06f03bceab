//! Bitcoin payouts pay from the custody UTXO set itself (see
//! [`crate::deposits::custody_totals`]): no hot wallet, no sweeps, but coin
//! selection and change. Built so far: choosing the coins
//! ([`selection`]) from the confirmed unspent set ([`spendable_coins`]).

pub mod selection;

use sqlx::PgPool;

use crate::{Error, Result};

pub use selection::{Coin, FeePolicy, Selection, SelectionError, select};

/// Unspent custody coins with at least `confirmations` at `tip` (the
/// block itself counts as one), oldest first.
pub async fn spendable_coins(pool: &PgPool, tip: u64, confirmations: u64) -> Result<Vec<Coin>> {
    let Some(deepest) = (tip + 1).checked_sub(confirmations.max(1)) else {
        return Ok(Vec::new());
    };
    let deepest = i64::try_from(deepest).map_err(|_| Error::Corrupt("tip out of range".into()))?;
    let rows: Vec<(String, i32, i64, String, i64)> = sqlx::query_as(
        "SELECT txid, vout, value_sat, keychain, derivation_index FROM bitcoin_utxos
         WHERE spent_txid IS NULL AND block_height <= $1
         ORDER BY block_height, txid, vout",
    )
    .bind(deepest)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(Coin::from_row).collect()
}
