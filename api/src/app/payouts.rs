//! The payout loops, each under the watchers' supervisor: Ethereum's
//! (`indexer::payouts::ethereum`) runs while `chains.ethereum.enabled` and
//! `withdrawals.ethereum.enabled` are both on. Like a watcher, it first
//! asks the node which chain it is on, and it signs with the id the node
//! reports; a node on another chain halts it, one that cannot be asked is
//! retried with backoff, and so is a loop that panicked.

use std::sync::Arc;

use anyhow::Context;
use chains::Chain;
use chains::ethereum::EthereumClient;
use indexer::ledger::Ledger;
use indexer::payouts::ethereum::{EthereumPayoutConfig, EthereumPayouts};
use indexer::withdrawals::Withdrawals;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::App;
use super::identity::{ETHEREUM_CHAIN_ID, Expected};
use super::watchers::{RESTART, StartError, Supervised, WatcherRun, supervise};

impl App {
    /// Starts each enabled chain's payout loop under a supervisor, on
    /// `ledger` (the background pool's) and the daemon's keys.
    pub(super) fn spawn_payouts(
        &self,
        ledger: &Ledger,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let eth = &self.settings.chains.ethereum;
        let payouts = &self.settings.withdrawals.ethereum;
        if !(eth.enabled && payouts.enabled) {
            return Ok(());
        }
        let client = EthereumClient::new(eth.rpc_url.expose(), eth.timeout())
            .context("config section `chains.ethereum`")?;
        let start = EthereumPayoutStart {
            client,
            expected: Expected {
                identity: &ETHEREUM_CHAIN_ID,
                network: self.settings.network,
                configured: eth.chain.chain_id,
            },
            store: Withdrawals::new(ledger.clone(), self.settings.withdrawals.policy()),
            keys: Arc::clone(&self.deposit_keys),
            config: payouts.payout_config(eth)?,
        };
        // Built once here so a key that cannot be derived stops startup;
        // each start builds its own with the node's chain id.
        let hot_wallet = start
            .build(start.config.chain_id)
            .context("the Ethereum payout loop")?
            .hot_wallet();
        tracing::info!(
            chain = %Chain::Ethereum,
            %hot_wallet,
            "payout loop enabled: withdrawals are paid from this hot wallet (m/44'/60'/1'/0/0), and sweeps go to it"
        );
        let loop_cancel = cancel.clone();
        let attempt = move || {
            let (start, cancel) = (start.clone(), loop_cancel.clone());
            async move { start.start(cancel).await }
        };
        tasks.spawn(supervise(
            Supervised::payout_loop(Chain::Ethereum),
            RESTART,
            attempt,
            cancel.clone(),
        ));
        Ok(())
    }
}

/// Everything one start of the Ethereum payout loop needs.
#[derive(Clone)]
struct EthereumPayoutStart {
    client: EthereumClient,
    expected: Expected<u64>,
    store: Withdrawals,
    keys: Arc<signer::DepositKeys>,
    config: EthereumPayoutConfig,
}

impl EthereumPayoutStart {
    /// Checks the node's chain id, then builds the loop to sign with it.
    async fn start(self, cancel: CancellationToken) -> Result<WatcherRun, StartError> {
        let chain_id = self.client.chain_id().await.map_err(StartError::Node)?;
        let network = self
            .expected
            .check(&chain_id)
            .map_err(StartError::WrongNetwork)?;
        tracing::info!(chain = %Chain::Ethereum, %network, "the payout loop's node is on the configured network");
        let payouts = self
            .build(chain_id)
            .map_err(|err| StartError::Setup(format!("the payout loop cannot start: {err}")))?;
        Ok(Box::pin(payouts.run(cancel)))
    }

    /// The loop, signing for `chain_id`.
    fn build(&self, chain_id: u64) -> indexer::Result<EthereumPayouts> {
        let config = EthereumPayoutConfig {
            chain_id,
            ..self.config.clone()
        };
        EthereumPayouts::new(
            self.client.clone(),
            self.store.clone(),
            Arc::clone(&self.keys),
            config,
        )
    }
}
