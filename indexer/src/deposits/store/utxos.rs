//! The Bitcoin custody UTXO set (`bitcoin_utxos`), written with the blocks
//! that change it and unwound with them.
//!
//! A batch's outputs go in first, then its spends, so an output created and
//! spent within one batch is recorded spent. A spend is kept only when it
//! names a recorded, unspent output; inputs signed by a Coffer key that
//! spend something else (an output to an address never issued) change
//! nothing.

use sqlx::{PgConnection, PgPool};

use crate::deposits::{ObservedBlock, to_i64};
use crate::metrics::CUSTODY_OUTPUTS;
use crate::{Error, Result};

/// The custody UTXO set in sum: what Coffer's Bitcoin keys hold on the
/// indexed chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CustodyTotals {
    pub unspent: u64,
    pub unspent_sat: u64,
    pub spent: u64,
}

/// The custody UTXO set's totals.
pub async fn custody_totals(pool: &PgPool) -> Result<CustodyTotals> {
    let (unspent, unspent_sat, spent): (i64, String, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE spent_txid IS NULL),
                coalesce(sum(value_sat) FILTER (WHERE spent_txid IS NULL), 0)::text,
                count(*) FILTER (WHERE spent_txid IS NOT NULL)
         FROM bitcoin_utxos",
    )
    .fetch_one(pool)
    .await?;
    let count = |n: i64| u64::try_from(n).map_err(|_| Error::Corrupt(format!("count {n}")));
    Ok(CustodyTotals {
        unspent: count(unspent)?,
        unspent_sat: unspent_sat
            .parse()
            .map_err(|_| Error::Corrupt(format!("custody sum {unspent_sat}")))?,
        spent: count(spent)?,
    })
}

/// Records `blocks`' custody outputs and spends in the caller's
/// transaction. A recorded output appearing again means a block indexed
/// twice: the primary key fails the batch rather than hide it.
pub(super) async fn record(tx: &mut PgConnection, blocks: &[ObservedBlock]) -> Result<()> {
    let created = blocks
        .iter()
        .flat_map(|b| b.utxos.created.iter().map(move |o| (b, o)));
    let mut txids = Vec::new();
    let mut vouts = Vec::new();
    let mut values = Vec::new();
    let mut addresses = Vec::new();
    let mut keychains = Vec::new();
    let mut indexes = Vec::new();
    let mut heights = Vec::new();
    let mut hashes = Vec::new();
    let mut deposits = Vec::new();
    for (block, output) in created {
        txids.push(output.tx_id.as_str());
        vouts.push(i32::try_from(output.vout).map_err(|_| Error::Corrupt("vout".into()))?);
        values.push(
            i64::try_from(output.value_sat).map_err(|_| Error::Corrupt("output value".into()))?,
        );
        addresses.push(output.address.as_str());
        keychains.push(output.keychain.as_str());
        indexes.push(i64::from(output.index));
        heights.push(to_i64(block.height)?);
        hashes.push(block.hash.as_str());
        deposits.push(output.deposit);
    }
    if !txids.is_empty() {
        sqlx::query(
            "INSERT INTO bitcoin_utxos (txid, vout, value_sat, address, keychain, derivation_index,
                                        block_height, block_hash, deposit)
             SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[],
                                  $6::bigint[], $7::bigint[], $8::text[], $9::bool[])",
        )
        .bind(&txids)
        .bind(&vouts)
        .bind(&values)
        .bind(&addresses)
        .bind(&keychains)
        .bind(&indexes)
        .bind(&heights)
        .bind(&hashes)
        .bind(&deposits)
        .execute(&mut *tx)
        .await?;
        for (keychain, deposit) in keychains.iter().zip(&deposits) {
            let kind = match (*keychain, *deposit) {
                (_, true) => "deposit",
                ("internal", false) => "change",
                _ => "own",
            };
            metrics::counter!(CUSTODY_OUTPUTS, "chain" => "bitcoin", "kind" => kind).increment(1);
        }
    }

    let spends = blocks
        .iter()
        .flat_map(|b| b.utxos.spent.iter().map(move |s| (b, s)));
    let (mut txids, mut vouts, mut spenders, mut vins, mut heights, mut hashes) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (block, spend) in spends {
        txids.push(spend.tx_id.as_str());
        vouts.push(i32::try_from(spend.vout).map_err(|_| Error::Corrupt("vout".into()))?);
        spenders.push(spend.spent_by.as_str());
        vins.push(i32::try_from(spend.vin).map_err(|_| Error::Corrupt("vin".into()))?);
        heights.push(to_i64(block.height)?);
        hashes.push(block.hash.as_str());
    }
    if txids.is_empty() {
        return Ok(());
    }
    let spent: Vec<(String, i32, String)> = sqlx::query_as(
        "UPDATE bitcoin_utxos u
         SET spent_txid = s.spent_by, spent_vin = s.vin, spent_height = s.height, spent_block_hash = s.hash
         FROM unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::bigint[], $6::text[])
              AS s(txid, vout, spent_by, vin, height, hash)
         WHERE u.txid = s.txid AND u.vout = s.vout AND u.spent_txid IS NULL
         RETURNING u.txid, u.vout, u.spent_txid",
    )
    .bind(&txids)
    .bind(&vouts)
    .bind(&spenders)
    .bind(&vins)
    .bind(&heights)
    .bind(&hashes)
    .fetch_all(&mut *tx)
    .await?;
    for (txid, vout, spender) in &spent {
        tracing::debug!(chain = "bitcoin", %txid, vout, spent_by = %spender, "custody output spent");
    }
    metrics::counter!(CUSTODY_OUTPUTS, "chain" => "bitcoin", "kind" => "spent")
        .increment(spent.len() as u64);
    Ok(())
}

/// Unwinds what blocks above `height` did to the set, in the caller's
/// transaction: their spends are cleared, their outputs removed.
pub(super) async fn unwind(tx: &mut PgConnection, height: i64) -> Result<()> {
    sqlx::query(
        "UPDATE bitcoin_utxos
         SET spent_txid = NULL, spent_vin = NULL, spent_height = NULL, spent_block_hash = NULL
         WHERE spent_height > $1 AND spent_txid IS NOT NULL",
    )
    .bind(height)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM bitcoin_utxos WHERE block_height > $1")
        .bind(height)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
