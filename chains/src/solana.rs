//! Solana nodes over JSON-RPC with the `solana-rpc-client` family.
//!
//! Deposit fetching lists the produced slots of a range with `getBlocks`
//! (skipped slots are normal and simply absent), then reads each block with
//! `getBlock` in `jsonParsed` encoding, decoded into lean structs that read
//! only what deposits need: the balance changes of successful transactions
//! (lamports per account, SPL Token amounts per token account with their
//! owners before and after) and the instructions that create token
//! accounts.
//!
//! Here: the client and the types it hands out. `wire`: the `getBlock`
//! answer as decoded; `credits`: the deposit rule applied to it; `sender`:
//! the transport under `RpcClient`.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use solana_commitment_config::CommitmentConfig;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::client_error::{Error as ClientError, ErrorKind};
use solana_rpc_client_api::request::{RpcError, RpcRequest};

use crate::{Chain, ChainHead, Error, HeadSource, Result};
use credits::{Credits, credits};
use wire::{RpcBlockHash, decode_block};

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
                let body = self.get_block(slot).await?;
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
    async fn get_block(&self, slot: u64) -> Result<bytes::Bytes> {
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

fn no_block(err: &ClientError) -> bool {
    matches!(err.kind(), ErrorKind::RpcError(RpcError::RpcResponseError { code, .. }) if NO_BLOCK_CODES.contains(code))
}

fn observe_rpc(method: &'static str, started: Instant) {
    metrics::histogram!(crate::metrics::RPC_DURATION, "chain" => CHAIN.as_str(), "method" => method)
        .record(started.elapsed().as_secs_f64());
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

mod credits;
mod sender;
#[cfg(any(test, feature = "devnet"))]
mod test_calls;
mod wire;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
