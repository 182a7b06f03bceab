use std::process::Command;
use std::time::Duration;

use bitcoin::absolute::LockTime;
use bitcoin::key::Secp256k1;
use bitcoin::secp256k1::Message;
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, BlockHash, CompressedPublicKey, Network, OutPoint, PrivateKey, ScriptBuf,
    Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};

use super::{DevnetError, NodeProcess, Result, free_port, locate_tool, node_dir};
use crate::HeadSource;
use crate::bitcoin::{BitcoinAuth, BitcoinClient};

const RPC_USER: &str = "coffer";
const RPC_PASSWORD: &str = "coffer-devnet";
/// A fixed, public test key: coinbase rewards go to it so tests can spend them.
const MINING_SECRET: [u8; 32] = [0x11; 32];

/// A btcd node in regtest mode, RPC over plain HTTP on loopback.
#[derive(Debug)]
pub struct Btcd {
    /// Held for its drop, which kills the node.
    _process: NodeProcess,
    rpc_url: String,
    p2p_addr: String,
    client: BitcoinClient,
}

impl Btcd {
    /// `mining_address()` as text; `scripts/lib.sh` mines the devnet to it too.
    pub const MINING_ADDRESS: &str = "bcrt1ql3e9pgs3mmwuwrh95fecme0s0qtn2880hlwwpw";

    pub async fn spawn() -> Result<Self> {
        let binary = locate_tool("btcd")?;
        let dir = node_dir("btcd")?;
        let config_file = dir.path().join("btcd.conf");
        // btcd writes a sample config to ~/.btcd unless pointed at one.
        std::fs::write(&config_file, "").map_err(|source| DevnetError::Spawn {
            name: "btcd".into(),
            source,
        })?;
        let rpc_port = free_port();
        let p2p_port = free_port();
        let rpc_url = format!("http://127.0.0.1:{rpc_port}");
        let p2p_addr = format!("127.0.0.1:{p2p_port}");
        let mut cmd = Command::new(binary);
        cmd.arg("--regtest")
            .arg(format!("--configfile={}", config_file.display()))
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--logdir={}", dir.path().join("logs").display()))
            .arg(format!("--rpclisten=127.0.0.1:{rpc_port}"))
            .arg(format!("--listen={p2p_addr}"))
            .arg(format!("--rpcuser={RPC_USER}"))
            .arg(format!("--rpcpass={RPC_PASSWORD}"))
            .arg(format!("--miningaddr={}", Self::mining_address()))
            .args(["--notls", "--txindex", "--nodnsseed", "--debuglevel=info"]);
        let client = BitcoinClient::new(&rpc_url, Self::auth(), Duration::from_secs(30))?;
        let ready = Duration::from_secs(60);
        let head = async |probe: BitcoinClient| probe.head().await;
        let process = NodeProcess::start("btcd", cmd, dir, ready, &client, head).await?;
        Ok(Self {
            _process: process,
            rpc_url,
            p2p_addr,
            client,
        })
    }

    pub fn rpc_url(&self) -> &str {
        &self.rpc_url
    }

    pub fn auth() -> BitcoinAuth {
        BitcoinAuth::UserPass {
            user: RPC_USER.into(),
            password: RPC_PASSWORD.into(),
        }
    }

    pub fn client(&self) -> &BitcoinClient {
        &self.client
    }

    /// The node's peer-to-peer address, for connecting two nodes.
    pub fn p2p_addr(&self) -> &str {
        &self.p2p_addr
    }

    /// The key every coinbase of this node pays to.
    pub fn mining_key() -> PrivateKey {
        // A constant 32-byte value below the curve order is always a valid key.
        PrivateKey::from_slice(&MINING_SECRET, Network::Regtest).expect("constant key is valid")
    }

    pub fn mining_address() -> Address {
        let secp = Secp256k1::signing_only();
        let public = CompressedPublicKey::from_private_key(&secp, &Self::mining_key())
            .expect("key is compressed");
        Address::p2wpkh(&public, Network::Regtest)
    }

