//! Ethereum nodes over JSON-RPC with `alloy`.
//!
//! Deposit fetching asks for a range of blocks in one batched request
//! (`eth_getBlockByNumber` with full transactions for each height, plus one
//! `eth_getLogs` for the allow-listed tokens' `Transfer` events), then one
//! batch of `eth_getBlockReceipts` by block hash for the blocks that hold a
//! candidate native transfer, because only a receipt tells whether the
//! transaction succeeded. Responses are decoded into lean structs that read
//! only the fields Coffer needs, so new transaction types never break
//! decoding.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

pub use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Bytes, U64, U256, b256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::RpcClient;
use alloy::transports::http::{Http, reqwest};
use alloy::transports::{RpcError, TransportErrorKind};
use serde::Deserialize;

use crate::error::excerpt;
use crate::{Chain, ChainHead, Error, HeadSource, Result};

mod send;
pub use send::{FeeSuggestion, GasCall, GasEstimate, SendOutcome, TxReceipt, classify_send_error};

const CHAIN: Chain = Chain::Ethereum;

#[derive(Clone)]
pub struct EthereumClient {
    provider: RootProvider,
    /// The same client as the provider's, for batched requests.
    rpc: RpcClient,
}

impl std::fmt::Debug for EthereumClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL (inside the transport) may carry an API key: never printed.
        f.debug_struct("EthereumClient")
            .field("url", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl EthereumClient {
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        let config_err = |detail: String| Error::Config {
            chain: CHAIN,
            detail,
        };
        let parsed: url::Url = url
            .parse()
            .map_err(|e| config_err(format!("rpc_url: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| config_err(format!("http client: {e}")))?;
        let transport = Http::with_client(http, parsed);
        let is_local = transport.guess_local();
        let rpc = RpcClient::new(transport, is_local);
        Ok(Self {
            provider: RootProvider::new(rpc.clone()),
            rpc,
        })
    }

    /// The underlying provider, for calls this client does not wrap yet.
    pub fn provider(&self) -> &RootProvider {
        &self.provider
    }

    /// The JSON-RPC client, for raw batched calls.
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// The head at a block tag. `None` when the node serves no block for the
    /// tag (`finalized` and `safe` before the chain is deep enough, or on
    /// nodes without them).
    pub async fn head_at(&self, tag: BlockNumberOrTag) -> Result<Option<ChainHead>> {
        let block = self
            .provider
            .get_block_by_number(tag)
            .await
            .map_err(|e| classify("eth_getBlockByNumber", e))?;
        Ok(block.map(|block| ChainHead {
            height: block.header.number,
            hash: Some(block.header.hash.to_string()),
        }))
    }
}

impl EthereumClient {
    /// The `finalized` head, `None` where the node serves none.
    pub async fn finalized(&self) -> Result<Option<ChainHead>> {
        self.head_at(BlockNumberOrTag::Finalized).await
    }

    /// `eth_chainId`: which network the node follows (1 is mainnet).
    pub async fn chain_id(&self) -> Result<u64> {
        const METHOD: &str = "eth_chainId";
        let started = Instant::now();
        let id = self
            .provider
            .get_chain_id()
            .await
            .map_err(|e| classify(METHOD, e))?;
        observe_rpc(METHOD, started);
        Ok(id)
    }
}

impl HeadSource for EthereumClient {
    fn chain(&self) -> Chain {
        CHAIN
    }

    async fn head(&self) -> Result<ChainHead> {
        self.head_at(BlockNumberOrTag::Latest)
            .await?
            .ok_or_else(|| {
                Error::malformed(
                    CHAIN,
                    "eth_getBlockByNumber",
                    "node returned no `latest` block",
                )
            })
    }
}

/// `keccak256("Transfer(address,address,uint256)")`, the ERC-20 event topic.
pub const TRANSFER_TOPIC: B256 =
    b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");

/// A block reduced to what deposit matching needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub number: u64,
    pub hash: B256,
    pub parent_hash: B256,
    /// Unix seconds.
    pub timestamp: u64,
    /// Successful value transfers to addresses the caller asked for, in
    /// block order.
    pub transfers: Vec<Transfer>,
}

/// Value arriving at an address: native ETH from a successful top-level
/// transaction, or an allow-listed token's `Transfer` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub tx_hash: B256,
    /// The sender: the transaction's `from` for native ETH, the event's
    /// `from` topic for a token.
    pub from: Address,
    /// The event's index in the block; `None` for native ETH.
    pub log_index: Option<u64>,
    /// The token contract; `None` for native ETH.
    pub token: Option<Address>,
    pub to: Address,
    pub amount: U256,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcHeader {
    number: U64,
    hash: B256,
    parent_hash: B256,
    timestamp: U64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcBlock {
    #[serde(flatten)]
    header: RpcHeader,
    transactions: Vec<RpcTransaction>,
}

#[derive(Deserialize)]
struct RpcTransaction {
    hash: B256,
    from: Address,
    /// `None` for contract creation.
    to: Option<Address>,
    value: U256,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcReceipt {
    transaction_hash: B256,
    /// `0x1` success, `0x0` failure; absent on pre-Byzantium receipts.
    status: Option<U64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RpcLog {
    address: Address,
    topics: Vec<B256>,
    data: Bytes,
    block_hash: Option<B256>,
    block_number: Option<U64>,
    transaction_hash: Option<B256>,
    log_index: Option<U64>,
    #[serde(default)]
    removed: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct LogFilter {
    from_block: U64,
    to_block: U64,
    address: Vec<Address>,
    topics: [B256; 1],
}

impl EthereumClient {
    /// Fetches `range` and returns its blocks in order with the transfers to
    /// addresses for which `wanted` holds: native ETH from successful
    /// transactions with value, and `Transfer` events of `tokens`. Fails
    /// with [`Error::Inconsistent`] if the chain moved under the fetch (a
    /// block missing, or logs from another branch); callers retry.
    pub async fn blocks(
        &self,
        range: RangeInclusive<u64>,
        tokens: &[Address],
        wanted: &(dyn Fn(&Address) -> bool + Send + Sync),
    ) -> Result<Vec<Block>> {
        const METHOD: &str = "eth_getBlockByNumber";
        let started = Instant::now();
        let mut batch = self.rpc.new_batch();
        let mut waiters = Vec::with_capacity(range.clone().count());
        for number in range.clone() {
            let waiter = batch
                .add_call::<_, Option<Box<serde_json::value::RawValue>>>(
                    METHOD,
                    &(U64::from(number), true),
                )
                .map_err(|e| Error::transport(CHAIN, METHOD, e))?;
            waiters.push((number, waiter));
        }
        let logs_waiter = if tokens.is_empty() {
            None
        } else {
            let filter = LogFilter {
                from_block: U64::from(*range.start()),
                to_block: U64::from(*range.end()),
                address: tokens.to_vec(),
                topics: [TRANSFER_TOPIC],
            };
            Some(
                batch
                    .add_call::<_, Box<serde_json::value::RawValue>>("eth_getLogs", &(filter,))
                    .map_err(|e| Error::transport(CHAIN, "eth_getLogs", e))?,
            )
        };
        batch.send().await.map_err(|e| classify(METHOD, e))?;
        let mut blocks = Vec::with_capacity(waiters.len());
        for (number, waiter) in waiters {
            let raw = waiter
                .await
                .map_err(|e| classify(METHOD, e))?
                .ok_or_else(|| Error::inconsistent(CHAIN, format!("block {number} is gone")))?;
            let block: RpcBlock = decode(METHOD, &raw)?;
            if block.header.number.to::<u64>() != number {
                return Err(Error::malformed(
                    CHAIN,
                    METHOD,
                    format!("asked for block {number}, got {}", block.header.number),
                ));
            }
            blocks.push(block);
        }
        let logs: Vec<RpcLog> = match logs_waiter {
            Some(waiter) => decode(
                "eth_getLogs",
                &waiter.await.map_err(|e| classify("eth_getLogs", e))?,
            )?,
            None => Vec::new(),
        };
        observe_rpc("eth_getBlockByNumber", started);

        let statuses = self.receipt_statuses(&blocks, wanted).await?;
        let mut out: Vec<Block> = blocks
            .into_iter()
            .map(|block| {
                let transfers = block
                    .transactions
                    .iter()
                    .filter(|tx| !tx.value.is_zero())
                    .filter_map(|tx| Some((tx, tx.to.filter(wanted)?)))
                    .filter(|(tx, _)| statuses.get(&tx.hash) == Some(&true))
                    .map(|(tx, to)| Transfer {
                        tx_hash: tx.hash,
                        from: tx.from,
                        log_index: None,
                        token: None,
                        to,
                        amount: tx.value,
                    })
                    .collect();
                Block {
                    number: block.header.number.to(),
                    hash: block.header.hash,
                    parent_hash: block.header.parent_hash,
                    timestamp: block.header.timestamp.to(),
                    transfers,
                }
            })
            .collect();
        let first = *range.start();
        for log in logs {
            let Some(transfer) = token_transfer(&log, tokens)? else {
                continue;
            };
            if !wanted(&transfer.to) {
                continue;
            }
            let number = log
                .block_number
                .ok_or_else(|| Error::malformed(CHAIN, "eth_getLogs", "log without blockNumber"))?
                .to::<u64>();
            let block = number
                .checked_sub(first)
                .and_then(|i| out.get_mut(usize::try_from(i).ok()?))
                .ok_or_else(|| {
                    Error::malformed(
                        CHAIN,
                        "eth_getLogs",
                        format!("log from block {number} outside the range"),
                    )
                })?;
            if log.block_hash != Some(block.hash) {
                return Err(Error::inconsistent(
                    CHAIN,
                    format!("logs of block {number} come from another branch"),
                ));
            }
            block.transfers.push(transfer);
        }
        Ok(out)
    }

    /// Receipt status of each candidate native transfer (value to a wanted
    /// address), from one batch of `eth_getBlockReceipts` by block hash.
    async fn receipt_statuses(
        &self,
        blocks: &[RpcBlock],
        wanted: &(dyn Fn(&Address) -> bool + Send + Sync),
    ) -> Result<HashMap<B256, bool>> {
        const METHOD: &str = "eth_getBlockReceipts";
        let candidates: Vec<&RpcBlock> = blocks
            .iter()
            .filter(|block| {
                block
                    .transactions
                    .iter()
                    .any(|tx| !tx.value.is_zero() && tx.to.as_ref().is_some_and(wanted))
            })
            .collect();
        let mut statuses = HashMap::new();
        if candidates.is_empty() {
            return Ok(statuses);
        }
        let started = Instant::now();
        let mut batch = self.rpc.new_batch();
        let mut waiters = Vec::with_capacity(candidates.len());
        for block in &candidates {
            let waiter = batch
                .add_call::<_, Option<Box<serde_json::value::RawValue>>>(
                    METHOD,
                    &(block.header.hash,),
                )
                .map_err(|e| Error::transport(CHAIN, METHOD, e))?;
            waiters.push((block, waiter));
        }
        batch.send().await.map_err(|e| classify(METHOD, e))?;
        for (block, waiter) in waiters {
            let number = block.header.number;
            let raw = waiter
                .await
                .map_err(|e| classify(METHOD, e))?
                .ok_or_else(|| {
                    Error::inconsistent(CHAIN, format!("receipts of block {number} are gone"))
                })?;
            let receipts: Vec<RpcReceipt> = decode(METHOD, &raw)?;
            if receipts.len() != block.transactions.len() {
                return Err(Error::malformed(
                    CHAIN,
                    METHOD,
                    format!(
                        "block {number} has {} transactions but {} receipts",
                        block.transactions.len(),
                        receipts.len()
                    ),
                ));
            }
            for receipt in receipts {
                let status = receipt.status.ok_or_else(|| {
                    Error::malformed(
                        CHAIN,
                        METHOD,
                        format!("receipt {} has no status", receipt.transaction_hash),
                    )
                })?;
                statuses.insert(receipt.transaction_hash, status == U64::from(1));
            }
        }
        // A candidate without a receipt would otherwise read as failed.
        for block in &candidates {
            for tx in &block.transactions {
                if !statuses.contains_key(&tx.hash) {
                    return Err(Error::malformed(
                        CHAIN,
                        METHOD,
                        format!("no receipt for transaction {}", tx.hash),
                    ));
                }
            }
        }
        observe_rpc(METHOD, started);
        Ok(statuses)
    }

    /// The canonical block hash at each height (`None` above the tip), in
    /// one batch; reorg handling walks back with it.
    pub async fn block_hashes(&self, heights: &[u64]) -> Result<Vec<Option<B256>>> {
        const METHOD: &str = "eth_getBlockByNumber";
        let started = Instant::now();
        let mut batch = self.rpc.new_batch();
        let mut waiters = Vec::with_capacity(heights.len());
        for &number in heights {
            waiters.push(
                batch
                    .add_call::<_, Option<Box<serde_json::value::RawValue>>>(
                        METHOD,
                        &(U64::from(number), false),
                    )
                    .map_err(|e| Error::transport(CHAIN, METHOD, e))?,
            );
        }
        batch.send().await.map_err(|e| classify(METHOD, e))?;
        let mut hashes = Vec::with_capacity(waiters.len());
        for waiter in waiters {
            let raw = waiter.await.map_err(|e| classify(METHOD, e))?;
            hashes.push(match raw {
                Some(raw) => Some(decode::<RpcHeader>(METHOD, raw.as_ref())?.hash),
                None => None,
            });
        }
        observe_rpc(METHOD, started);
        Ok(hashes)
    }
}

/// Decodes an ERC-20 `Transfer` log of an allow-listed token. Logs of other
/// contracts or shapes are skipped (`Ok(None)`): an allow-listed token that
/// emits a malformed `Transfer` is not paying anyone.
fn token_transfer(log: &RpcLog, tokens: &[Address]) -> Result<Option<Transfer>> {
    if log.removed
        || !tokens.contains(&log.address)
        || log.topics.len() != 3
        || log.topics[0] != TRANSFER_TOPIC
        || log.data.len() != 32
    {
        return Ok(None);
    }
    let missing =
        |field: &str| Error::malformed(CHAIN, "eth_getLogs", format!("log without {field}"));
    let amount = U256::from_be_slice(&log.data);
    if amount.is_zero() {
        return Ok(None);
    }
    Ok(Some(Transfer {
        tx_hash: log
            .transaction_hash
            .ok_or_else(|| missing("transactionHash"))?,
        from: Address::from_word(log.topics[1]),
        log_index: Some(log.log_index.ok_or_else(|| missing("logIndex"))?.to()),
        token: Some(log.address),
        to: Address::from_word(log.topics[2]),
        amount,
    }))
}

fn decode<T: serde::de::DeserializeOwned>(
    method: &'static str,
    raw: &serde_json::value::RawValue,
) -> Result<T> {
    serde_json::from_str(raw.get()).map_err(|e| {
        let snippet = excerpt(raw.get());
        Error::malformed(CHAIN, method, format!("{e}; response starts: {snippet}"))
    })
}

fn observe_rpc(method: &'static str, started: Instant) {
    metrics::histogram!(crate::metrics::RPC_DURATION, "chain" => CHAIN.as_str(), "method" => method)
        .record(started.elapsed().as_secs_f64());
}

fn classify(method: &'static str, err: RpcError<TransportErrorKind>) -> Error {
    match err {
        RpcError::DeserError { err, text } => {
            let snippet = excerpt(&text);
            Error::malformed(CHAIN, method, format!("{err}; response starts: {snippet}"))
        }
        RpcError::NullResp => Error::malformed(CHAIN, method, "null response"),
        other => Error::transport(CHAIN, method, other),
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<serde_json::value::RawValue> {
        serde_json::value::RawValue::from_string(text.to_owned()).expect("json")
    }

    fn log(topics: Vec<B256>, data: &str) -> RpcLog {
        serde_json::from_value(serde_json::json!({
            "address": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
            "topics": topics,
            "data": data,
            "blockHash": B256::repeat_byte(1),
            "blockNumber": "0x5",
            "transactionHash": B256::repeat_byte(2),
            "logIndex": "0x3",
        }))
        .expect("log")
    }

    #[test]
    fn malformed_blocks_are_errors_naming_the_method() {
        let err = decode::<RpcBlock>("eth_getBlockByNumber", &raw(r#"{"number":"0x1"}"#))
            .err()
            .map(|e| (e.kind(), e.to_string()));
        let (kind, message) = err.expect("an error");
        assert_eq!(kind, "malformed");
        assert!(
            message.contains("eth_getBlockByNumber") && message.contains("missing field"),
            "{message}"
        );
        let err = decode::<RpcBlock>(
            "eth_getBlockByNumber",
            &raw(
                r#"{"number":"zz","hash":"0x00","parentHash":"0x00","timestamp":"0x0","transactions":[]}"#,
            ),
        );
        assert!(matches!(err, Err(Error::Malformed { .. })));
    }

    #[test]
    fn only_well_formed_transfer_events_of_allow_listed_tokens_count() {
        let token: Address = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
            .parse()
            .expect("address");
        let to = Address::repeat_byte(0x42);
        let from = Address::repeat_byte(0x41).into_word();
        let amount = format!("0x{:064x}", 7);
        let good = log(vec![TRANSFER_TOPIC, from, to.into_word()], &amount);
        let transfer = token_transfer(&good, &[token])
            .expect("ok")
            .expect("a transfer");
        assert_eq!(
            (
                transfer.from,
                transfer.to,
                transfer.amount,
                transfer.log_index
            ),
            (Address::from_word(from), to, U256::from(7), Some(3))
        );
        assert_eq!(
            token_transfer(&good, &[]).expect("ok"),
            None,
            "not allow-listed"
        );
        // ERC-721 shape: the token id is a fourth topic, data is empty.
        let nft = log(
            vec![TRANSFER_TOPIC, from, to.into_word(), B256::repeat_byte(9)],
            "0x",
        );
        assert_eq!(token_transfer(&nft, &[token]).expect("ok"), None);
        let zero = log(
            vec![TRANSFER_TOPIC, from, to.into_word()],
            &format!("0x{:064x}", 0),
        );
        assert_eq!(token_transfer(&zero, &[token]).expect("ok"), None);
        let mut removed = log(vec![TRANSFER_TOPIC, from, to.into_word()], &amount);
        removed.removed = true;
        assert_eq!(token_transfer(&removed, &[token]).expect("ok"), None);
    }
}
