use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use solana_commitment_config::CommitmentConfig;
use solana_pubkey::Pubkey;
use tokio::sync::OnceCell;

use super::{DevnetError, NodeProcess, Result, free_port_range, locate_tool};
use crate::solana::SolanaClient;

/// The process's name in logs and errors.
const NAME: &str = "solana-test-validator";

/// The ledger directory's name inside the node's directory.
const LEDGER: &str = "ledger";

/// A solana-test-validator. It keeps about one core busy, so a test binary
/// shares one through [`SolanaValidator::shared`].
#[derive(Debug)]
pub struct SolanaValidator {
    /// Killed on drop.
    process: NodeProcess,
    ledger: PathBuf,
    rpc_url: String,
    client: SolanaClient,
}

/// A validator's ledger as a crash at one instant would have left it; a
/// node started from it by [`SolanaValidator::resume`] forks from there.
#[derive(Debug)]
pub struct LedgerCopy {
    dir: tempfile::TempDir,
    /// The node's confirmed slot just before the copy: the copy holds at
    /// least every block up to it.
    pub confirmed_slot: u64,
}

impl SolanaValidator {
    /// The validator shared by every test in this process, started on first use.
    pub async fn shared() -> Result<&'static SolanaValidator> {
        static SHARED: OnceCell<SolanaValidator> = OnceCell::const_new();
        SHARED.get_or_try_init(Self::spawn).await
    }

    /// Starts a validator of its own on a new ledger; prefer
    /// [`SolanaValidator::shared`].
    pub async fn spawn() -> Result<Self> {
        Self::start(super::node_dir("solana")?, true).await
    }

    /// Starts a validator on a copied ledger, on ports of its own: it
    /// replays the copy and goes on producing blocks from its last one.
    pub async fn resume(copy: LedgerCopy) -> Result<Self> {
        Self::start(copy.dir, false).await
    }

    /// Copies the ledger while the node is stopped for the moment it takes.
    pub async fn copy_ledger(&self) -> Result<LedgerCopy> {
        let confirmed_slot = self.client.slot(CommitmentConfig::confirmed()).await?;
        let dir = super::node_dir("solana")?;
        let copy = {
            let _frozen = self.process.freeze()?;
            Command::new("cp")
                .arg("-a")
                .arg(&self.ledger)
                .arg(dir.path().join(LEDGER))
                .output()
        };
        match copy {
            Ok(out) if out.status.success() => Ok(LedgerCopy {
                dir,
                confirmed_slot,
            }),
            Ok(out) => Err(DevnetError::Other(format!(
                "copying the ledger failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
            Err(e) => Err(DevnetError::Other(format!("running cp: {e}"))),
        }
    }

    async fn start(dir: tempfile::TempDir, reset: bool) -> Result<Self> {
        let binary = locate_tool(NAME)?;
        let ledger = dir.path().join(LEDGER);
        // RPC takes the first two ports (HTTP and websocket), the faucet the
        // third, gossip the fourth, and the validator's sockets the rest.
        let base = free_port_range(64)
            .ok_or_else(|| DevnetError::Other("no free port range for the validator".into()))?;
        let rpc_url = format!("http://127.0.0.1:{base}");
        let mut cmd = Command::new(binary);
        cmd.arg("--ledger")
            .arg(&ledger)
            .args(["--bind-address", "127.0.0.1"])
            .args(["--rpc-port", &base.to_string()])
            .args(["--faucet-port", &(base + 2).to_string()])
            .args(["--gossip-port", &(base + 3).to_string()])
            .args([
                "--dynamic-port-range",
                &format!("{}-{}", base + 4, base + 63),
            ])
            .arg("--quiet");
        if reset {
            cmd.arg("--reset");
        }
        let client = SolanaClient::new(&rpc_url, Duration::from_secs(30))?;
        let ready = Duration::from_secs(120);
        let process = NodeProcess::start(NAME, cmd, dir, ready, &client, finalized_slot).await?;
        Ok(Self {
            process,
            ledger,
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

/// The node is ready once it has finalized a slot past genesis.
async fn finalized_slot(client: SolanaClient) -> Result<u64, String> {
    match client.slot(CommitmentConfig::finalized()).await {
        Ok(slot) if slot > 0 => Ok(slot),
        Ok(_) => Err("no finalized slot yet".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}
