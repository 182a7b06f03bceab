//! Bitcoin nodes over JSON-RPC, restricted to calls both Bitcoin Core and
//! btcd serve. `bitcoincore-rpc` is blocking, so every call runs on tokio's
//! blocking pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Block, BlockHash};
use bitcoincore_rpc::jsonrpc::{self, simple_http};
use bitcoincore_rpc::{RpcApi, jsonrpc::serde_json::Value};

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

#[derive(Clone)]
pub struct BitcoinClient {
    rpc: Arc<bitcoincore_rpc::Client>,
    url: String,
}

impl std::fmt::Debug for BitcoinClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitcoinClient")
            .field("url", &self.url)
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
            .map_err(|e| config_err(format!("rpc url `{url}`: {e}")))?
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
        let client = jsonrpc::Client::with_transport(builder.build());
        Ok(Self {
            rpc: Arc::new(bitcoincore_rpc::Client::from_jsonrpc(client)),
            url: url.to_owned(),
        })
    }

    async fn blocking<T, F>(&self, method: &'static str, call: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&bitcoincore_rpc::Client) -> bitcoincore_rpc::Result<T> + Send + 'static,
    {
        let rpc = Arc::clone(&self.rpc);
        tokio::task::spawn_blocking(move || call(&rpc))
            .await
            .map_err(|e| Error::transport(CHAIN, method, format!("rpc task failed: {e}")))?
            .map_err(|e| classify(method, e))
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

    /// `getblock <hash> 0`: the raw serialized block, decoded locally.
    pub async fn block(&self, hash: BlockHash) -> Result<Block> {
        let hex = self
            .blocking("getblock", move |rpc| rpc.get_block_hex(&hash))
            .await?;
        decode_block_hex(&hex)
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
    async fn head(&self) -> Result<ChainHead> {
        let height = self.block_count().await?;
        let hash = self.block_hash(height).await?;
        Ok(ChainHead {
            height,
            hash: Some(hash.to_string()),
        })
    }
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
mod tests {
    use super::*;

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
