//! What a block's transactions credited to wanted owners: the deposit
//! rule applied to decoded `getBlock` transactions.

use std::borrow::Cow;

use super::wire::{
    ParsedInstruction, RpcAccountKey, RpcInstruction, RpcMeta, RpcTokenBalance,
    RpcTransactionWithMeta,
};
use super::{ASSOCIATED_TOKEN_PROGRAM, CHAIN, OwnerChange, TOKEN_PROGRAM, Transfer};
use crate::{Error, Result};

/// What a block's transactions credited to wanted owners.
#[derive(Default)]
pub(super) struct Credits {
    pub(super) transfers: Vec<Transfer>,
    pub(super) owner_changes: Vec<OwnerChange>,
}

/// Adds what one transaction credited; nothing if it failed.
///
/// A deposit is the net increase of an account's balance over the whole
/// transaction, never what an instruction names: lamports of a wanted
/// account however they arrived (transfer, account closure, program CPI),
/// and SPL tokens of a token account the wanted owner held before and
/// after, or that was created in the transaction already owned by it.
/// Accounts that signed are Coffer's own keys acting (sweeps), never
/// deposits.
pub(super) fn credits(
    tx: &RpcTransactionWithMeta<'_>,
    mints: &[String],
    wanted: &(dyn Fn(&str) -> bool + Send + Sync),
    out: &mut Credits,
) -> Result<()> {
    let Some(meta) = &tx.meta else {
        return Ok(());
    };
    if meta.err.is_some() {
        return Ok(());
    }
    let Some(signature) = tx.transaction.signatures.first() else {
        return Ok(());
    };
    let malformed =
        |what: String| Error::malformed(CHAIN, "getBlock", format!("{signature}: {what}"));
    if meta.pre_balances.len() != meta.post_balances.len() {
        return Err(malformed(format!(
            "{} preBalances but {} postBalances",
            meta.pre_balances.len(),
            meta.post_balances.len()
        )));
    }
    let gained = |i: usize| meta.post_balances[i].saturating_sub(meta.pre_balances[i]);
    let allowed = |b: &&RpcTokenBalance<'_>| {
        b.program_id.as_deref().is_none_or(|p| p == TOKEN_PROGRAM)
            && mints.iter().any(|m| *m == b.mint)
    };
    let post_tokens: Vec<&RpcTokenBalance<'_>> = meta
        .post_token_balances
        .iter()
        .flatten()
        .filter(allowed)
        .collect();
    // Most transactions credit no wanted account; their keys stay unread.
    if post_tokens.is_empty() && !(0..meta.post_balances.len()).any(|i| gained(i) > 0) {
        return Ok(());
    }
    let keys: Vec<RpcAccountKey<'_>> =
        serde_json::from_str(tx.transaction.message.account_keys.get())
            .map_err(|e| malformed(format!("accountKeys: {e}")))?;
    if keys.len() != meta.post_balances.len() {
        return Err(malformed(format!(
            "{} account keys but {} balances",
            keys.len(),
            meta.post_balances.len()
        )));
    }
    for (i, key) in keys.iter().enumerate() {
        let amount = gained(i);
        if amount > 0 && !key.signer && wanted(&key.pubkey) {
            out.transfers.push(Transfer {
                signature: signature.clone().into_owned(),
                position: i as u32,
                owner: key.pubkey.clone().into_owned(),
                mint: None,
                amount,
            });
        }
    }
    if post_tokens.is_empty() {
        return Ok(());
    }
    let signed = |owner: &str| keys.iter().any(|k| k.signer && k.pubkey == owner);
    let mut created: Option<Vec<(Cow<'_, str>, Cow<'_, str>)>> = None;
    for post in post_tokens {
        let Some(owner) = post.owner.as_deref() else {
            continue;
        };
        if !wanted(owner) || signed(owner) {
            continue;
        }
        let key = keys
            .get(post.account_index as usize)
            .ok_or_else(|| malformed(format!("token balance index {}", post.account_index)))?;
        let amount = token_amount(post).map_err(&malformed)?;
        let pre = meta
            .pre_token_balances
            .iter()
            .flatten()
            .find(|b| b.account_index == post.account_index);
        let (held_throughout, before) = match pre {
            Some(pre) => (
                pre.owner.as_deref() == Some(owner) && pre.mint == post.mint,
                token_amount(pre).map_err(&malformed)?,
            ),
            None => {
                let created = created.get_or_insert_with(|| token_accounts_created(tx, meta));
                let by_owner = created
                    .iter()
                    .any(|(account, holder)| *account == key.pubkey && holder == owner);
                (by_owner, 0)
            }
        };
        if !held_throughout {
            out.owner_changes.push(OwnerChange {
                signature: signature.clone().into_owned(),
                account: key.pubkey.clone().into_owned(),
                previous_owner: pre.and_then(|p| p.owner.as_deref()).map(str::to_owned),
                owner: owner.to_owned(),
                mint: post.mint.clone().into_owned(),
                amount,
            });
            continue;
        }
        if amount > before {
            out.transfers.push(Transfer {
                signature: signature.clone().into_owned(),
                position: post.account_index,
                owner: owner.to_owned(),
                mint: Some(post.mint.clone().into_owned()),
                amount: amount - before,
            });
        }
    }
    Ok(())
}

fn token_amount(balance: &RpcTokenBalance<'_>) -> std::result::Result<u64, String> {
    balance.ui_token_amount.amount.parse().map_err(|e| {
        format!(
            "token amount `{:.40}` of account index {}: {e}",
            balance.ui_token_amount.amount, balance.account_index
        )
    })
}

/// (token account, owner) for every token account the transaction
/// initialized, top-level or inner.
fn token_accounts_created<'a>(
    tx: &RpcTransactionWithMeta<'a>,
    meta: &RpcMeta<'a>,
) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
    let inner = meta
        .inner_instructions
        .iter()
        .flatten()
        .flat_map(|group| group.instructions.iter());
    tx.transaction
        .message
        .instructions
        .iter()
        .chain(inner)
        .filter_map(|ix| {
            let parsed = parsed(ix)?;
            let holder = match (ix.program_id.as_deref()?, &*parsed.kind) {
                (
                    TOKEN_PROGRAM,
                    "initializeAccount" | "initializeAccount2" | "initializeAccount3",
                ) => parsed.info.owner?,
                (ASSOCIATED_TOKEN_PROGRAM, "create" | "createIdempotent") => parsed.info.wallet?,
                _ => return None,
            };
            Some((parsed.info.account?, holder))
        })
        .collect()
}

/// The instruction's parsed form, if it is an object of the usual shape.
fn parsed<'a>(ix: &RpcInstruction<'a>) -> Option<ParsedInstruction<'a>> {
    serde_json::from_str(ix.parsed?.get()).ok()
}
