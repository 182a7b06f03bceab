//! The chain watchers, each under a supervisor: a chain whose node is down,
//! answers garbage or is on the wrong network never stops the API or the
//! other chains. The payout loops run under the same supervisor
//! (`app::payouts`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};
use chains::Chain;
use chains::bitcoin::{BitcoinAuth, BitcoinClient};
use chains::ethereum::EthereumClient;
use chains::solana::SolanaClient;
use indexer::deposits::DepositStore;
use indexer::deposits::bitcoin::{BitcoinWatchConfig, BitcoinWatcher};
use indexer::deposits::ethereum::{EthereumWatchConfig, EthereumWatcher};
use indexer::deposits::solana::{SolanaWatchConfig, SolanaWatcher};
use indexer::ledger::Ledger;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::App;
use super::identity::{ETHEREUM_CHAIN_ID, Expected, SOLANA_GENESIS_HASH, check_bitcoin_network};
use crate::config::BitcoinNetwork;
use crate::metrics::{
    PAYOUT_LOOP_HALTED, PAYOUT_LOOP_RESTARTS, PAYOUT_LOOP_UP, WATCHER_RESTARTS, WATCHER_UP,
};

/// How a chain's watcher is restarted: capped exponential backoff (with
/// jitter), from the shortest delay again after a run of `reset_after`.
#[derive(Clone, Copy, Debug)]
pub(super) struct RestartPolicy {
    min_delay: Duration,
    max_delay: Duration,
    reset_after: Duration,
}

pub(super) const RESTART: RestartPolicy = RestartPolicy {
    min_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(60),
    reset_after: Duration::from_secs(300),
};

impl App {
    /// Registers each enabled chain's tokens (a conflict stops startup,
    /// naming the key), then starts its watcher under a supervisor.
    pub(super) async fn spawn_watchers(
        &self,
        ledger: &Ledger,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let network = self.settings.network;
        let chains = &self.settings.chains;
        let btc = &chains.bitcoin;
        if btc.enabled {
            let auth = match (
                &btc.chain.cookie_file,
                &btc.chain.rpc_user,
                &btc.chain.rpc_password,
            ) {
                (Some(path), _, _) => BitcoinAuth::CookieFile(path.clone()),
                (None, Some(user), Some(password)) => BitcoinAuth::UserPass {
                    user: user.clone(),
                    password: password.expose().to_owned(),
                },
                _ => BitcoinAuth::None,
            };
            let start = BitcoinStart {
                client: BitcoinClient::new(btc.rpc_url.expose(), auth, btc.timeout())
                    .context("config section `chains.bitcoin`")?,
                expected: btc.chain.network,
                keys: Arc::clone(&self.deposit_keys),
                config: BitcoinWatchConfig {
                    watch: btc.watch_config(),
                    confirmations: btc.chain.confirmations,
                    gap_limit: btc.chain.gap_limit,
                },
            };
            spawn_supervised(start, ledger, btc.max_reorg_depth, tasks, cancel);
        }
        let eth = &chains.ethereum;
        if eth.enabled {
            let client = EthereumClient::new(eth.rpc_url.expose(), eth.timeout())
                .context("config section `chains.ethereum`")?;
            let mut tokens = Vec::with_capacity(eth.chain.tokens.len());
            for (i, token) in eth.chain.tokens.iter().enumerate() {
                let contract: alloy_primitives::Address =
                    token.contract.parse().with_context(|| {
                        format!("config key `chains.ethereum.tokens[{i}].contract`")
                    })?;
                let asset = (token.asset.as_str(), token.decimals);
                register_token(
                    ledger,
                    Chain::Ethereum,
                    i,
                    asset,
                    contract.to_checksum(None),
                )
                .await?;
                tokens.push(indexer::deposits::ethereum::Token {
                    contract,
                    asset: token.asset.clone(),
                });
            }
            // What the hot wallet sends to a deposit address (a gas top-up)
            // is Coffer's own money moving, not a deposit.
            let hot_wallet = self
                .deposit_keys
                .hot_wallet_address(Chain::Ethereum)
                .context("the Ethereum hot wallet's address")?;
            let hot_wallet: alloy_primitives::Address = hot_wallet
                .address
                .parse()
                .context("the Ethereum hot wallet's address")?;
            let start = EthereumStart {
                client,
                expected: Expected {
                    identity: &ETHEREUM_CHAIN_ID,
                    network,
                    configured: eth.chain.chain_id,
                },
                config: EthereumWatchConfig {
                    watch: eth.watch_config(),
                    use_finalized_tag: eth.chain.use_finalized_tag,
                    confirmations: eth.chain.confirmations,
                    tokens,
                    own_senders: vec![hot_wallet],
                },
            };
            spawn_supervised(start, ledger, eth.max_reorg_depth, tasks, cancel);
        }
        let sol = &chains.solana;
        if sol.enabled {
            let client = SolanaClient::new(sol.rpc_url.expose(), sol.timeout())
                .context("config section `chains.solana`")?;
            let mut tokens = Vec::with_capacity(sol.chain.tokens.len());
            for (i, token) in sol.chain.tokens.iter().enumerate() {
                let asset = (token.asset.as_str(), token.decimals);
                register_token(ledger, Chain::Solana, i, asset, token.mint.clone()).await?;
                tokens.push(indexer::deposits::solana::SplToken {
                    mint: token.mint.clone(),
                    asset: token.asset.clone(),
                });
            }
            let start = SolanaStart {
                client,
                expected: Expected {
                    identity: &SOLANA_GENESIS_HASH,
                    network,
                    configured: sol.chain.genesis_hash.clone(),
                },
                config: SolanaWatchConfig {
                    watch: sol.watch_config(),
                    tokens,
                },
            };
            spawn_supervised(start, ledger, sol.max_reorg_depth, tasks, cancel);
        }
        Ok(())
    }
}

