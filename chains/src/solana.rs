//! Solana nodes over JSON-RPC with the `solana-rpc-client` family.
//!
//! Deposit fetching lists the produced slots of a range with `getBlocks`
//! (skipped slots are normal and simply absent), then reads each block with
//! `getBlock` in `jsonParsed` encoding, decoded into lean structs that read
//! only what deposits need: system-program transfers and SPL Token
//! `transfer`/`transferChecked` instructions, top-level and inner, of
//! successful transactions.

use std::borrow::Cow;
use std::collections::HashMap;
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
        f.debug_struct("SolanaClient")
            .field("url", &self.rpc.url())
            .finish()
    }
}

impl SolanaClient {
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        url::Url::parse(url).map_err(|e| Error::Config {
            chain: CHAIN,
            detail: format!("rpc url `{url}`: {e}"),
        })?;
        let rpc = RpcClient::new_with_timeout_and_commitment(
            url.to_owned(),
            timeout,
            CommitmentConfig::confirmed(),
        );
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config {
                chain: CHAIN,
                detail: format!("http client: {e}"),
            })?;
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
}

/// The SPL Token program. Token-2022 transfers are not deposits yet.
pub const TOKEN_PROGRAM: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
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
}

/// Value arriving at a wanted owner in a successful transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub signature: String,
    /// The instruction: its index for a top-level one, and
    /// `1000 * (outer + 1) + inner` for an inner (CPI) one.
    pub position: u32,
    /// The wallet address credited: the SOL recipient, or the owner of the
    /// receiving token account.
    pub owner: String,
    /// The SPL mint; `None` for SOL.
    pub mint: Option<String>,
    /// Lamports or token base units.
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
    #[serde(default, borrow)]
    inner_instructions: Option<Vec<RpcInnerInstructions<'a>>>,
    #[serde(default, borrow)]
    post_token_balances: Option<Vec<RpcTokenBalance<'a>>>,
}

#[derive(Deserialize)]
struct RpcInnerInstructions<'a> {
    index: u32,
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
    /// Decoded only for transactions with token balances, the one place
    /// account indexes are resolved.
    #[serde(borrow)]
    account_keys: &'a RawValue,
    #[serde(borrow)]
    instructions: Vec<RpcInstruction<'a>>,
}

#[derive(Deserialize)]
struct RpcAccountKey<'a> {
    #[serde(borrow)]
    pubkey: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcInstruction<'a> {
    #[serde(borrow)]
    program: Option<Cow<'a, str>>,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ParsedInfo<'a> {
    #[serde(borrow)]
    destination: Option<Cow<'a, str>>,
    lamports: Option<u64>,
    #[serde(borrow)]
    amount: Option<Cow<'a, str>>,
    #[serde(borrow)]
    mint: Option<Cow<'a, str>>,
    #[serde(borrow)]
    token_amount: Option<ParsedTokenAmount<'a>>,
}

#[derive(Deserialize)]
struct ParsedTokenAmount<'a> {
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
                let mut found = Vec::new();
                for tx in &block.transactions {
                    found.extend(transfers(tx, mints, wanted)?);
                }
                Ok::<_, Error>(Block {
                    slot,
                    transfers: found,
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

/// The deposits-relevant transfers of one transaction; none if it failed.
fn transfers(
    tx: &RpcTransactionWithMeta<'_>,
    mints: &[String],
    wanted: &(dyn Fn(&str) -> bool + Send + Sync),
) -> Result<Vec<Transfer>> {
    let Some(meta) = &tx.meta else {
        return Ok(Vec::new());
    };
    if meta.err.is_some() {
        return Ok(Vec::new());
    }
    let Some(signature) = tx.transaction.signatures.first() else {
        return Ok(Vec::new());
    };
    // Token accounts of this transaction by address: (mint, owner), from
    // the balances after it ran, so an account it created is known too.
    let balances: Vec<&RpcTokenBalance<'_>> = meta
        .post_token_balances
        .iter()
        .flatten()
        .filter(|b| b.program_id.as_deref().is_none_or(|p| p == TOKEN_PROGRAM))
        .collect();
    let keys: Vec<RpcAccountKey<'_>> = if balances.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(tx.transaction.message.account_keys.get()).map_err(|e| {
            Error::malformed(
                CHAIN,
                "getBlock",
                format!("accountKeys of {signature}: {e}"),
            )
        })?
    };
    let token_accounts: HashMap<&str, (&str, &str)> = balances
        .iter()
        .filter_map(|b| {
            let key = keys.get(b.account_index as usize)?;
            Some((&*key.pubkey, (&*b.mint, b.owner.as_deref()?)))
        })
        .collect();
    let top = tx
        .transaction
        .message
        .instructions
        .iter()
        .enumerate()
        .map(|(i, ix)| (i as u32, ix));
    let inner = meta.inner_instructions.iter().flatten().flat_map(|group| {
        group
            .instructions
            .iter()
            .enumerate()
            .map(move |(j, ix)| (1_000 * (group.index + 1) + j as u32, ix))
    });
    Ok(top
        .chain(inner)
        .filter_map(|(position, ix)| {
            let (owner, mint, amount) = match ix.program.as_deref() {
                Some("system") => system_transfer(ix)?,
                Some("spl-token") if ix.program_id.as_deref() == Some(TOKEN_PROGRAM) => {
                    token_transfer(ix, &token_accounts)?
                }
                _ => return None,
            };
            if let Some(mint) = mint
                && !mints.iter().any(|m| m == mint)
            {
                return None;
            }
            if amount == 0 || !wanted(&owner) {
                return None;
            }
            Some(Transfer {
                signature: signature.clone().into_owned(),
                position,
                owner: owner.into_owned(),
                mint: mint.map(str::to_owned),
                amount,
            })
        })
        .collect())
}