    /// Mines `blocks` blocks to the mining address.
    pub async fn generate(&self, blocks: u32) -> Result<Vec<BlockHash>> {
        Ok(self.client.call("generate", vec![blocks.into()]).await?)
    }

    /// Connects to `other` as a temporary peer (btcd's `node connect`).
    pub async fn connect(&self, other: &Btcd) -> Result<()> {
        let _: serde_json::Value = self
            .client
            .call(
                "node",
                vec!["connect".into(), other.p2p_addr().into(), "temp".into()],
            )
            .await?;
        Ok(())
    }

    /// Drops the peer connection to `other` made by [`Self::connect`].
    pub async fn disconnect(&self, other: &Btcd) -> Result<()> {
        let _: serde_json::Value = self
            .client
            .call("node", vec!["disconnect".into(), other.p2p_addr().into()])
            .await?;
        Ok(())
    }

    /// The coinbase output of the block at `height`, which pays the mining
    /// key: spendable once 100 blocks sit on top of it.
    pub async fn coinbase_output(&self, height: u64) -> Result<(OutPoint, Amount)> {
        let hash = self.client.block_hash(height).await?;
        let block = self.client.block(hash).await?;
        let coinbase = block
            .txdata
            .first()
            .ok_or_else(|| DevnetError::Other(format!("block {height} has no coinbase")))?;
        let value = coinbase
            .output
            .first()
            .map(|o| o.value)
            .ok_or_else(|| DevnetError::Other(format!("coinbase of {height} has no output")))?;
        Ok((
            OutPoint {
                txid: coinbase.compute_txid(),
                vout: 0,
            },
            value,
        ))
    }

    /// Spends `input` (worth `value`, paying the mining key) to `outputs`,
    /// with the rest less a 10,000-sat fee back to the mining address, and
    /// broadcasts it.
    pub async fn pay(
        &self,
        input: OutPoint,
        value: Amount,
        outputs: &[(Address, Amount)],
    ) -> Result<Txid> {
        let tx = Self::sign_payment(input, value, outputs)?;
        Ok(self.client.send_raw_transaction(&tx).await?)
    }

    /// [`Self::pay`] without broadcasting.
    pub fn sign_payment(
        input: OutPoint,
        value: Amount,
        outputs: &[(Address, Amount)],
    ) -> Result<Transaction> {
        let fee = Amount::from_sat(10_000);
        let paid: Amount = outputs.iter().map(|(_, amount)| *amount).sum();
        let change = value
            .checked_sub(paid)
            .and_then(|rest| rest.checked_sub(fee))
            .ok_or_else(|| DevnetError::Other("outputs exceed the input".into()))?;
        let mining = Self::mining_address().script_pubkey();
        let mut tx_outputs: Vec<TxOut> = outputs
            .iter()
            .map(|(address, amount)| TxOut {
                value: *amount,
                script_pubkey: address.script_pubkey(),
            })
            .collect();
        if change > Amount::from_sat(1_000) {
            tx_outputs.push(TxOut {
                value: change,
                script_pubkey: mining.clone(),
            });
        }
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: input,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: tx_outputs,
        };
        let secp = Secp256k1::new();
        let key = Self::mining_key();
        let sighash = SighashCache::new(&tx)
            .p2wpkh_signature_hash(0, &mining, value, EcdsaSighashType::All)
            .map_err(|e| DevnetError::Other(format!("sighash: {e}")))?;
        let signature = bitcoin::ecdsa::Signature {
            signature: secp.sign_ecdsa(&Message::from(sighash), &key.inner),
            sighash_type: EcdsaSighashType::All,
        };
        let public = CompressedPublicKey::from_private_key(&secp, &key)
            .map_err(|e| DevnetError::Other(format!("public key: {e}")))?;
        tx.input[0].witness = Witness::p2wpkh(&signature, &public.0);
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mining_address_matches_the_devnet_scripts() {
        assert_eq!(Btcd::mining_address().to_string(), Btcd::MINING_ADDRESS);
        let lib = include_str!("../../../scripts/lib.sh");
        assert!(lib.contains(&format!("BTCD_MINING_ADDRESS=\"{}\"", Btcd::MINING_ADDRESS)));
    }
}
