//! Solana nodes over JSON-RPC with the `solana-rpc-client` family.
//!
//! Deposit fetching lists the produced slots of a range with `getBlocks`
//! (skipped slots are normal and simply absent), then reads each block with
//! `getBlock` in `jsonParsed` encoding, decoded into lean structs that read
//! only what deposits need: the balance changes of successful transactions
//! (lamports per account, SPL Token amounts per token account with their
//! owners before and after) and the instructions that create token
//! accounts.

use std::borrow::Cow;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use solana_commitment_config::CommitmentConfig;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::client_error::{Error as ClientError, ErrorKind};
use solana_rpc_client_api::request::{RpcError, RpcRequest};

use crate::{Chain, ChainHead, Error, HeadSource, Result};

const CHAIN: Chain = Chain::Solana;

#[derive(Clone)]
pub struct SolanaClient {
    rpc: Arc<RpcClient>,
    /// Plain HTTP for `getBlock`: the body is decoded straight into the
    /// lean structs below, without the intermediate JSON tree `RpcClient`
    /// builds for every answer.
    http: reqwest::Client,
    url: Arc<str>,
}

impl std::fmt::Debug for SolanaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry an API key: never printed.
        f.debug_struct("SolanaClient")
            .field("url", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl SolanaClient {
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        url::Url::parse(url).map_err(|e| Error::Config {
            chain: CHAIN,
            detail: format!("rpc_url: {e}"),
        })?;
        // One connection pool for the RPC client and the raw `getBlock` calls.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(timeout)
            .build()
            .map_err(|e| Error::Config {
                chain: CHAIN,
                detail: format!("http client: {e}"),
            })?;
        // Not `HttpSender`, which panics on a reply that is not an object.
        let sender = sender::JsonRpcSender::new(http.clone(), url);
        let rpc = RpcClient::new_sender(
            sender,
            solana_rpc_client::rpc_client::RpcClientConfig::with_commitment(
                CommitmentConfig::confirmed(),
            ),
        );
        Ok(Self {
            rpc: Arc::new(rpc),
            http,
            url: url.into(),
        })
    }

    /// The underlying client, for calls this wrapper does not cover yet.
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    pub async fn slot(&self, commitment: CommitmentConfig) -> Result<u64> {
        self.rpc
            .get_slot_with_commitment(commitment)
            .await
            .map_err(|e| classify("getSlot", e))
    }

    /// `getGenesisHash` (base58): which cluster the node belongs to.
    pub async fn genesis_hash(&self) -> Result<String> {
        const METHOD: &str = "getGenesisHash";
        let started = Instant::now();
        let hash = self
            .rpc
            .get_genesis_hash()
            .await
            .map_err(|e| classify(METHOD, e))?;
        observe_rpc(METHOD, started);
        Ok(hash.to_string())
    }
}

/// The SPL Token program. Token-2022 transfers are not deposits yet.
pub const TOKEN_PROGRAM: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
/// The Associated Token Account program, which creates token accounts.
pub const ASSOCIATED_TOKEN_PROGRAM: &str = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL";
/// Blocks fetched at once within a range.
pub const FETCH_CONCURRENCY: usize = 4;
/// `getBlock` answers for a slot without a block: skipped (-32007, -32009)
/// or not available yet (-32004).
const NO_BLOCK_CODES: [i64; 3] = [-32004, -32007, -32009];
/// `getBlock` for a slot the node has cleaned up from its ledger.
const CLEANED_UP: i64 = -32001;

/// A block reduced to what deposit matching needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub slot: u64,
    pub blockhash: String,
    pub previous_blockhash: String,
    /// Unix seconds, where the node knows it.
    pub time: Option<i64>,
    pub transfers: Vec<Transfer>,
    pub owner_changes: Vec<OwnerChange>,
}

/// Value that arrived at a wanted owner in a successful transaction: the
/// net increase of one account's balance over the whole transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub signature: String,
    /// The credited account's index in the transaction's account keys: the
    /// wallet itself for SOL, its token account for SPL.
    pub position: u32,
    /// The wallet address credited: the account whose lamports grew, or
    /// the owner of the token account whose balance grew.
    pub owner: String,
    /// The SPL mint; `None` for SOL.
    pub mint: Option<String>,
    /// Lamports or token base units.
    pub amount: u64,
}

