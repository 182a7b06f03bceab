//! Bitcoin nodes over JSON-RPC, restricted to calls both Bitcoin Core and
//! btcd serve (`getblockcount`, `getblockhash`, `getblock <hash> 0`,
//! `getbestblockhash`, `sendrawtransaction`, `testmempoolaccept`; fees
//! from `estimatesmartfee`, or btcd's `estimatefee`; tests also use
//! `getrawmempool` and `getrawtransaction`, in `test_calls`). Blocks travel
//! as raw hex and are decoded here with the `bitcoin` crate, an order of
//! magnitude cheaper than verbose JSON.
//!
//! `bitcoincore-rpc` is blocking and each client holds one HTTP connection,
//! so the client keeps a few and runs every call on tokio's blocking pool;
//! catch-up fetches that many blocks at once.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bitcoin::{Block, BlockHash, Transaction, Txid};
use bitcoincore_rpc::jsonrpc::{self, simple_http};
use bitcoincore_rpc::{RpcApi, jsonrpc::serde_json::Value};
use futures::{StreamExt, TryStreamExt};

use crate::{Chain, ChainHead, Error, HeadSource, Result};

const CHAIN: Chain = Chain::Bitcoin;

/// How the client authenticates to the node.
#[derive(Clone)]
pub enum BitcoinAuth {
    None,
    UserPass {
        user: String,
        password: String,
    },
    /// Bitcoin Core's `.cookie` file, read on every (re)connect.
    CookieFile(PathBuf),
}

impl std::fmt::Debug for BitcoinAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BitcoinAuth::None => f.write_str("None"),
            BitcoinAuth::UserPass { user, .. } => {
                write!(f, "UserPass {{ user: {user:?}, password: [REDACTED] }}")
            }
            BitcoinAuth::CookieFile(path) => write!(f, "CookieFile({path:?})"),
        }
    }
}

/// Connections per client: the catch-up concurrency.
pub const CONNECTIONS: usize = 4;

#[derive(Clone)]
pub struct BitcoinClient {
    rpcs: Arc<[Arc<bitcoincore_rpc::Client>]>,
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for BitcoinClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry an API key or a password: never printed.
        f.debug_struct("BitcoinClient")
            .field("url", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl BitcoinClient {
    pub fn new(url: &str, auth: BitcoinAuth, timeout: Duration) -> Result<Self> {
        let config_err = |detail: String| Error::Config {
            chain: CHAIN,
            detail,
        };
        let mut builder = simple_http::Builder::new()
            .url(url)
            .map_err(|e| {
                config_err(format!(
                    "rpc_url: {}",
                    crate::error::redact_urls(&e.to_string())
                ))
            })?
            .timeout(timeout);
        builder = match auth {
            BitcoinAuth::None => builder,
            BitcoinAuth::UserPass { user, password } => builder.auth(user, Some(password)),
            BitcoinAuth::CookieFile(path) => {
                let cookie = std::fs::read_to_string(&path)
                    .map_err(|e| config_err(format!("cookie file {}: {e}", path.display())))?;
                builder.cookie_auth(cookie.trim())
            }
        };
        let rpcs: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let client = jsonrpc::Client::with_transport(builder.clone().build());
                Arc::new(bitcoincore_rpc::Client::from_jsonrpc(client))
            })
            .collect();
        Ok(Self {
            rpcs: rpcs.into(),
            next: Arc::default(),
        })
    }

    async fn blocking<T, F>(&self, method: &'static str, call: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&bitcoincore_rpc::Client) -> bitcoincore_rpc::Result<T> + Send + 'static,
    {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.rpcs.len();
        let rpc = Arc::clone(&self.rpcs[slot]);
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || call(&rpc))
            .await
            .map_err(|e| Error::transport(CHAIN, method, format!("rpc task failed: {e}")))?
            .map_err(|e| classify(method, e));
        metrics::histogram!(crate::metrics::RPC_DURATION, "chain" => CHAIN.as_str(), "method" => method)
            .record(started.elapsed().as_secs_f64());
        result
    }

