use std::process::Command;
use std::time::Duration;

use alloy::primitives::{Address, address};
use alloy::providers::Provider;

use super::{NodeProcess, Result, free_port, locate_tool, node_dir};
use crate::ethereum::EthereumClient;

/// An anvil node with its default, unlocked, funded dev accounts.
#[derive(Debug)]
pub struct Anvil {
    /// Held for its drop, which kills the node.
    _process: NodeProcess,
    rpc_url: String,
    client: EthereumClient,
}

impl Anvil {
    /// anvil's first default dev account (mnemonic `test test … junk`).
    pub const DEV_ACCOUNT: Address = address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266");

    pub async fn spawn() -> Result<Self> {
        Self::spawn_with_args(&[]).await
    }

    /// Spawns anvil with extra command-line arguments (for example `--block-time`).
    pub async fn spawn_with_args(extra: &[&str]) -> Result<Self> {
        let binary = locate_tool("anvil")?;
        let dir = node_dir("anvil")?;
        let port = free_port();
        let rpc_url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(binary);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--config-out")
            .arg(dir.path().join("anvil.json"))
            .args(extra);
        let mut process = NodeProcess::spawn("anvil", cmd, dir.path())?;
        process.own_dir(dir);
        let client = EthereumClient::new(&rpc_url, Duration::from_secs(30))?;
        let probe = client.clone();
        process
            .wait_ready(Duration::from_secs(30), || {
                let probe = probe.clone();
                async move { probe.provider().get_chain_id().await }
            })
            .await?;
        Ok(Self {
            _process: process,
            rpc_url,
            client,
        })
    }

    pub fn rpc_url(&self) -> &str {
        &self.rpc_url
    }

    pub fn client(&self) -> &EthereumClient {
        &self.client
    }

    /// Mines `blocks` empty blocks at once (`anvil_mine`).
    pub async fn mine(&self, blocks: u64) -> Result<()> {
        let _: serde_json::Value = self
            .client
            .provider()
            .raw_request("anvil_mine".into(), (blocks,))
            .await
            .map_err(|e| super::DevnetError::Other(format!("anvil_mine: {e}")))?;
        Ok(())
    }
}