/// A token account of an allow-listed mint that a wanted owner holds after
/// a transaction but did not hold throughout it (another owner before, or
/// created for someone else and handed over). Its balance is not a
/// deposit: what the owner was given is an account, not tokens that
/// arrived at an address it controlled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerChange {
    pub signature: String,
    /// The token account.
    pub account: String,
    /// Its owner before the transaction; `None` where it was created in it.
    pub previous_owner: Option<String>,
    pub owner: String,
    pub mint: String,
    /// Its balance after the transaction.
    pub amount: u64,
}

// The answer is decoded borrowing from the response body: strings are
// slices of it (`Cow` only copies one with escapes, which base58 never has)
// and everything deposits do not need is skipped unparsed.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcBlock<'a> {
    #[serde(borrow)]
    blockhash: Cow<'a, str>,
    #[serde(borrow)]
    previous_blockhash: Cow<'a, str>,
    block_time: Option<i64>,
    #[serde(default, borrow)]
    transactions: Vec<RpcTransactionWithMeta<'a>>,
}

#[derive(Deserialize)]
struct RpcTransactionWithMeta<'a> {
    #[serde(borrow)]
    meta: Option<RpcMeta<'a>>,
    #[serde(borrow)]
    transaction: RpcTransaction<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcMeta<'a> {
    /// Left unparsed: only whether it is null matters.
    #[serde(borrow)]
    err: Option<&'a RawValue>,
    /// Lamports per account key, before and after the transaction.
    #[serde(default)]
    pre_balances: Vec<u64>,
    #[serde(default)]
    post_balances: Vec<u64>,
    #[serde(default, borrow)]
    inner_instructions: Option<Vec<RpcInnerInstructions<'a>>>,
    #[serde(default, borrow)]
    pre_token_balances: Option<Vec<RpcTokenBalance<'a>>>,
    #[serde(default, borrow)]
    post_token_balances: Option<Vec<RpcTokenBalance<'a>>>,
}

#[derive(Deserialize)]
struct RpcInnerInstructions<'a> {
    #[serde(borrow)]
    instructions: Vec<RpcInstruction<'a>>,
}

#[derive(Deserialize)]
struct RpcTransaction<'a> {
    #[serde(borrow)]
    message: RpcMessage<'a>,
    #[serde(borrow)]
    signatures: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcMessage<'a> {
    /// Decoded only for transactions whose balances credit something, the
    /// one place account indexes are resolved.
    #[serde(borrow)]
    account_keys: &'a RawValue,
    #[serde(borrow)]
    instructions: Vec<RpcInstruction<'a>>,
}

#[derive(Deserialize)]
struct RpcAccountKey<'a> {
    #[serde(borrow)]
    pubkey: Cow<'a, str>,
    #[serde(default)]
    signer: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcInstruction<'a> {
    #[serde(borrow)]
    program_id: Option<Cow<'a, str>>,
    /// An object for parsed programs, a string for some (memo); decoded
    /// only for the programs deposits come from.
    #[serde(borrow)]
    parsed: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ParsedInstruction<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    info: ParsedInfo<'a>,
}

/// The fields of an instruction that creates a token account: SPL Token
/// `initializeAccount{,2,3}` name `owner`, the Associated Token Account
/// program's `create{,Idempotent}` name `wallet`.
#[derive(Deserialize)]
struct ParsedInfo<'a> {
    #[serde(borrow)]
    account: Option<Cow<'a, str>>,
    #[serde(borrow)]
    owner: Option<Cow<'a, str>>,
    #[serde(borrow)]
    wallet: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UiTokenAmount<'a> {
    #[serde(borrow)]
    amount: Cow<'a, str>,
}

/// A JSON-RPC answer.
#[derive(Deserialize)]
struct Envelope<T> {
    result: Option<T>,
    error: Option<RpcErrorBody>,
}

#[derive(Deserialize)]
struct RpcErrorBody {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcTokenBalance<'a> {
    account_index: u32,
    #[serde(borrow)]
    mint: Cow<'a, str>,
    #[serde(borrow)]
    owner: Option<Cow<'a, str>>,
    #[serde(borrow)]
    program_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ui_token_amount: UiTokenAmount<'a>,
}

#[derive(Deserialize)]
struct RpcBlockHash {
    blockhash: String,
}

