use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256, address, keccak256};
use alloy::providers::Provider;
use serde_json::{Value, json};

use super::{DevnetError, NodeProcess, Result, free_port, locate_tool, node_dir, run_tool};
use crate::ethereum::EthereumClient;

/// `chains/src/devnet/contracts/TestToken.sol`, compiled by the pinned solc
/// that `./scripts/devnet install` puts in the tool cache.
const TEST_TOKEN_SOURCE: &str = include_str!("contracts/TestToken.sol");

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
        let client = EthereumClient::new(&rpc_url, Duration::from_secs(30))?;
        let ready = Duration::from_secs(30);
        let chain_id = async |probe: EthereumClient| probe.provider().get_chain_id().await;
        let process = NodeProcess::start("anvil", cmd, dir, ready, &client, chain_id).await?;
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

    /// Mines `blocks` blocks at once (`anvil_mine`), taking pending
    /// transactions into the first.
    pub async fn mine(&self, blocks: u64) -> Result<()> {
        self.request("anvil_mine", json!([blocks])).await?;
        Ok(())
    }

    /// Any JSON-RPC call, such as `anvil_reorg` or `evm_setAutomine`.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value> {
        self.client
            .provider()
            .raw_request::<_, Value>(method.to_owned().into(), params)
            .await
            .map_err(|e| DevnetError::Other(format!("{method}: {e}")))
    }

    /// Mines a block for each transaction as it arrives (`true`, anvil's
    /// default) or only on [`Self::mine`] (`evm_setAutomine`).
    pub async fn set_automine(&self, on: bool) -> Result<()> {
        self.request("evm_setAutomine", json!([on])).await?;
        Ok(())
    }

    /// The base fee of the next mined block
    /// (`anvil_setNextBlockBaseFeePerGas`).
    pub async fn set_next_base_fee(&self, wei: u128) -> Result<()> {
        self.request(
            "anvil_setNextBlockBaseFeePerGas",
            json!([format!("{wei:#x}")]),
        )
        .await?;
        Ok(())
    }

    /// Removes a pending transaction from the pool, as a node that evicted
    /// it would (`anvil_dropTransaction`).
    pub async fn drop_transaction(&self, hash: B256) -> Result<()> {
        self.request("anvil_dropTransaction", json!([hash])).await?;
        Ok(())
    }

    /// Replaces the newest `depth` blocks by as many new ones holding
    /// `txs`, each a transaction request (from an unlocked account) and the
    /// offset of its block in the new branch (`anvil_reorg`); the height
    /// stays.
    pub async fn reorg(&self, depth: u64, txs: &[(Value, u64)]) -> Result<()> {
        let txs: Vec<Value> = txs.iter().map(|(tx, at)| json!([tx, at])).collect();
        self.request("anvil_reorg", json!([depth, txs])).await?;
        Ok(())
    }

    /// Sets the wei `address` holds (`anvil_setBalance`).
    pub async fn set_balance(&self, address: Address, wei: U256) -> Result<()> {
        self.request("anvil_setBalance", json!([address, wei]))
            .await?;
        Ok(())
    }

    /// Whether `hash` is in the node's pool: known, but in no block.
    pub async fn mempool_contains(&self, hash: B256) -> Result<bool> {
        let tx = self
            .request("eth_getTransactionByHash", json!([hash]))
            .await?;
        Ok(tx.is_object() && tx.get("blockNumber").is_none_or(Value::is_null))
    }

    /// Sends a transaction from an unlocked dev account
    /// (`eth_sendTransaction`). `gas` set explicitly lets a transaction that
    /// reverts be mined instead of refused at estimation.
    pub async fn send(
        &self,
        from: Address,
        to: Address,
        value: U256,
        data: &[u8],
        gas: Option<u64>,
    ) -> Result<B256> {
        let mut tx = json!({
            "from": from,
            "to": to,
            "value": value,
            "data": Bytes::copy_from_slice(data),
        });
        if let Some(gas) = gas {
            tx["gas"] = json!(format!("{gas:#x}"));
        }
        let hash = self.request("eth_sendTransaction", json!([tx])).await?;
        serde_json::from_value(hash).map_err(|e| DevnetError::Other(format!("tx hash: {e}")))
    }

    /// The receipt's `status` (true on success), once mined.
    pub async fn succeeded(&self, tx: B256) -> Result<bool> {
        let receipt = self
            .request("eth_getTransactionReceipt", json!([tx]))
            .await?;
        match receipt.get("status").and_then(Value::as_str) {
            Some(status) => Ok(status == "0x1"),
            None => Err(DevnetError::Other(format!("{tx} is not mined: {receipt}"))),
        }
    }

    /// Waits until `tx` is in a block. With automine, `eth_sendTransaction`
    /// can answer before the block exists, so a test that reads the tip
    /// right after sending waits here first.
    pub async fn mined(&self, tx: B256) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.succeeded(tx).await.is_err() {
            if std::time::Instant::now() > deadline {
                return Err(DevnetError::Other(format!("{tx} not mined within 10 s")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Deploys a fresh `TestToken` with `decimals` from [`Self::DEV_ACCOUNT`]
    /// and mines it.
    pub async fn deploy_test_token(&self, decimals: u8) -> Result<TestToken> {
        let mut code = test_token_bytecode()?.to_vec();
        code.extend_from_slice(&U256::from(decimals).to_be_bytes::<32>());
        let tx = json!({
            "from": Self::DEV_ACCOUNT,
            "data": Bytes::from(code),
            "gas": "0x2dc6c0",
        });
        let hash = self.request("eth_sendTransaction", json!([tx])).await?;
        self.mine(1).await?;
        let receipt = self
            .request("eth_getTransactionReceipt", json!([hash]))
            .await?;
        let address = receipt
            .get("contractAddress")
            .cloned()
            .and_then(|a| serde_json::from_value(a).ok())
            .ok_or_else(|| DevnetError::Other(format!("TestToken not deployed: {receipt}")))?;
        Ok(TestToken { address })
    }

    /// [`Self::deploy_test_token`], then mints `supply` to
    /// [`Self::DEV_ACCOUNT`]; returns once the mint is mined.
    pub async fn deploy_minted_token(&self, decimals: u8, supply: U256) -> Result<TestToken> {
        let token = self.deploy_test_token(decimals).await?;
        let from = Self::DEV_ACCOUNT;
        let mint = TestToken::mint(from, supply);
        let hash = self
            .send(from, token.address, U256::ZERO, &mint, None)
            .await?;
        self.mined(hash).await?;
        Ok(token)
    }
}

/// A deployed `TestToken`; builds call data for its functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestToken {
    pub address: Address,
}

impl TestToken {
    pub fn mint(to: Address, value: U256) -> Vec<u8> {
        call(
            "mint(address,uint256)",
            &[to.into_word().0, value.to_be_bytes()],
        )
    }

    pub fn transfer(to: Address, value: U256) -> Vec<u8> {
        call(
            "transfer(address,uint256)",
            &[to.into_word().0, value.to_be_bytes()],
        )
    }

    pub fn transfer_then_revert(to: Address, value: U256) -> Vec<u8> {
        call(
            "transferThenRevert(address,uint256)",
            &[to.into_word().0, value.to_be_bytes()],
        )
    }

    /// `transferEach(address[],uint256)`: one `Transfer` per recipient.
    pub fn transfer_each(recipients: &[Address], value: U256) -> Vec<u8> {
        let mut words = vec![
            U256::from(64).to_be_bytes(),
            value.to_be_bytes(),
            U256::from(recipients.len()).to_be_bytes(),
        ];
        words.extend(recipients.iter().map(|r| r.into_word().0));
        call("transferEach(address[],uint256)", &words)
    }
}

fn call(signature: &str, words: &[[u8; 32]]) -> Vec<u8> {
    let mut data = keccak256(signature.as_bytes())[..4].to_vec();
    for word in words {
        data.extend_from_slice(word);
    }
    data
}

/// Compiles `TestToken.sol` once per process with the cached `solcjs`.
fn test_token_bytecode() -> Result<Bytes> {
    static CODE: OnceLock<std::result::Result<Bytes, String>> = OnceLock::new();
    CODE.get_or_init(|| compile_test_token().map_err(|e| e.to_string()))
        .clone()
        .map_err(DevnetError::Other)
}

fn compile_test_token() -> Result<Bytes> {
    let solc = locate_tool("solcjs")?;
    let dir = node_dir("solc")?;
    let source = dir.path().join("TestToken.sol");
    std::fs::write(&source, TEST_TOKEN_SOURCE)
        .map_err(|e| DevnetError::Other(format!("write TestToken.sol: {e}")))?;
    run_tool(
        "solcjs",
        Command::new(solc).current_dir(dir.path()).args([
            "--bin",
            "--optimize",
            "-o",
            "out",
            "TestToken.sol",
        ]),
    )?;
    let hex = std::fs::read_to_string(dir.path().join("out").join("TestToken_sol_TestToken.bin"))
        .map_err(|e| DevnetError::Other(format!("solcjs output: {e}")))?;
    alloy::primitives::hex::decode(hex.trim())
        .map(Bytes::from)
        .map_err(|e| DevnetError::Other(format!("solcjs output is not hex: {e}")))
}
