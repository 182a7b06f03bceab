//! Calls only tests and devnet helpers make; production builds (without
//! the `devnet` feature) do not have them.

use bitcoin::{Transaction, Txid};
use bitcoincore_rpc::RpcApi;

use super::{BitcoinClient, CHAIN};
use crate::{Error, Result};

impl BitcoinClient {
    /// `getrawmempool`: the txids waiting in the node's mempool.
    pub async fn raw_mempool(&self) -> Result<Vec<Txid>> {
        self.blocking("getrawmempool", |rpc| rpc.get_raw_mempool())
            .await
    }

    /// `getrawtransaction <txid>` (hex), decoded locally. Needs a node with
    /// a transaction index for transactions outside the mempool.
    pub async fn raw_transaction(&self, txid: Txid) -> Result<Transaction> {
        let hex = self
            .blocking("getrawtransaction", move |rpc| {
                rpc.get_raw_transaction_hex(&txid, None)
            })
            .await?;
        bitcoin::consensus::encode::deserialize_hex(hex.trim()).map_err(|e| {
            Error::malformed(
                CHAIN,
                "getrawtransaction",
                format!("undecodable transaction: {e}"),
            )
        })
    }
}