    pub async fn block_count(&self) -> Result<u64> {
        self.blocking("getblockcount", |rpc| rpc.get_block_count())
            .await
    }

    pub async fn block_hash(&self, height: u64) -> Result<BlockHash> {
        self.blocking("getblockhash", move |rpc| rpc.get_block_hash(height))
            .await
    }

    pub async fn best_block_hash(&self) -> Result<BlockHash> {
        self.blocking("getbestblockhash", |rpc| rpc.get_best_block_hash())
            .await
    }

    /// The node's network as `getblockchaininfo` names it: Bitcoin Core says
    /// `main`, `test`, `testnet4`, `signet` or `regtest`; btcd `mainnet`,
    /// `testnet3`, `signet`, `regtest` or `simnet`.
    pub async fn network_name(&self) -> Result<String> {
        const METHOD: &str = "getblockchaininfo";
        let info: Value = self.blocking(METHOD, |rpc| rpc.call(METHOD, &[])).await?;
        info.get("chain")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Error::malformed(CHAIN, METHOD, "no string `chain` in the answer"))
    }

    /// `getblock <hash> 0`: the raw serialized block, decoded locally.
    pub async fn block(&self, hash: BlockHash) -> Result<Block> {
        let hex = self
            .blocking("getblock", move |rpc| rpc.get_block_hex(&hash))
            .await?;
        decode_block_hex(&hex)
    }

    /// `sendrawtransaction <hex>`.
    pub async fn send_raw_transaction(&self, tx: &Transaction) -> Result<Txid> {
        let hex = bitcoin::consensus::encode::serialize_hex(tx);
        self.blocking("sendrawtransaction", move |rpc| {
            rpc.send_raw_transaction(hex.as_str())
        })
        .await
    }

    /// The blocks at `heights` in order, each as (hash, block), fetched over
    /// all connections at once. Fails with [`Error::Inconsistent`] when a
    /// height is past the tip or a block's hash differs from the one asked
    /// for: the chain moved, and the caller retries.
    pub async fn blocks(&self, heights: RangeInclusive<u64>) -> Result<Vec<(BlockHash, Block)>> {
        futures::stream::iter(heights)
            .map(|height| {
                let client = self.clone();
                async move {
                    let hash = client.block_hash(height).await.map_err(|e| {
                        if is_out_of_range(&e) {
                            Error::inconsistent(CHAIN, format!("no block at height {height}"))
                        } else {
                            e
                        }
                    })?;
                    let block = client.block(hash).await?;
                    if block.block_hash() != hash {
                        return Err(Error::malformed(
                            CHAIN,
                            "getblock",
                            format!("asked for block {hash}, got {}", block.block_hash()),
                        ));
                    }
                    Ok((hash, block))
                }
            })
            .buffered(self.rpcs.len())
            .try_collect()
            .await
    }

    /// `method`'s answer, or the node's JSON-RPC error as an answer of its
    /// own: for calls a node may not serve, or refuses as a verdict.
    async fn answer(&self, method: &'static str, params: Vec<Value>) -> Result<Answer> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.rpcs.len();
        let rpc = Arc::clone(&self.rpcs[slot]);
        let outcome = tokio::task::spawn_blocking(move || rpc.call::<Value>(method, &params))
            .await
            .map_err(|e| Error::transport(CHAIN, method, format!("rpc task failed: {e}")))?;
        match outcome {
            Ok(value) => Ok(Answer::Value(value)),
            Err(bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Rpc(e))) => Ok(Answer::Refused {
                code: e.code,
                message: e.message,
            }),
            Err(e) => Err(classify(method, e)),
        }
    }

    /// The node's fee rate for confirmation within `blocks`, in sat/vB
    /// rounded up; `None` when it has no estimate. Bitcoin Core answers
    /// `estimatesmartfee`; btcd lacks it (method not found) and answers
    /// `estimatefee`, with -1 or an error until it has seen enough blocks.
    pub async fn fee_rate_estimate(&self, blocks: u16) -> Result<Option<u64>> {
        const SMART: &str = "estimatesmartfee";
        const PLAIN: &str = "estimatefee";
        match self.answer(SMART, vec![Value::from(blocks)]).await? {
            Answer::Value(answer) => match answer.get("feerate") {
                None => Ok(None),
                Some(rate) => btc_per_kvb_to_sat_vb(SMART, rate).map(Some),
            },
            Answer::Refused { code: -32601, .. } => {
                match self.answer(PLAIN, vec![Value::from(blocks)]).await? {
                    Answer::Value(rate) if rate.as_f64().is_some_and(|r| r > 0.0) => {
                        btc_per_kvb_to_sat_vb(PLAIN, &rate).map(Some)
                    }
                    Answer::Value(_) | Answer::Refused { .. } => Ok(None),
                }
            }
            Answer::Refused { code, message } => Err(Error::transport(
                CHAIN,
                SMART,
                format!("node error {code}: {message}"),
            )),
        }
    }

    /// `testmempoolaccept`: whether the node's mempool would take `tx`
    /// now, and if not, its reason (`Err` when the node gives no verdict).
    pub async fn test_mempool_accept(&self, tx: &Transaction) -> Result<MempoolVerdict> {
        const METHOD: &str = "testmempoolaccept";
        let hex = bitcoin::consensus::encode::serialize_hex(tx);
        // The second parameter (btcd requires it) caps the fee rate at
        // Bitcoin Core's default, 0.10 BTC/kvB.
        let params = vec![Value::from(vec![hex]), Value::from(0.10)];
        match self.answer(METHOD, params).await? {
            Answer::Value(answer) => {
                let verdict = answer
                    .as_array()
                    .and_then(|list| list.first())
                    .ok_or_else(|| Error::malformed(CHAIN, METHOD, "no verdict in the answer"))?;
                let reason = verdict
                    .get("reject-reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                // btcd omits `allowed` when it is false, leaving the reason.
                let allowed = match verdict.get("allowed").and_then(Value::as_bool) {
                    Some(allowed) => allowed,
                    None if reason.is_some() => false,
                    None => {
                        return Err(Error::malformed(
                            CHAIN,
                            METHOD,
                            "neither `allowed` nor `reject-reason` in the verdict",
                        ));
                    }
                };
                Ok(if allowed {
                    MempoolVerdict::Allowed
                } else {
                    MempoolVerdict::Rejected(reason.unwrap_or_default())
                })
            }
            Answer::Refused { code, message } => Err(Error::transport(
                CHAIN,
                METHOD,
                format!("node error {code}: {message}"),
            )),
        }
    }

    /// A raw JSON-RPC call, for node-specific methods (btcd's `generate`).
    pub async fn call<T>(&self, method: &'static str, params: Vec<Value>) -> Result<T>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        self.blocking(method, move |rpc| rpc.call(method, &params))
            .await
    }
}

