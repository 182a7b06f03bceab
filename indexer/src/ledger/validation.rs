//! The rules the database enforces, checked in Rust first: a refused request
//! fails fast, with an error naming what is wrong, and touches nothing.

use std::collections::BTreeMap;

use super::{Amount, Asset, IdempotencyKey, NewEntry};
use crate::{Error, Result};

/// An idempotency key is 1 to 200 bytes in a non-empty scope.
pub(super) fn validate_key(key: &IdempotencyKey) -> Result<()> {
    if key.key.is_empty() || key.key.len() > 200 {
        return Err(Error::InvalidRequest(
            "idempotency key must be 1 to 200 bytes".into(),
        ));
    }
    if key.scope.is_empty() {
        return Err(Error::InvalidRequest(
            "idempotency scope must not be empty".into(),
        ));
    }
    Ok(())
}

/// The `assets` table's checks, with their reasons spelled out.
pub(super) fn validate_asset(asset: &Asset) -> Result<()> {
    let code_ok = (2..=16).contains(&asset.code.len())
        && asset
            .code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !code_ok {
        return Err(Error::InvalidRequest(format!(
            "asset code `{}` must be 2 to 16 characters of A-Z and 0-9",
            asset.code
        )));
    }
    if asset.decimals > 38 {
        return Err(Error::InvalidRequest(format!(
            "asset decimals {} exceed 38",
            asset.decimals
        )));
    }
    Ok(())
}

/// An entry has a reference, two or more nonzero legs, and sums to zero in
/// every asset; the database checks the same at commit.
pub(super) fn validate_entry(entry: &NewEntry) -> Result<()> {
    if entry.reference.is_empty() || entry.reference.len() > 200 {
        return Err(Error::InvalidRequest(
            "entry reference must be 1 to 200 bytes".into(),
        ));
    }
    if entry.legs.len() < 2 {
        return Err(Error::Unbalanced(format!(
            "entry `{}` needs at least two legs",
            entry.reference
        )));
    }
    let mut sums: BTreeMap<&str, (Amount, Amount)> = BTreeMap::new();
    for leg in &entry.legs {
        if leg.amount.magnitude.is_zero() {
            return Err(Error::InvalidAmount("a leg amount must not be zero".into()));
        }
        let (up, down) = sums.entry(leg.account.asset.as_str()).or_default();
        let side = if leg.amount.negative { down } else { up };
        *side = side
            .checked_add(leg.amount.magnitude)
            .ok_or_else(|| Error::InvalidAmount("leg amounts overflow".into()))?;
    }
    match sums.into_iter().find(|(_, (up, down))| up != down) {
        Some((asset, _)) => Err(Error::Unbalanced(format!(
            "entry `{}` does not sum to zero in {asset}",
            entry.reference
        ))),
        None => Ok(()),
    }
}

/// A user account needs an owner and a system account has none (the
/// `accounts_owner_matches_purpose` check).
pub(super) fn validate_owner(account: &super::AccountRef) -> Result<()> {
    if account.purpose.is_user() == account.owner.is_some() {
        return Ok(());
    }
    Err(Error::InvalidRequest(format!(
        "a {:?} account {} an owner",
        account.purpose,
        if account.purpose.is_user() {
            "needs"
        } else {
            "cannot have"
        }
    )))
}

/// Turns constraint violations into the errors callers act on.
pub(super) fn map_db_error(err: sqlx::Error, reference: Option<&str>) -> Error {
    if let sqlx::Error::Database(db) = &err {
        match db.constraint() {
            Some("balances_non_negative") => return Error::InsufficientFunds,
            Some("entries_reference_unique") => {
                return Error::DuplicateReference(reference.unwrap_or_default().to_owned());
            }
            Some("entries_balanced") => return Error::Unbalanced(db.message().to_owned()),
            Some("accounts_asset_fkey") => return Error::UnknownAsset(db.message().to_owned()),
            _ => {}
        }
    }
    Error::Database(err)
}