impl SolanaClient {
    /// The blocks produced in `slots` at `confirmed`, in slot order, with
    /// the transfers to owners for which `wanted` holds (SPL only for
    /// `mints`).
    pub async fn blocks(
        &self,
        slots: RangeInclusive<u64>,
        mints: &[String],
        wanted: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<Vec<Block>> {
        let started = Instant::now();
        let produced = self
            .rpc
            .get_blocks_with_commitment(
                *slots.start(),
                Some(*slots.end()),
                CommitmentConfig::confirmed(),
            )
            .await
            .map_err(|e| classify("getBlocks", e))?;
        observe_rpc("getBlocks", started);
        futures::stream::iter(produced)
            .map(|slot| async move {
                let body = self.block_body(slot).await?;
                let block = decode_block(slot, &body)?;
                let mut found = Credits::default();
                for tx in &block.transactions {
                    credits(tx, mints, wanted, &mut found)?;
                }
                Ok::<_, Error>(Block {
                    slot,
                    transfers: found.transfers,
                    owner_changes: found.owner_changes,
                    blockhash: block.blockhash.into_owned(),
                    previous_blockhash: block.previous_blockhash.into_owned(),
                    time: block.block_time,
                })
            })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await
    }

    /// The raw JSON-RPC answer to `getBlock` for `slot` at `confirmed`
    /// (`jsonParsed`, full transactions): what [`Self::blocks`] decodes.
    pub async fn block_body(&self, slot: u64) -> Result<bytes::Bytes> {
        const METHOD: &str = "getBlock";
        let started = Instant::now();
        let request = json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": METHOD,
            "params": [slot, {
                "encoding": "jsonParsed",
                "transactionDetails": "full",
                "rewards": false,
                "maxSupportedTransactionVersion": 0,
                "commitment": "confirmed",
            }],
        });
        let response = self
            .http
            .post(&*self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.to_string())
            .send()
            .await
            .map_err(|e| Error::transport(CHAIN, METHOD, e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::transport(CHAIN, METHOD, e))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(Error::transport(
                CHAIN,
                METHOD,
                format!("HTTP {status}: {text}"),
            ));
        }
        observe_rpc(METHOD, started);
        Ok(body)
    }

    /// The block hash at each slot at `commitment`; `None` where the slot
    /// was skipped or has no block yet.
    pub async fn block_hashes(
        &self,
        slots: &[u64],
        commitment: CommitmentConfig,
    ) -> Result<Vec<Option<String>>> {
        let level = match commitment {
            c if c == CommitmentConfig::finalized() => "finalized",
            _ => "confirmed",
        };
        futures::stream::iter(slots.iter().copied())
            .map(|slot| async move {
                let answer: std::result::Result<Option<RpcBlockHash>, ClientError> = self
                    .rpc
                    .send(
                        RpcRequest::GetBlock,
                        json!([slot, {
                            "encoding": "json",
                            "transactionDetails": "none",
                            "rewards": false,
                            "commitment": level,
                        }]),
                    )
                    .await;
                match answer {
                    Ok(block) => Ok(block.map(|b| b.blockhash)),
                    Err(err) if no_block(&err) => Ok(None),
                    Err(err) => Err(classify("getBlock", err)),
                }
            })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await
    }
}

impl SolanaClient {
    /// The `confirmed` tip with its block hash.
    pub async fn confirmed_head(&self) -> Result<ChainHead> {
        for _ in 0..3 {
            let slot = self.slot(CommitmentConfig::confirmed()).await?;
            let hashes = self
                .block_hashes(&[slot], CommitmentConfig::confirmed())
                .await?;
            if let Some(hash) = hashes.into_iter().next().flatten() {
                return Ok(ChainHead {
                    height: slot,
                    hash: Some(hash),
                });
            }
        }
        Err(Error::inconsistent(
            CHAIN,
            "the confirmed slot has no block yet",
        ))
    }

    /// The last block at or below `slot` (within 1,000 slots), at `confirmed`.
    pub async fn block_at_or_below(&self, slot: u64) -> Result<Option<(u64, String)>> {
        let produced = self
            .rpc
            .get_blocks_with_commitment(
                slot.saturating_sub(1_000),
                Some(slot),
                CommitmentConfig::confirmed(),
            )
            .await
            .map_err(|e| classify("getBlocks", e))?;
        let Some(last) = produced.last().copied() else {
            return Ok(None);
        };
        let hash = self
            .block_hashes(&[last], CommitmentConfig::confirmed())
            .await?;
        Ok(hash.into_iter().next().flatten().map(|h| (last, h)))
    }
}

/// Decodes a `getBlock` answer for a slot `getBlocks` listed.
fn decode_block(slot: u64, body: &[u8]) -> Result<RpcBlock<'_>> {
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

fn no_block(err: &ClientError) -> bool {
    matches!(err.kind(), ErrorKind::RpcError(RpcError::RpcResponseError { code, .. }) if NO_BLOCK_CODES.contains(code))
}