/// Registers allow-listed token `index` of `chain` as an asset (`(code,
/// decimals)`); a conflict with what is registered stops startup naming the
/// config key.
async fn register_token(
    ledger: &Ledger,
    chain: Chain,
    index: usize,
    (asset, decimals): (&str, u8),
    contract: String,
) -> anyhow::Result<()> {
    ledger
        .register_asset(&indexer::ledger::Asset {
            code: asset.to_owned(),
            chain,
            decimals,
            contract: Some(contract),
        })
        .await
        .with_context(|| format!("config key `chains.{chain}.tokens[{index}]`"))
}

/// What differs between chains in starting a watcher: asking the node
/// which network it is on, and the watcher itself.
trait ChainStart: Clone + Send + Sync + 'static {
    const CHAIN: Chain;
    /// The node's network as it names it, if it is the configured one.
    fn check_network(&self) -> impl Future<Output = Result<String, StartError>> + Send;
    /// The watcher over `store`, run until `cancel`.
    fn run(self, store: DepositStore, cancel: CancellationToken) -> WatcherRun;
}

#[derive(Clone)]
struct BitcoinStart {
    client: BitcoinClient,
    expected: BitcoinNetwork,
    keys: Arc<signer::DepositKeys>,
    config: BitcoinWatchConfig,
}

impl ChainStart for BitcoinStart {
    const CHAIN: Chain = Chain::Bitcoin;

    async fn check_network(&self) -> Result<String, StartError> {
        let reported = self.client.network_name().await.map_err(StartError::Node)?;
        check_bitcoin_network(self.expected, &reported).map_err(StartError::WrongNetwork)?;
        Ok(format!("network {reported}"))
    }

    fn run(self, store: DepositStore, cancel: CancellationToken) -> WatcherRun {
        let watcher = BitcoinWatcher::new(
            self.client,
            self.keys.bitcoin_account_xpub(),
            self.keys.bitcoin_network(),
            store,
            self.config,
        );
        Box::pin(watcher.run(cancel))
    }
}

