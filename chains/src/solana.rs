//! Solana nodes over JSON-RPC with the `solana-rpc-client` family.

use std::sync::Arc;
use std::time::Duration;

use solana_commitment_config::CommitmentConfig;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::client_error::{Error as ClientError, ErrorKind};

use crate::{Chain, ChainHead, Error, HeadSource, Result};

const CHAIN: Chain = Chain::Solana;

#[derive(Clone)]
pub struct SolanaClient {
    rpc: Arc<RpcClient>,
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
        Ok(Self { rpc: Arc::new(rpc) })
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
        ErrorKind::SerdeJson(e) => Error::malformed(CHAIN, method, e.to_string()),
        _ => Error::transport(CHAIN, method, err),
    }
}