impl HeadSource for BitcoinClient {
    fn chain(&self) -> Chain {
        CHAIN
    }

    /// `getblockcount` then `getblockhash` of that height: the pair is always
    /// consistent, even if the tip moves between the two calls.
    ///
    /// A reorg to a shorter chain between the two calls leaves the height
    /// past the tip; the pair is then read again.
    async fn head(&self) -> Result<ChainHead> {
        let mut attempts = 0;
        loop {
            let height = self.block_count().await?;
            match self.block_hash(height).await {
                Ok(hash) => {
                    return Ok(ChainHead {
                        height,
                        hash: Some(hash.to_string()),
                    });
                }
                Err(err) if attempts < 3 && is_out_of_range(&err) => attempts += 1,
                Err(err) => return Err(err),
            }
        }
    }
}

/// A call's answer, or the JSON-RPC error the node gave instead.
enum Answer {
    Value(Value),
    Refused { code: i32, message: String },
}

/// What `testmempoolaccept` said of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MempoolVerdict {
    Allowed,
    /// With the node's reason (`txn-mempool-conflict`, `min relay fee not
    /// met`, `missing-inputs`, …).
    Rejected(String),
}

/// A BTC/kvB figure as a whole sat/vB rate, rounded up, at least 1.
fn btc_per_kvb_to_sat_vb(method: &'static str, rate: &Value) -> Result<u64> {
    let btc = rate
        .as_f64()
        .ok_or_else(|| Error::malformed(CHAIN, method, format!("fee rate {rate} is no number")))?;
    let per_kvb = bitcoin::Amount::from_btc(btc)
        .map_err(|e| Error::malformed(CHAIN, method, format!("fee rate {rate}: {e}")))?;
    Ok(per_kvb.to_sat().div_ceil(1000).max(1))
}