/// A credit found in an instruction: owner, SPL mint (`None` for SOL), amount.
type Credit<'a> = (Cow<'a, str>, Option<&'a str>, u64);

/// The instruction's parsed form, if it is an object of the usual shape.
fn parsed<'a>(ix: &RpcInstruction<'a>) -> Option<ParsedInstruction<'a>> {
    serde_json::from_str(ix.parsed?.get()).ok()
}

fn system_transfer<'a>(ix: &RpcInstruction<'a>) -> Option<Credit<'a>> {
    let parsed = parsed(ix)?;
    if !matches!(&*parsed.kind, "transfer" | "transferWithSeed") {
        return None;
    }
    Some((parsed.info.destination?, None, parsed.info.lamports?))
}

fn token_transfer<'a>(
    ix: &RpcInstruction<'a>,
    accounts: &HashMap<&str, (&'a str, &'a str)>,
) -> Option<Credit<'a>> {
    let parsed = parsed(ix)?;
    let info = parsed.info;
    let amount = match &*parsed.kind {
        "transfer" => info.amount?,
        "transferChecked" => info.token_amount?.amount,
        _ => return None,
    };
    let (mint, owner) = *accounts.get(&*info.destination?)?;
    if let Some(named) = &info.mint
        && named != mint
    {
        return None;
    }
    Some((Cow::Borrowed(owner), Some(mint), amount.parse().ok()?))
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

    /// A block with a SOL transfer, an SPL `transferChecked` into a token
    /// account created in the same transaction, and a failed transfer.
    fn block_json(err: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"blockhash":"B","previousBlockhash":"A","blockTime":1700000000,"parentSlot":9,
            "transactions":[
             {{"meta":{{"err":null,"innerInstructions":[],"postTokenBalances":[]}},
               "transaction":{{"signatures":["S1"],"message":{{"accountKeys":[{{"pubkey":"Payer"}},{{"pubkey":"{OWNER}"}}],
               "instructions":[{{"program":"system","programId":"11111111111111111111111111111111",
                 "parsed":{{"type":"transfer","info":{{"source":"Payer","destination":"{OWNER}","lamports":5}}}}}},
                 {{"programId":"MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr","program":"spl-memo","parsed":"hello"}}]}}}}}},
             {{"meta":{{"err":null,"postTokenBalances":[{{"accountIndex":2,"mint":"{MINT}","owner":"{OWNER}","programId":"{TOKEN_PROGRAM}"}}]}},
               "transaction":{{"signatures":["S2"],"message":{{"accountKeys":[{{"pubkey":"Payer"}},{{"pubkey":"PayerAta"}},{{"pubkey":"OwnerAta"}}],
               "instructions":[{{"program":"spl-associated-token-account","programId":"ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL","parsed":{{"type":"createIdempotent","info":{{}}}}}},
                 {{"program":"spl-token","programId":"{TOKEN_PROGRAM}","parsed":{{"type":"transferChecked",
                 "info":{{"source":"PayerAta","destination":"OwnerAta","mint":"{MINT}","tokenAmount":{{"amount":"2000000","decimals":6}}}}}}}}]}}}}}},
             {{"meta":{{"err":{err}}},
               "transaction":{{"signatures":["S3"],"message":{{"accountKeys":[{{"pubkey":"Payer"}},{{"pubkey":"{OWNER}"}}],
               "instructions":[{{"program":"system","programId":"11111111111111111111111111111111",
                 "parsed":{{"type":"transfer","info":{{"source":"Payer","destination":"{OWNER}","lamports":7}}}}}}]}}}}}}
            ]}}}}"#
        )
    }

    fn transfers_of(body: &str, mints: &[String]) -> Vec<(String, u32, Option<String>, u64)> {
        let block = decode_block(10, body.as_bytes()).expect("decodes");
        let wanted = |owner: &str| owner == OWNER;
        block
            .transactions
            .iter()
            .flat_map(|tx| transfers(tx, mints, &wanted).expect("readable"))
            .map(|t| (t.signature, t.position, t.mint, t.amount))
            .collect()
    }

    #[test]
    fn successful_sol_and_allow_listed_token_transfers_are_found() {
        let body = block_json(r#"{"InstructionError":[0,{"Custom":1}]}"#);
        assert_eq!(
            transfers_of(&body, &[MINT.to_owned()]),
            vec![
                ("S1".into(), 0, None, 5),
                ("S2".into(), 1, Some(MINT.into()), 2_000_000),
            ],
            "the failed S3 is not a deposit"
        );
        assert_eq!(
            transfers_of(&body, &[]),
            vec![("S1".into(), 0, None, 5)],
            "a mint off the allow-list is not a deposit"
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
    fn unreadable_account_keys_of_a_token_transfer_are_malformed_not_skipped() {
        let body = block_json("null").replace(
            r#"[{"pubkey":"Payer"},{"pubkey":"PayerAta"},{"pubkey":"OwnerAta"}]"#,
            r#"[{"pubkey":7}]"#,
        );
        let block = decode_block(10, body.as_bytes()).expect("the block itself decodes");
        let wanted = |owner: &str| owner == OWNER;
        let err = transfers(&block.transactions[1], &[MINT.to_owned()], &wanted).err();
        assert_eq!(err.as_ref().map(Error::kind), Some("malformed"), "{err:?}");
    }
}
