use std::process::Command;
use std::time::Duration;

use bitcoin::key::Secp256k1;
use bitcoin::{Address, BlockHash, CompressedPublicKey, Network, PrivateKey};

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
        let mut process = NodeProcess::spawn("btcd", cmd, dir.path())?;
        process.own_dir(dir);
        let client = BitcoinClient::new(&rpc_url, Self::auth(), Duration::from_secs(30))?;
        let probe = client.clone();
        process
            .wait_ready(Duration::from_secs(60), || {
                let probe = probe.clone();
                async move { probe.head().await }
            })
            .await?;
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