/// `getblockhash` past the tip: Core answers -8 "Block height out of
/// range", btcd -1 "Block number out of range".
fn is_out_of_range(err: &Error) -> bool {
    matches!(err, Error::Transport { method: "getblockhash", message, .. } if message.contains("out of range"))
}

/// Decodes the hex a node returns for `getblock <hash> 0`.
pub fn decode_block_hex(hex: &str) -> Result<Block> {
    bitcoin::consensus::encode::deserialize_hex(hex.trim())
        .map_err(|e| Error::malformed(CHAIN, "getblock", format!("undecodable raw block: {e}")))
}

fn classify(method: &'static str, err: bitcoincore_rpc::Error) -> Error {
    use bitcoincore_rpc::Error as E;
    match err {
        E::JsonRpc(jsonrpc::Error::Json(e)) => Error::malformed(CHAIN, method, e.to_string()),
        E::JsonRpc(jsonrpc::Error::Transport(e)) => Error::transport(CHAIN, method, e),
        E::JsonRpc(jsonrpc::Error::Rpc(e)) => Error::transport(
            CHAIN,
            method,
            format!("node error {}: {}", e.code, e.message),
        ),
        E::JsonRpc(e) => Error::malformed(CHAIN, method, e.to_string()),
        E::Json(e) => Error::malformed(CHAIN, method, e.to_string()),
        E::Hex(e) => Error::malformed(CHAIN, method, e.to_string()),
        E::BitcoinSerialization(e) => Error::malformed(CHAIN, method, e.to_string()),
        E::UnexpectedStructure => Error::malformed(CHAIN, method, "unexpected structure"),
        E::ReturnedError(e) => Error::transport(CHAIN, method, e),
        other => Error::transport(CHAIN, method, other),
    }
}

#[cfg(test)]
mod proptests;
#[cfg(any(test, feature = "devnet"))]
mod test_calls;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_rates_convert_from_btc_per_kvb_rounding_up() {
        let rate = |v: Value| btc_per_kvb_to_sat_vb("estimatesmartfee", &v);
        assert_eq!(rate(serde_json::json!(0.00001)).expect("rate"), 1);
        assert_eq!(rate(serde_json::json!(0.00012345)).expect("rate"), 13);
        assert_eq!(rate(serde_json::json!(0.001)).expect("rate"), 100);
        assert_eq!(
            rate(serde_json::json!(0.0)).expect("rate"),
            1,
            "never below 1"
        );
        for bad in [serde_json::json!("0.001"), serde_json::json!(-0.5)] {
            assert!(matches!(rate(bad), Err(Error::Malformed { .. })));
        }
    }

    #[test]
    fn garbage_block_hex_is_a_malformed_error() {
        for input in ["", "zz", "00", "0100000000"] {
            let err = decode_block_hex(input).err();
            assert!(
                matches!(
                    err,
                    Some(Error::Malformed {
                        method: "getblock",
                        ..
                    })
                ),
                "{input}: {err:?}"
            );
        }
    }

    #[test]
    fn password_never_prints() {
        let auth = BitcoinAuth::UserPass {
            user: "coffer".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