fn observe_rpc(method: &'static str, started: Instant) {
    metrics::histogram!(crate::metrics::RPC_DURATION, "chain" => CHAIN.as_str(), "method" => method)
        .record(started.elapsed().as_secs_f64());
}

/// What a block's transactions credited to wanted owners.
#[derive(Default)]
struct Credits {
    transfers: Vec<Transfer>,
    owner_changes: Vec<OwnerChange>,
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
fn credits(
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

impl HeadSource for SolanaClient {
    fn chain(&self) -> Chain {
        CHAIN
    }

    async fn head(&self) -> Result<ChainHead> {
        let height = self.slot(CommitmentConfig::confirmed()).await?;
        Ok(ChainHead { height, hash: None })
    }
}

pub(crate) fn classify(method: &'static str, err: ClientError) -> Error {
    match err.kind() {
        ErrorKind::RpcError(RpcError::RpcResponseError { code, message, .. })
            if *code == CLEANED_UP =>
        {
            Error::HistoryUnavailable {
                chain: CHAIN,
                detail: message.clone(),
            }
        }
        ErrorKind::SerdeJson(e) => Error::malformed(CHAIN, method, e.to_string()),
        ErrorKind::RpcError(RpcError::ParseError(e)) => Error::malformed(CHAIN, method, e.clone()),
        _ => Error::transport(CHAIN, method, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINT: &str = "Mint111111111111111111111111111111111111111";
    const OWNER: &str = "Owner11111111111111111111111111111111111111";
    const SYSTEM: &str = "11111111111111111111111111111111";

    fn token_balance(index: u32, owner: &str, amount: u64) -> String {
        format!(
            r#"{{"accountIndex":{index},"mint":"{MINT}","owner":"{owner}","programId":"{TOKEN_PROGRAM}",
               "uiTokenAmount":{{"amount":"{amount}","decimals":6,"uiAmountString":"0"}}}}"#
        )
    }

    /// A block with a SOL transfer, an SPL `transferChecked` into a token
    /// account created in the same transaction, and a failed transfer.
    fn block_json(err: &str) -> String {
        let created = token_balance(2, OWNER, 2_000_000);
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"blockhash":"B","previousBlockhash":"A","blockTime":1700000000,"parentSlot":9,
            "transactions":[
             {{"meta":{{"err":null,"preBalances":[100,0,1],"postBalances":[90,5,1],"innerInstructions":[],"postTokenBalances":[]}},
               "transaction":{{"signatures":["S1"],"message":{{"accountKeys":[{{"pubkey":"Payer","signer":true}},{{"pubkey":"{OWNER}","signer":false}},{{"pubkey":"{SYSTEM}","signer":false}}],
               "instructions":[{{"program":"system","programId":"{SYSTEM}",
                 "parsed":{{"type":"transfer","info":{{"source":"Payer","destination":"{OWNER}","lamports":5}}}}}},
                 {{"programId":"MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr","program":"spl-memo","parsed":"hello"}}]}}}}}},
             {{"meta":{{"err":null,"preBalances":[100,50,0,1],"postBalances":[80,50,20,1],"preTokenBalances":[],"postTokenBalances":[{created}]}},
               "transaction":{{"signatures":["S2"],"message":{{"accountKeys":[{{"pubkey":"Payer","signer":true}},{{"pubkey":"PayerAta"}},{{"pubkey":"OwnerAta"}},{{"pubkey":"{OWNER}"}}],
               "instructions":[{{"program":"spl-associated-token-account","programId":"{ASSOCIATED_TOKEN_PROGRAM}","parsed":{{"type":"createIdempotent","info":{{"account":"OwnerAta","wallet":"{OWNER}","mint":"{MINT}"}}}}}},
                 {{"program":"spl-token","programId":"{TOKEN_PROGRAM}","parsed":{{"type":"transferChecked",
                 "info":{{"source":"PayerAta","destination":"OwnerAta","mint":"{MINT}","tokenAmount":{{"amount":"2000000","decimals":6}}}}}}}}]}}}}}},
             {{"meta":{{"err":{err},"preBalances":[100,0],"postBalances":[95,7]}},
               "transaction":{{"signatures":["S3"],"message":{{"accountKeys":[{{"pubkey":"Payer","signer":true}},{{"pubkey":"{OWNER}"}}],
               "instructions":[{{"program":"system","programId":"{SYSTEM}",
                 "parsed":{{"type":"transfer","info":{{"source":"Payer","destination":"{OWNER}","lamports":7}}}}}}]}}}}}}
            ]}}}}"#
        )
    }

    /// A block holding one successful transaction with these parts.
    fn one_tx(
        keys: &str,
        balances: (&str, &str),
        tokens: (&str, &str),
        instructions: &str,
    ) -> String {
        format!(
            r#"{{"result":{{"blockhash":"B","previousBlockhash":"A","blockTime":null,"transactions":[
             {{"meta":{{"err":null,"preBalances":{},"postBalances":{},"preTokenBalances":{},"postTokenBalances":{},"innerInstructions":[]}},
               "transaction":{{"signatures":["S"],"message":{{"accountKeys":{keys},"instructions":{instructions}}}}}}}]}}}}"#,
            balances.0, balances.1, tokens.0, tokens.1
        )
    }

    fn credits_of(body: &str, mints: &[String]) -> Credits {
        let block = decode_block(10, body.as_bytes()).expect("decodes");
        let wanted = |owner: &str| owner == OWNER;
        let mut found = Credits::default();
        for tx in &block.transactions {
            credits(tx, mints, &wanted, &mut found).expect("readable");
        }
        found
    }

    fn transfers_of(body: &str, mints: &[String]) -> Vec<(String, u32, Option<String>, u64)> {
        credits_of(body, mints)
            .transfers
            .into_iter()
            .map(|t| (t.signature, t.position, t.mint, t.amount))
            .collect()
    }

    #[test]
    fn successful_sol_and_allow_listed_token_transfers_are_found() {
        let body = block_json(r#"{"InstructionError":[0,{"Custom":1}]}"#);
        assert_eq!(
            transfers_of(&body, &[MINT.to_owned()]),
            vec![
                ("S1".into(), 1, None, 5),
                ("S2".into(), 2, Some(MINT.into()), 2_000_000),
            ],
            "the failed S3 is not a deposit"
        );
        assert_eq!(
            transfers_of(&body, &[]),
            vec![("S1".into(), 1, None, 5)],
            "a mint off the allow-list is not a deposit"
        );
    }

    #[test]
    fn a_token_account_handed_to_a_wanted_owner_credits_nothing() {
        // The attacker's account X moves tokens in and out, then is handed
        // to OWNER with SetAuthority: X ends empty, OWNER received nothing.
        let keys =
            r#"[{"pubkey":"Attacker","signer":true},{"pubkey":"X"},{"pubkey":"AttackerAta"}]"#;
        let handed = one_tx(
            keys,
            ("[100,2,2]", "[95,2,2]"),
            (
                &format!("[{}]", token_balance(1, "Attacker", 0)),
                &format!("[{}]", token_balance(1, OWNER, 0)),
            ),
            r#"[{"program":"spl-token","programId":"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA","parsed":{"type":"transfer","info":{"source":"AttackerAta","destination":"X","amount":"100"}}},
                {"program":"spl-token","programId":"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA","parsed":{"type":"setAuthority","info":{"account":"X","authorityType":"accountOwner","newAuthority":"Owner11111111111111111111111111111111111111"}}}]"#,
        );
        let found = credits_of(&handed, &[MINT.to_owned()]);
        assert!(found.transfers.is_empty(), "{:?}", found.transfers);
        assert_eq!(found.owner_changes.len(), 1);
        assert_eq!(
            found.owner_changes[0].previous_owner.as_deref(),
            Some("Attacker")
        );

        // Handed over holding tokens: still an account given, not a deposit.
        let full = handed.replace(&token_balance(1, OWNER, 0), &token_balance(1, OWNER, 500));
        let found = credits_of(&full, &[MINT.to_owned()]);
        assert!(found.transfers.is_empty(), "{:?}", found.transfers);

        // Created in the transaction for the attacker, then handed over.
        let created_for_attacker = one_tx(
            keys,
            ("[100,0,2]", "[90,2,2]"),
            ("[]", &format!("[{}]", token_balance(1, OWNER, 300))),
            r#"[{"program":"spl-token","programId":"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA","parsed":{"type":"initializeAccount3","info":{"account":"X","mint":"Mint111111111111111111111111111111111111111","owner":"Attacker"}}}]"#,
        );
        let found = credits_of(&created_for_attacker, &[MINT.to_owned()]);
        assert!(found.transfers.is_empty(), "{:?}", found.transfers);
        assert_eq!(found.owner_changes[0].previous_owner, None);

        // Created already owned by OWNER: what it holds arrived.
        let created_for_owner =
            created_for_attacker.replace(r#""owner":"Attacker""#, &format!(r#""owner":"{OWNER}""#));
        assert_eq!(
            transfers_of(&created_for_owner, &[MINT.to_owned()]),
            vec![("S".into(), 1, Some(MINT.into()), 300)]
        );
    }

    #[test]
    fn a_token_deposit_is_the_net_increase_over_the_transaction() {
        let keys =
            r#"[{"pubkey":"Payer","signer":true},{"pubkey":"OwnerAta"},{"pubkey":"PayerAta"}]"#;
        let body = one_tx(
            keys,
            ("[100,2,2]", "[95,2,2]"),
            (
                &format!("[{}]", token_balance(1, OWNER, 1_000)),
                &format!("[{}]", token_balance(1, OWNER, 1_250)),
            ),
            "[]",
        );
        assert_eq!(
            transfers_of(&body, &[MINT.to_owned()]),
            vec![("S".into(), 1, Some(MINT.into()), 250)]
        );
        let shrank = body.replace(
            &token_balance(1, OWNER, 1_250),
            &token_balance(1, OWNER, 900),
        );
        assert_eq!(transfers_of(&shrank, &[MINT.to_owned()]), vec![]);
    }

    #[test]
    fn lamports_count_however_they_arrived_but_not_for_a_signer() {
        // No system transfer at all: a closed account's rent went to OWNER.
        let keys = format!(
            r#"[{{"pubkey":"Payer","signer":true}},{{"pubkey":"Closed"}},{{"pubkey":"{OWNER}"}}]"#
        );
        let body = one_tx(
            &keys,
            ("[100,2039280,7]", "[95,0,2039287]"),
            ("[]", "[]"),
            "[]",
        );
        assert_eq!(
            transfers_of(&body, &[]),
            vec![("S".into(), 2, None, 2_039_280)]
        );
        let signed = body.replace(
            &format!(r#"{{"pubkey":"{OWNER}"}}"#),
            &format!(r#"{{"pubkey":"{OWNER}","signer":true}}"#),
        );
        assert_eq!(
            transfers_of(&signed, &[]),
            vec![],
            "Coffer's own transaction"
        );
    }

    #[test]
    fn errors_and_malformed_answers_are_told_apart() {
        let skipped =
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32007,"message":"Slot 10 was skipped"}}"#;
        assert_eq!(
            decode_block(10, skipped.as_bytes()).err().map(|e| e.kind()),
            Some("inconsistent")
        );
        let pruned = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"Block 10 cleaned up, does not exist on node. First available block: 20"}}"#;
        assert_eq!(
            decode_block(10, pruned.as_bytes()).err().map(|e| e.kind()),
            Some("history_unavailable")
        );
        let failing =
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Internal error"}}"#;
        assert_eq!(
            decode_block(10, failing.as_bytes()).err().map(|e| e.kind()),
            Some("transport")
        );
        for garbage in ["", "{", r#"{"result":{"blockhash":5}}"#, "<html>502</html>"] {
            let err = decode_block(10, garbage.as_bytes()).err();
            assert_eq!(
                err.as_ref().map(Error::kind),
                Some("malformed"),
                "{garbage}: {err:?}"
            );
        }
    }

    #[test]
    fn unreadable_account_keys_or_balances_are_malformed_not_skipped() {
        let wanted = |owner: &str| owner == OWNER;
        let body = block_json("null").replace(
            r#"[{"pubkey":"Payer","signer":true},{"pubkey":"PayerAta"},{"pubkey":"OwnerAta"},{"pubkey":"Owner11111111111111111111111111111111111111"}]"#,
            r#"[{"pubkey":7}]"#,
        );
        let block = decode_block(10, body.as_bytes()).expect("the block itself decodes");
        let err = credits(
            &block.transactions[1],
            &[MINT.to_owned()],
            &wanted,
            &mut Credits::default(),
        )
        .err();
        assert_eq!(err.as_ref().map(Error::kind), Some("malformed"), "{err:?}");

        let short = block_json("null").replace("[90,5,1]", "[90,5]");
        let block = decode_block(10, short.as_bytes()).expect("the block itself decodes");
        let err = credits(
            &block.transactions[0],
            &[],
            &wanted,
            &mut Credits::default(),
        )
        .err();
        assert_eq!(err.as_ref().map(Error::kind), Some("malformed"), "{err:?}");
    }
}

mod sender;

#[cfg(test)]
mod proptests;
