use std::process::Command;
use std::time::Duration;

use solana_commitment_config::CommitmentConfig;
use solana_pubkey::Pubkey;
use tokio::sync::OnceCell;

use super::{DevnetError, NodeProcess, Result, free_port_range, locate_tool};
use crate::solana::SolanaClient;

/// A solana-test-validator. It keeps about one core busy, so a test binary
/// shares one through [`SolanaValidator::shared`].
#[derive(Debug)]
pub struct SolanaValidator {
    /// Held for its drop, which kills the node.
    _process: NodeProcess,
    rpc_url: String,
    client: SolanaClient,
}

impl SolanaValidator {
    /// The validator shared by every test in this process, started on first use.
    pub async fn shared() -> Result<&'static SolanaValidator> {
        static SHARED: OnceCell<SolanaValidator> = OnceCell::const_new();
        SHARED.get_or_try_init(Self::spawn).await
    }

    /// Starts a validator of its own; prefer [`SolanaValidator::shared`].
    pub async fn spawn() -> Result<Self> {
        let binary = locate_tool("solana-test-validator")?;
        let dir = super::node_dir("solana")?;
        // RPC takes the first two ports (HTTP and websocket), the faucet the
        // third, gossip the fourth, and the validator's sockets the rest.
        let base = free_port_range(64)
            .ok_or_else(|| DevnetError::Other("no free port range for the validator".into()))?;
        let rpc_url = format!("http://127.0.0.1:{base}");
        let mut cmd = Command::new(binary);
        cmd.arg("--ledger")
            .arg(dir.path().join("ledger"))
            .args(["--bind-address", "127.0.0.1"])
            .args(["--rpc-port", &base.to_string()])
            .args(["--faucet-port", &(base + 2).to_string()])
            .args(["--gossip-port", &(base + 3).to_string()])
            .args([
                "--dynamic-port-range",
                &format!("{}-{}", base + 4, base + 63),
            ])
            .args(["--reset", "--quiet"]);
        let mut process = NodeProcess::spawn("solana-test-validator", cmd, dir.path())?;
        process.own_dir(dir);
        let client = SolanaClient::new(&rpc_url, Duration::from_secs(30))?;
        let probe = client.clone();
        process
            .wait_ready(Duration::from_secs(120), || {
                let probe = probe.clone();
                async move {
                    match probe.slot(CommitmentConfig::finalized()).await {
                        Ok(slot) if slot > 0 => Ok(slot),
                        Ok(_) => Err("no finalized slot yet".to_owned()),
                        Err(e) => Err(e.to_string()),
                    }
                }
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

    pub fn client(&self) -> &SolanaClient {
        &self.client
    }

    /// Airdrops `lamports` from the validator's faucet and waits until the
    /// transfer is confirmed.
    pub async fn airdrop(&self, to: &Pubkey, lamports: u64) -> Result<()> {
        let rpc = self.client.rpc();
        let signature = rpc
            .request_airdrop(to, lamports)
            .await
            .map_err(|e| crate::solana::classify("requestAirdrop", e))?;
        rpc.poll_for_signature_with_commitment(&signature, CommitmentConfig::confirmed())
            .await
            .map_err(|e| crate::solana::classify("getSignatureStatuses", e))?;
        Ok(())
    }
}