#[derive(Clone)]
struct EthereumStart {
    client: EthereumClient,
    expected: Expected<u64>,
    config: EthereumWatchConfig,
}

impl ChainStart for EthereumStart {
    const CHAIN: Chain = Chain::Ethereum;

    async fn check_network(&self) -> Result<String, StartError> {
        let reported = self.client.chain_id().await.map_err(StartError::Node)?;
        self.expected
            .check(&reported)
            .map_err(StartError::WrongNetwork)
    }

    fn run(self, store: DepositStore, cancel: CancellationToken) -> WatcherRun {
        Box::pin(EthereumWatcher::new(self.client, store, self.config).run(cancel))
    }
}

#[derive(Clone)]
struct SolanaStart {
    client: SolanaClient,
    expected: Expected<str>,
    config: SolanaWatchConfig,
}

impl ChainStart for SolanaStart {
    const CHAIN: Chain = Chain::Solana;

    async fn check_network(&self) -> Result<String, StartError> {
        let reported = self.client.genesis_hash().await.map_err(StartError::Node)?;
        self.expected
            .check(&reported)
            .map_err(StartError::WrongNetwork)
    }

    fn run(self, store: DepositStore, cancel: CancellationToken) -> WatcherRun {
        Box::pin(SolanaWatcher::new(self.client, store, self.config).run(cancel))
    }
}

/// Runs `start`'s chain under [`supervise`]: each start checks the node's
/// network, then runs the watcher over a store of its own.
fn spawn_supervised<S: ChainStart>(
    start: S,
    ledger: &Ledger,
    max_reorg_depth: u64,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    cancel: &CancellationToken,
) {
    let (ledger, watcher_cancel) = (ledger.clone(), cancel.clone());
    let attempt = move || {
        let (start, ledger, cancel) = (start.clone(), ledger.clone(), watcher_cancel.clone());
        async move {
            let network = start.check_network().await?;
            tracing::info!(chain = %S::CHAIN, %network, "the node is on the configured network");
            let store = DepositStore::new(ledger, S::CHAIN, max_reorg_depth);
            Ok(start.run(store, cancel))
        }
    };
    tasks.spawn(supervise(
        Supervised::watcher(S::CHAIN),
        RESTART,
        attempt,
        cancel.clone(),
    ));
}

/// A started watcher's (or payout loop's) loop, run until cancellation.
pub(super) type WatcherRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why a chain's watcher (or payout loop) did not start.
#[derive(Debug)]
pub(super) enum StartError {
    /// The node is on another network than configured: the chain halts.
    WrongNetwork(String),
    /// The node could not be asked (down, or answering garbage): retried.
    Node(chains::Error),
    /// Anything else that kept it from starting: retried.
    Setup(String),
}

/// What a supervisor runs, as its log lines and metrics name it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Supervised {
    chain: Chain,
    /// `deposit watcher`, `payout loop`.
    name: &'static str,
    /// Gauge: 1 while it runs.
    up: &'static str,
    /// Counter of restarts.
    restarts: &'static str,
    /// Gauge: 1 once halted by a node on the wrong network.
    halted: &'static str,
}

impl Supervised {
    pub(super) fn watcher(chain: Chain) -> Self {
        Self {
            chain,
            name: "deposit watcher",
            up: WATCHER_UP,
            restarts: WATCHER_RESTARTS,
            halted: indexer::metrics::WATCHER_HALTED,
        }
    }

    pub(super) fn payout_loop(chain: Chain) -> Self {
        Self {
            chain,
            name: "payout loop",
            up: PAYOUT_LOOP_UP,
            restarts: PAYOUT_LOOP_RESTARTS,
            halted: PAYOUT_LOOP_HALTED,
        }
    }
}

