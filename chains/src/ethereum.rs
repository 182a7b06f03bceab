//! Ethereum nodes over JSON-RPC with `alloy`.

use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::RpcClient;
use alloy::transports::http::{Http, reqwest};
use alloy::transports::{RpcError, TransportErrorKind};

use crate::{Chain, ChainHead, Error, HeadSource, Result};

const CHAIN: Chain = Chain::Ethereum;

#[derive(Clone, Debug)]
pub struct EthereumClient {
    provider: RootProvider,
}

impl EthereumClient {
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        let config_err = |detail: String| Error::Config {
            chain: CHAIN,
            detail,
        };
        let parsed: url::Url = url
            .parse()
            .map_err(|e| config_err(format!("rpc url `{url}`: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| config_err(format!("http client: {e}")))?;
        let transport = Http::with_client(http, parsed);
        let is_local = transport.guess_local();
        Ok(Self {
            provider: RootProvider::new(RpcClient::new(transport, is_local)),
        })
    }

    /// The underlying provider, for calls this client does not wrap yet.
    pub fn provider(&self) -> &RootProvider {
        &self.provider
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

fn classify(method: &'static str, err: RpcError<TransportErrorKind>) -> Error {
    match err {
        RpcError::DeserError { err, text } => {
            let mut snippet = text;
            snippet.truncate(200);
            Error::malformed(CHAIN, method, format!("{err}; response starts: {snippet}"))
        }
        RpcError::NullResp => Error::malformed(CHAIN, method, "null response"),
        other => Error::transport(CHAIN, method, other),
    }
}
