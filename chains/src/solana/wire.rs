//! The `getBlock` answer in `jsonParsed` encoding as it comes over the
//! wire, reduced to the fields deposits read.
//!
//! The answer is decoded borrowing from the response body: strings are
//! slices of it (`Cow` only copies one with escapes, which base58 never has)
//! and everything deposits do not need is skipped unparsed.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{CHAIN, CLEANED_UP, NO_BLOCK_CODES};
use crate::{Error, Result};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RpcBlock<'a> {
    #[serde(borrow)]
    pub(super) blockhash: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) previous_blockhash: Cow<'a, str>,
    pub(super) block_time: Option<i64>,
    #[serde(default, borrow)]
    pub(super) transactions: Vec<RpcTransactionWithMeta<'a>>,
}

#[derive(Deserialize)]
pub(super) struct RpcTransactionWithMeta<'a> {
    #[serde(borrow)]
    pub(super) meta: Option<RpcMeta<'a>>,
    #[serde(borrow)]
    pub(super) transaction: RpcTransaction<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RpcMeta<'a> {
    /// Left unparsed: only whether it is null matters.
    #[serde(borrow)]
    pub(super) err: Option<&'a RawValue>,
    /// Lamports per account key, before and after the transaction.
    #[serde(default)]
    pub(super) pre_balances: Vec<u64>,
    #[serde(default)]
    pub(super) post_balances: Vec<u64>,
    #[serde(default, borrow)]
    pub(super) inner_instructions: Option<Vec<RpcInnerInstructions<'a>>>,
    #[serde(default, borrow)]
    pub(super) pre_token_balances: Option<Vec<RpcTokenBalance<'a>>>,
    #[serde(default, borrow)]
    pub(super) post_token_balances: Option<Vec<RpcTokenBalance<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct RpcInnerInstructions<'a> {
    #[serde(borrow)]
    pub(super) instructions: Vec<RpcInstruction<'a>>,
}

#[derive(Deserialize)]
pub(super) struct RpcTransaction<'a> {
    #[serde(borrow)]
    pub(super) message: RpcMessage<'a>,
    #[serde(borrow)]
    pub(super) signatures: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RpcMessage<'a> {
    /// Decoded only for transactions whose balances credit something, the
    /// one place account indexes are resolved.
    #[serde(borrow)]
    pub(super) account_keys: &'a RawValue,
    #[serde(borrow)]
    pub(super) instructions: Vec<RpcInstruction<'a>>,
}

#[derive(Deserialize)]
pub(super) struct RpcAccountKey<'a> {
    #[serde(borrow)]
    pub(super) pubkey: Cow<'a, str>,
    #[serde(default)]
    pub(super) signer: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RpcInstruction<'a> {
    #[serde(borrow)]
    pub(super) program_id: Option<Cow<'a, str>>,
    /// An object for parsed programs, a string for some (memo); decoded
    /// only for the programs deposits come from.
    #[serde(borrow)]
    pub(super) parsed: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct ParsedInstruction<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) info: ParsedInfo<'a>,
}

/// The fields of an instruction that creates a token account: SPL Token
/// `initializeAccount{,2,3}` name `owner`, the Associated Token Account
/// program's `create{,Idempotent}` name `wallet`.
#[derive(Deserialize)]
pub(super) struct ParsedInfo<'a> {
    #[serde(borrow)]
    pub(super) account: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) owner: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) wallet: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct UiTokenAmount<'a> {
    #[serde(borrow)]
    pub(super) amount: Cow<'a, str>,
}

/// A JSON-RPC answer.
#[derive(Deserialize)]
pub(super) struct Envelope<T> {
    pub(super) result: Option<T>,
    pub(super) error: Option<RpcErrorBody>,
}

#[derive(Deserialize)]
pub(super) struct RpcErrorBody {
    pub(super) code: i64,
    pub(super) message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RpcTokenBalance<'a> {
    pub(super) account_index: u32,
    #[serde(borrow)]
    pub(super) mint: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) owner: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) program_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) ui_token_amount: UiTokenAmount<'a>,
}

#[derive(Deserialize)]
pub(super) struct RpcBlockHash {
    pub(super) blockhash: String,
}

/// Decodes a `getBlock` answer for a slot `getBlocks` listed.
pub(super) fn decode_block(slot: u64, body: &[u8]) -> Result<RpcBlock<'_>> {
    let envelope: Envelope<RpcBlock<'_>> = serde_json::from_slice(body).map_err(|e| {
        let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Error::malformed(
            CHAIN,
            "getBlock",
            format!("{e}; response starts: {snippet}"),
        )
    })?;
    if let Some(error) = envelope.error {
        return Err(if error.code == CLEANED_UP {
            Error::HistoryUnavailable {
                chain: CHAIN,
                detail: error.message,
            }
        } else if NO_BLOCK_CODES.contains(&error.code) {
            Error::inconsistent(
                CHAIN,
                format!("listed slot {slot} has no block: {}", error.message),
            )
        } else {
            Error::transport(
                CHAIN,
                "getBlock",
                format!("node error {}: {}", error.code, error.message),
            )
        });
    }
    envelope
        .result
        .ok_or_else(|| Error::inconsistent(CHAIN, format!("listed slot {slot} has no block")))
}