/// Runs one chain's watcher or payout loop, restarting it with capped
/// exponential backoff whenever it cannot start or stops without being
/// cancelled (a panic). Never fails: one chain's trouble must not take
/// down the API or the other chains. A node on the wrong network halts it
/// until restart.
pub(super) async fn supervise<F, Fut>(
    what: Supervised,
    policy: RestartPolicy,
    mut start: F,
    cancel: CancellationToken,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<WatcherRun, StartError>> + Send,
{
    let Supervised { chain, name, .. } = what;
    let labels = [("chain", chain.as_str())];
    metrics::gauge!(what.up, &labels).set(0.0);
    let new_backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    loop {
        let started = tokio::select! {
            started = start() => started,
            () = cancel.cancelled() => return Ok(()),
        };
        let reason = match started {
            Ok(run) => {
                metrics::gauge!(what.up, &labels).set(1.0);
                let began = Instant::now();
                // Its own task, so a panic ends the task, not the supervisor;
                // the set aborts it if the supervisor itself is aborted.
                let mut running = JoinSet::new();
                running.spawn(run);
                let joined = running.join_next().await;
                metrics::gauge!(what.up, &labels).set(0.0);
                if cancel.is_cancelled() {
                    return Ok(());
                }
                if began.elapsed() >= policy.reset_after {
                    backoff = new_backoff();
                }
                match joined {
                    Some(Err(err)) if err.is_panic() => format!("the {name} panicked: {err}"),
                    _ => format!("the {name} stopped on its own"),
                }
            }
            Err(StartError::WrongNetwork(reason)) => {
                metrics::gauge!(what.halted, &labels).set(1.0);
                tracing::error!(%chain, %reason, "{name} halted: the node is on the wrong network; an operator must investigate");
                cancel.cancelled().await;
                return Ok(());
            }
            Err(StartError::Node(err)) => {
                metrics::gauge!(indexer::metrics::CHAIN_UP, &labels).set(0.0);
                format!("cannot check the node's network: {err}")
            }
            Err(StartError::Setup(reason)) => reason,
        };
        metrics::counter!(what.restarts, &labels).increment(1);
        let delay = backoff.next().unwrap_or(policy.max_delay);
        tracing::warn!(%chain, %reason, retry_in_ms = delay.as_millis() as u64, "{name} is down; restarting it");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A watcher that panics is restarted (with backoff) and shows as down
    /// meanwhile; one on the wrong network halts without restarts.
    #[tokio::test]
    async fn supervisor_restarts_a_panicking_watcher_and_halts_on_a_wrong_network() {
        let fast = RestartPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
            reset_after: Duration::from_secs(300),
        };
        let starts = Arc::new(AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let counted = Arc::clone(&starts);
        let watcher_cancel = cancel.clone();
        let supervisor = tokio::spawn(supervise(
            Supervised::watcher(Chain::Bitcoin),
            fast,
            move || {
                let attempt = counted.fetch_add(1, Ordering::SeqCst);
                let cancel = watcher_cancel.clone();
                async move {
                    match attempt {
                        0 => Err(StartError::Node(chains::Error::UnknownChain("x".into()))),
                        1 | 2 => Ok(Box::pin(async move {
                            if attempt > 0 {
                                panic!("decoder bug");
                            }
                        }) as WatcherRun),
                        // Like a real watcher: runs until cancelled.
                        _ => Ok(Box::pin(cancel.cancelled_owned()) as WatcherRun),
                    }
                }
            },
            cancel.clone(),
        ));
        for _ in 0..500 {
            if starts.load(Ordering::SeqCst) >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            starts.load(Ordering::SeqCst),
            4,
            "restarted after each failure"
        );
        assert!(!supervisor.is_finished(), "the supervisor never gives up");
        cancel.cancel();
        assert!(matches!(supervisor.await, Ok(Ok(()))));

        let halted = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&halted);
        let cancel = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(
            Supervised::payout_loop(Chain::Ethereum),
            fast,
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Err(StartError::WrongNetwork("wrong".into())) }
            },
            cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            halted.load(Ordering::SeqCst),
            1,
            "a wrong network is not retried"
        );
        assert!(!supervisor.is_finished(), "halted, waiting for shutdown");
        cancel.cancel();
        assert!(matches!(supervisor.await, Ok(Ok(()))));
    }
}
