//! Wiring: bind the listeners, connect and migrate the database, start the
//! chain watchers under supervision, serve gRPC and metrics, and stop
//! everything on one cancellation token.

use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use backon::{BackoffBuilder, ExponentialBuilder};
use chains::Chain;
use chains::bitcoin::{BitcoinAuth, BitcoinClient};
use chains::ethereum::EthereumClient;
use chains::solana::SolanaClient;
use indexer::db::PoolSettings;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Router as GrpcRouter, ServerTlsConfig, TcpIncoming};
use tonic::transport::{Identity, Server};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity as NoLayer, Stack};

use crate::auth::tokens::AccessTokens;
use crate::config::{
    BitcoinNetwork, ETHEREUM_MAINNET_CHAIN_ID, Network, SOLANA_MAINNET_GENESIS_HASH, Settings,
};
use crate::grpc::Shared;
use crate::grpc::auth::AuthApi;
use crate::grpc::history::HistoryApi;
use crate::grpc::pb::{
    self, auth_service_server::AuthServiceServer, history_service_server::HistoryServiceServer,
    settlement_service_server::SettlementServiceServer, wallet_service_server::WalletServiceServer,
};
use crate::grpc::settlement::SettlementApi;
use crate::grpc::wallet::WalletApi;
use crate::limits::CallLimitLayer;
use crate::metrics::{PoolGauge, WATCHER_RESTARTS, WATCHER_UP};

/// How long shutdown waits for tasks to finish in-flight work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// TCP keepalive on accepted sockets: a peer that vanished (no FIN, no RST)
/// is found after about two minutes instead of holding its connection forever.
const TCP_KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const TCP_KEEPALIVE_RETRIES: u32 = 4;

/// How often health asks PostgreSQL, and how long the answer may take.
const DB_PROBE_INTERVAL: Duration = Duration::from_secs(1);
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a chain's watcher is restarted: capped exponential backoff (with
/// jitter), from the shortest delay again after a run of `reset_after`.
#[derive(Clone, Copy, Debug)]
struct RestartPolicy {
    min_delay: Duration,
    max_delay: Duration,
    reset_after: Duration,
}

const RESTART: RestartPolicy = RestartPolicy {
    min_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(60),
    reset_after: Duration::from_secs(300),
};

/// A daemon with its listeners bound, ready to [`App::run`].
#[derive(Debug)]
pub struct App {
    settings: Settings,
    tokens: Arc<AccessTokens>,
    deposit_keys: Arc<signer::DepositKeys>,
    tls: Option<ServerTlsConfig>,
    grpc: Option<TcpListener>,
    metrics: Option<TcpListener>,
}

/// The gRPC router behind the server-wide call limits.
type LimitedRouter = GrpcRouter<Stack<CallLimitLayer, NoLayer>>;

impl App {
    /// Binds the enabled listeners (port 0 picks a free port), so the
    /// addresses are known before anything runs.
    pub async fn bind(settings: Settings) -> anyhow::Result<Self> {
        let tls = load_tls(&settings)?;
        let grpc = match settings.grpc.enabled {
            true => Some(
                TcpListener::bind(settings.grpc.listen)
                    .await
                    .with_context(|| format!("bind grpc.listen {}", settings.grpc.listen))?,
            ),
            false => None,
        };
        let metrics = match settings.metrics.enabled {
            true => Some(
                TcpListener::bind(settings.metrics.listen)
                    .await
                    .with_context(|| format!("bind metrics.listen {}", settings.metrics.listen))?,
            ),
            false => None,
        };
        let auth = &settings.auth;
        let keys: Vec<(String, Vec<u8>)> = auth
            .keys
            .iter()
            .map(|key| (key.kid.clone(), key.secret.expose().as_bytes().to_vec()))
            .collect();
        let tokens = AccessTokens::new(
            &auth.issuer,
            &auth.audience,
            auth.access_ttl_secs,
            &auth.active_kid,
            &keys,
        )
        .context("config section `auth`")?;
        let deposit_keys = Arc::new(load_deposit_keys(&settings)?);
        Ok(Self {
            settings,
            tokens: Arc::new(tokens),
            deposit_keys,
            tls,
            grpc,
            metrics,
        })
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Runs until `cancel` fires, then shuts down gracefully. Serving starts
    /// at once; gRPC health reports NOT_SERVING until PostgreSQL is connected
    /// and migrated (retried for as long as it takes), and again whenever
    /// PostgreSQL stops answering.
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        let started = Instant::now();
        let prometheus = crate::metrics::recorder();
        let pools = Arc::new(Pools::default());
        let mut tasks = JoinSet::new();

        if let Some(listener) = self.metrics.take() {
            let state = MetricsState {
                prometheus,
                started,
                pools: Arc::clone(&pools),
                max_connections: self.settings.database.max_connections,
                background_max_connections: self.settings.database.background_max_connections,
            };
            tracing::info!(address = %listener.local_addr()?, "metrics endpoint listening on /metrics");
            tasks.spawn(serve_metrics(listener, state, cancel.clone()));
        }

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let readiness = Readiness::new(reporter);
        readiness.set(false).await;
        if let Some(listener) = self.grpc.take() {
            tracing::info!(
                address = %listener.local_addr()?,
                tls = self.tls.is_some(),
                "gRPC server listening"
            );
            let router = self.grpc_router(health_service, &pools.api)?;
            let incoming = TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(TCP_KEEPALIVE_TIME))
                .with_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL))
                .with_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
            let shutdown = cancel.clone();
            tasks.spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                    .await
                    .context("gRPC server failed")
            });
        }

        let database = &self.settings.database;
        let connect_options = PgConnectOptions::from_str(database.url.expose())
            .context("config key `database.url`")?;
        let pool_settings = PoolSettings {
            max_connections: database.max_connections,
            acquire_timeout: self.settings.database_acquire_timeout(),
        };
        let pool =
            indexer::db::connect_with_retry(connect_options.clone(), &pool_settings, &cancel).await;
        let result = match pool {
            Some(api_pool) => {
                // Watchers and other background work get a pool of their
                // own, so no flood of requests can take their connections.
                let background = PgPoolOptions::new()
                    .max_connections(database.background_max_connections)
                    .acquire_timeout(self.settings.database_acquire_timeout())
                    .connect_lazy_with(connect_options);
                let _ = pools.background.set(background.clone());
                self.start_with_database(
                    api_pool, background, &pools, &readiness, &mut tasks, &cancel,
                )
                .await
            }
            None => Ok(()),
        };
        if let Err(err) = &result {
            tracing::error!(error = %format!("{err:#}"), "startup failed; shutting down");
            cancel.cancel();
        }

        // A task ending on its own (a server failing) stops the others too.
        let mut first_error = result.err();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                joined = tasks.join_next() => match joined {
                    None => {
                        cancel.cancelled().await;
                        break;
                    }
                    Some(outcome) => {
                        if let Some(err) = task_error(outcome) {
                            tracing::error!(error = %format!("{err:#}"), "component failed; shutting down");
                            first_error.get_or_insert(err);
                            cancel.cancel();
                            break;
                        }
                    }
                },
            }
        }

        tracing::info!("shutting down");
        readiness.stop().await;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(outcome) = tasks.join_next().await {
                if let Some(err) = task_error(outcome) {
                    tracing::warn!(error = %format!("{err:#}"), "component failed while stopping");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_secs = SHUTDOWN_GRACE.as_secs(),
                "tasks still running after the grace period; aborting them"
            );
            tasks.shutdown().await;
        }
        for pool in [pools.api.get(), pools.background.get()]
            .into_iter()
            .flatten()
        {
            pool.close().await;
        }
        tracing::info!("stopped");
        first_error.map_or(Ok(()), Err)
    }

    /// Every gRPC service behind the server's limits. They share the pool
    /// through `pool_cell`, which is empty (calls answer UNAVAILABLE) until
    /// the database is migrated.
    fn grpc_router(
        &self,
        health_service: tonic_health::pb::health_server::HealthServer<
            impl tonic_health::pb::health_server::Health,
        >,
        pool_cell: &Arc<OnceLock<PgPool>>,
    ) -> anyhow::Result<LimitedRouter> {
        let grpc = &self.settings.grpc;
        let max_message = grpc.max_message_bytes;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let shared = Shared::new(
            Arc::clone(pool_cell),
            Arc::clone(&self.tokens),
            Arc::clone(&self.deposit_keys),
        );
        let auth_api =
            AuthApi::new(shared.clone(), &self.settings.auth).map_err(anyhow::Error::msg)?;
        let mut server = Server::builder();
        if let Some(tls) = &self.tls {
            server = server
                .tls_config(tls.clone())
                .context("config key `grpc.tls.cert_file`")?;
        }
        let router = server
            .layer(CallLimitLayer::new(
                grpc.concurrency_limit,
                grpc.queue_limit,
                Duration::from_millis(grpc.request_timeout_ms),
            ))
            .add_service(
                health_service
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                AuthServiceServer::new(auth_api)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .add_service(
                WalletServiceServer::new(WalletApi::new(shared.clone()))
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .add_service(
                HistoryServiceServer::new(HistoryApi::new(shared.clone()))
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .add_service(
                SettlementServiceServer::new(SettlementApi::new(
                    shared,
                    self.settings.settlement.trade_fee_bps,
                ))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            );
        Ok(router)
    }

    async fn start_with_database(
        &self,
        api_pool: PgPool,
        background: PgPool,
        pools: &Pools,
        readiness: &Readiness,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        indexer::db::migrate(&api_pool)
            .await
            .context("apply migrations")?;
        tracing::info!("database migrated");
        let _ = pools.api.set(api_pool);
        self.spawn_watchers(&background, tasks, cancel).await?;
        tasks.spawn(expire_offers(background.clone(), cancel.clone()));
        let events = &self.settings.events;
        if events.enabled {
            let relay = indexer::events::EventRelay::new(
                background.clone(),
                &events.brokers,
                &events.topic,
            )
            .context("config section `events`")?;
            let cancel = cancel.clone();
            tasks.spawn(async move {
                relay.run(cancel).await;
                Ok(())
            });
        }
        pools.reachable.store(true, Ordering::Relaxed);
        readiness.set(true).await;
        tasks.spawn(watch_database(
            background,
            readiness.clone(),
            Arc::clone(&pools.reachable),
            cancel.clone(),
        ));
        Ok(())
    }

    /// Registers each enabled chain's tokens (a conflict stops startup,
    /// naming the key), then starts its watcher under a supervisor: a chain
    /// whose node is down, answers garbage or is on the wrong network never
    /// stops the API or the other chains.
    async fn spawn_watchers(
        &self,
        pool: &PgPool,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let network = self.settings.network;
        let chains = &self.settings.chains;
        if chains.bitcoin.enabled {
            let btc = &chains.bitcoin;
            let auth = match (&btc.cookie_file, &btc.rpc_user, &btc.rpc_password) {
                (Some(path), _, _) => BitcoinAuth::CookieFile(path.clone()),
                (None, Some(user), Some(password)) => BitcoinAuth::UserPass {
                    user: user.clone(),
                    password: password.expose().to_owned(),
                },
                _ => BitcoinAuth::None,
            };
            let client = BitcoinClient::new(
                btc.rpc_url.expose(),
                auth,
                Duration::from_millis(btc.timeout_ms),
            )
            .context("config section `chains.bitcoin`")?;
            let config = indexer::deposits::bitcoin::BitcoinWatchConfig {
                watch: indexer::deposits::watcher::WatchConfig {
                    start_height: btc.start_height,
                    max_reorg_depth: btc.max_reorg_depth,
                    batch_blocks: btc.batch_blocks,
                    fetch_concurrency: btc.fetch_concurrency,
                    fetch_ahead: indexer::deposits::watcher::FETCH_AHEAD,
                    poll_interval: Duration::from_millis(btc.poll_interval_ms),
                },
                confirmations: btc.confirmations,
                gap_limit: btc.gap_limit,
            };
            let expected = btc.network;
            let max_reorg_depth = btc.max_reorg_depth;
            let xpub = self.deposit_keys.bitcoin_account_xpub();
            let address_network = self.deposit_keys.bitcoin_network();
            let (pool, watcher_cancel) = (pool.clone(), cancel.clone());
            let start = move || {
                let (client, pool, config) = (client.clone(), pool.clone(), config.clone());
                let cancel = watcher_cancel.clone();
                async move {
                    let reported = client.network_name().await.map_err(StartError::Node)?;
                    check_bitcoin_network(expected, &reported).map_err(StartError::WrongNetwork)?;
                    tracing::info!(chain = "bitcoin", network = %reported, "the node is on the configured network");
                    let store = indexer::deposits::DepositStore::new(
                        indexer::ledger::Ledger::new(pool),
                        Chain::Bitcoin,
                        max_reorg_depth,
                    );
                    let watcher = indexer::deposits::bitcoin::BitcoinWatcher::new(
                        client,
                        xpub,
                        address_network,
                        store,
                        config,
                    );
                    Ok(Box::pin(watcher.run(cancel)) as WatcherRun)
                }
            };
            tasks.spawn(supervise(Chain::Bitcoin, RESTART, start, cancel.clone()));
        }
        if chains.ethereum.enabled {
            let eth = &chains.ethereum;
            let client =
                EthereumClient::new(eth.rpc_url.expose(), Duration::from_millis(eth.timeout_ms))
                    .context("config section `chains.ethereum`")?;
            let ledger = indexer::ledger::Ledger::new(pool.clone());
            let mut tokens = Vec::with_capacity(eth.tokens.len());
            for (i, token) in eth.tokens.iter().enumerate() {
                let contract: alloy_primitives::Address =
                    token.contract.parse().with_context(|| {
                        format!("config key `chains.ethereum.tokens[{i}].contract`")
                    })?;
                let key = format!("chains.ethereum.tokens[{i}]");
                register_token(
                    &ledger,
                    Chain::Ethereum,
                    &key,
                    &token.asset,
                    token.decimals,
                    contract.to_checksum(None),
                )
                .await?;
                tokens.push(indexer::deposits::ethereum::Token {
                    contract,
                    asset: token.asset.clone(),
                });
            }
            let config = indexer::deposits::ethereum::EthereumWatchConfig {
                watch: indexer::deposits::watcher::WatchConfig {
                    start_height: eth.start_height,
                    max_reorg_depth: eth.max_reorg_depth,
                    batch_blocks: eth.batch_blocks,
                    fetch_concurrency: eth.fetch_concurrency,
                    fetch_ahead: indexer::deposits::watcher::FETCH_AHEAD,
                    poll_interval: Duration::from_millis(eth.poll_interval_ms),
                },
                use_finalized_tag: eth.use_finalized_tag,
                confirmations: eth.confirmations,
                tokens,
            };
            let configured = eth.chain_id;
            let max_reorg_depth = eth.max_reorg_depth;
            let (pool, watcher_cancel) = (pool.clone(), cancel.clone());
            let start = move || {
                let (client, pool, config) = (client.clone(), pool.clone(), config.clone());
                let cancel = watcher_cancel.clone();
                async move {
                    let reported = client.chain_id().await.map_err(StartError::Node)?;
                    check_ethereum_chain_id(network, configured, reported)
                        .map_err(StartError::WrongNetwork)?;
                    tracing::info!(
                        chain = "ethereum",
                        chain_id = reported,
                        "the node is on the configured network"
                    );
                    let store = indexer::deposits::DepositStore::new(
                        indexer::ledger::Ledger::new(pool),
                        Chain::Ethereum,
                        max_reorg_depth,
                    );
                    let watcher =
                        indexer::deposits::ethereum::EthereumWatcher::new(client, store, config);
                    Ok(Box::pin(watcher.run(cancel)) as WatcherRun)
                }
            };
            tasks.spawn(supervise(Chain::Ethereum, RESTART, start, cancel.clone()));
        }
        if chains.solana.enabled {
            let sol = &chains.solana;
            let client =
                SolanaClient::new(sol.rpc_url.expose(), Duration::from_millis(sol.timeout_ms))
                    .context("config section `chains.solana`")?;
            let ledger = indexer::ledger::Ledger::new(pool.clone());
            let mut tokens = Vec::with_capacity(sol.tokens.len());
            for (i, token) in sol.tokens.iter().enumerate() {
                let key = format!("chains.solana.tokens[{i}]");
                register_token(
                    &ledger,
                    Chain::Solana,
                    &key,
                    &token.asset,
                    token.decimals,
                    token.mint.clone(),
                )
                .await?;
                tokens.push(indexer::deposits::solana::SplToken {
                    mint: token.mint.clone(),
                    asset: token.asset.clone(),
                });
            }
            let config = indexer::deposits::solana::SolanaWatchConfig {
                watch: indexer::deposits::watcher::WatchConfig {
                    start_height: sol.start_slot,
                    max_reorg_depth: sol.max_reorg_depth,
                    batch_blocks: sol.batch_slots,
                    fetch_concurrency: sol.fetch_concurrency,
                    fetch_ahead: indexer::deposits::watcher::FETCH_AHEAD,
                    poll_interval: Duration::from_millis(sol.poll_interval_ms),
                },
                tokens,
            };
            let configured = sol.genesis_hash.clone();
            let max_reorg_depth = sol.max_reorg_depth;
            let (pool, watcher_cancel) = (pool.clone(), cancel.clone());
            let start = move || {
                let (client, pool, config) = (client.clone(), pool.clone(), config.clone());
                let (cancel, configured) = (watcher_cancel.clone(), configured.clone());
                async move {
                    let reported = client.genesis_hash().await.map_err(StartError::Node)?;
                    check_solana_genesis(network, configured.as_deref(), &reported)
                        .map_err(StartError::WrongNetwork)?;
                    tracing::info!(chain = "solana", genesis_hash = %reported, "the node is on the configured network");
                    let store = indexer::deposits::DepositStore::new(
                        indexer::ledger::Ledger::new(pool),
                        Chain::Solana,
                        max_reorg_depth,
                    );
                    let watcher =
                        indexer::deposits::solana::SolanaWatcher::new(client, store, config);
                    Ok(Box::pin(watcher.run(cancel)) as WatcherRun)
                }
            };
            tasks.spawn(supervise(Chain::Solana, RESTART, start, cancel.clone()));
        }
        Ok(())
    }
}

/// Loads `grpc.tls` into a server TLS config (rustls), checked the way the
/// server will use it, so a bad certificate or key fails at start naming
/// the key. `None` without TLS.
pub fn load_tls(settings: &Settings) -> anyhow::Result<Option<ServerTlsConfig>> {
    install_crypto_provider();
    let tls = &settings.grpc.tls;
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
        return Ok(None);
    };
    let cert = std::fs::read(cert_file)
        .with_context(|| format!("config key `grpc.tls.cert_file`: {}", cert_file.display()))?;
    let key = std::fs::read(key_file)
        .with_context(|| format!("config key `grpc.tls.key_file`: {}", key_file.display()))?;
    let config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    Server::builder().tls_config(config.clone()).map_err(|err| {
        anyhow::anyhow!(
            "config key `grpc.tls.cert_file` (with `grpc.tls.key_file`): not a usable PEM certificate chain and private key: {err}"
        )
    })?;
    Ok(Some(config))
}

/// Makes ring rustls's process-wide crypto provider. The dependency tree
/// enables both ring and aws-lc-rs, and with two rustls cannot pick one, so
/// TLS would panic at first use. Idempotent.
pub fn install_crypto_provider() {
    // Fails only if a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Registers an allow-listed token as an asset; a conflict with what is
/// registered stops startup naming the config key.
async fn register_token(
    ledger: &indexer::ledger::Ledger,
    chain: Chain,
    key: &str,
    asset: &str,
    decimals: u8,
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
        .with_context(|| format!("config key `{key}`"))
}

/// A started watcher's loop, run until cancellation.
type WatcherRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why a chain's watcher did not start.
#[derive(Debug)]
enum StartError {
    /// The node is on another network than configured: the chain halts.
    WrongNetwork(String),
    /// The node could not be asked (down, or answering garbage): retried.
    Node(chains::Error),
}

/// Runs one chain's watcher, restarting it with capped exponential backoff
/// whenever it cannot start or stops without being cancelled (a panic).
/// Never fails: one chain's trouble must not take down the API or the other
/// chains. A node on the wrong network halts the chain until restart.
async fn supervise<F, Fut>(
    chain: Chain,
    policy: RestartPolicy,
    mut start: F,
    cancel: CancellationToken,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<WatcherRun, StartError>> + Send,
{
    let labels = [("chain", chain.as_str())];
    metrics::gauge!(WATCHER_UP, &labels).set(0.0);
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
                metrics::gauge!(WATCHER_UP, &labels).set(1.0);
                let began = Instant::now();
                // Its own task, so a panic ends the task, not the supervisor;
                // the set aborts it if the supervisor itself is aborted.
                let mut running = JoinSet::new();
                running.spawn(run);
                let joined = running.join_next().await;
                metrics::gauge!(WATCHER_UP, &labels).set(0.0);
                if cancel.is_cancelled() {
                    return Ok(());
                }
                if began.elapsed() >= policy.reset_after {
                    backoff = new_backoff();
                }
                match joined {
                    Some(Err(err)) if err.is_panic() => format!("the watcher panicked: {err}"),
                    _ => "the watcher stopped on its own".to_owned(),
                }
            }
            Err(StartError::WrongNetwork(reason)) => {
                metrics::gauge!(indexer::metrics::WATCHER_HALTED, &labels).set(1.0);
                tracing::error!(%chain, %reason, "deposit watcher halted: the node is on the wrong network; an operator must investigate");
                cancel.cancelled().await;
                return Ok(());
            }
            Err(StartError::Node(err)) => {
                metrics::gauge!(indexer::metrics::CHAIN_UP, &labels).set(0.0);
                format!("cannot check the node's network: {err}")
            }
        };
        metrics::counter!(WATCHER_RESTARTS, &labels).increment(1);
        let delay = backoff.next().unwrap_or(policy.max_delay);
        tracing::warn!(%chain, %reason, retry_in_ms = delay.as_millis() as u64, "deposit watcher is down; restarting it");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return Ok(()),
        }
    }
}

/// Bitcoin Core's and btcd's `getblockchaininfo` names for each network.
fn bitcoin_chain_names(network: BitcoinNetwork) -> &'static [&'static str] {
    match network {
        BitcoinNetwork::Bitcoin => &["main", "mainnet"],
        BitcoinNetwork::Testnet => &["test", "testnet3", "testnet4"],
        BitcoinNetwork::Signet => &["signet"],
        BitcoinNetwork::Regtest => &["regtest"],
    }
}

/// The node's `getblockchaininfo.chain` against `chains.bitcoin.network`.
pub fn check_bitcoin_network(expected: BitcoinNetwork, reported: &str) -> Result<(), String> {
    if bitcoin_chain_names(expected).contains(&reported) {
        return Ok(());
    }
    let expected = format!("{expected:?}").to_lowercase();
    Err(format!(
        "config key `chains.bitcoin.network`: the node at chains.bitcoin.rpc_url is on `{reported}`, \
         not `{expected}`; point chains.bitcoin.rpc_url at a {expected} node or correct the key"
    ))
}

/// The node's `eth_chainId` against `chains.ethereum.chain_id`; unset, the
/// network decides: mainnet wants chain 1, anything else any chain but 1.
pub fn check_ethereum_chain_id(
    network: Network,
    configured: Option<u64>,
    reported: u64,
) -> Result<(), String> {
    const KEY: &str = "chains.ethereum.chain_id";
    let mainnet = ETHEREUM_MAINNET_CHAIN_ID;
    let wrong = |why: String| {
        Err(format!(
            "config key `{KEY}`: the node at chains.ethereum.rpc_url reports chain id {reported}, {why}"
        ))
    };
    match configured {
        Some(id) if id == reported => Ok(()),
        Some(id) => wrong(format!("expected {id}")),
        None if network == Network::Mainnet && reported != mainnet => wrong(format!(
            "but network = \"mainnet\" needs Ethereum mainnet ({mainnet})"
        )),
        None if network != Network::Mainnet && reported == mainnet => wrong(format!(
            "Ethereum mainnet, but network = \"{}\"; mainnet needs network = \"mainnet\"",
            format!("{network:?}").to_lowercase()
        )),
        None => Ok(()),
    }
}

/// The node's `getGenesisHash` against `chains.solana.genesis_hash`; unset,
/// the network decides: mainnet wants mainnet-beta's, anything else any
/// cluster but mainnet-beta (each fresh local validator has its own).
pub fn check_solana_genesis(
    network: Network,
    configured: Option<&str>,
    reported: &str,
) -> Result<(), String> {
    const KEY: &str = "chains.solana.genesis_hash";
    let mainnet = SOLANA_MAINNET_GENESIS_HASH;
    let wrong = |why: String| {
        Err(format!(
            "config key `{KEY}`: the node at chains.solana.rpc_url reports genesis hash {reported}, {why}"
        ))
    };
    match configured {
        Some(hash) if hash == reported => Ok(()),
        Some(hash) => wrong(format!("expected {hash}")),
        None if network == Network::Mainnet && reported != mainnet => wrong(format!(
            "but network = \"mainnet\" needs mainnet-beta ({mainnet})"
        )),
        None if network != Network::Mainnet && reported == mainnet => wrong(format!(
            "mainnet-beta's, but network = \"{}\"; mainnet needs network = \"mainnet\"",
            format!("{network:?}").to_lowercase()
        )),
        None => Ok(()),
    }
}

fn task_error(
    outcome: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> Option<anyhow::Error> {
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err),
        Err(join) if join.is_cancelled() => None,
        Err(join) => Some(anyhow::anyhow!("task panicked: {join}")),
    }
}

/// The database pools, once connected, and whether PostgreSQL answers.
#[derive(Debug, Default)]
struct Pools {
    /// gRPC requests; shared with the services.
    api: Arc<OnceLock<PgPool>>,
    /// Watchers, event relay, offer expiry and the health probe.
    background: OnceLock<PgPool>,
    /// Whether PostgreSQL answered the last health probe.
    reachable: Arc<AtomicBool>,
}

/// The overall gRPC health status. Once stopping it stays NOT_SERVING, so a
/// database probe that finishes during shutdown cannot report SERVING again.
#[derive(Clone)]
struct Readiness {
    reporter: HealthReporter,
    stopping: Arc<tokio::sync::Mutex<bool>>,
}

impl Readiness {
    fn new(reporter: HealthReporter) -> Self {
        Self {
            reporter,
            stopping: Arc::default(),
        }
    }

    async fn set(&self, serving: bool) {
        let stopping = self.stopping.lock().await;
        if !*stopping {
            self.reporter
                .set_service_status("", serving_status(serving))
                .await;
        }
    }

    async fn stop(&self) {
        let mut stopping = self.stopping.lock().await;
        *stopping = true;
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}

fn serving_status(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Asks PostgreSQL every second; health is NOT_SERVING while it does not
/// answer within [`DB_PROBE_TIMEOUT`] and SERVING again once it does.
async fn watch_database(
    pool: PgPool,
    readiness: Readiness,
    reachable: Arc<AtomicBool>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut up = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(DB_PROBE_INTERVAL) => {}
            () = cancel.cancelled() => return Ok(()),
        }
        let probe = tokio::time::timeout(DB_PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&pool));
        let answer = tokio::select! {
            answer = probe => answer,
            () = cancel.cancelled() => return Ok(()),
        };
        let error = match answer {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some(format!(
                "no answer within {} ms",
                DB_PROBE_TIMEOUT.as_millis()
            )),
        };
        if error.is_none() != up {
            up = error.is_none();
            reachable.store(up, Ordering::Relaxed);
            match &error {
                Some(error) => {
                    tracing::error!(%error, "PostgreSQL is unreachable; health NOT_SERVING")
                }
                None => tracing::info!("PostgreSQL answers again; health SERVING"),
            }
            readiness.set(up).await;
        }
    }
}

#[derive(Clone)]
struct MetricsState {
    prometheus: PrometheusHandle,
    started: Instant,
    pools: Arc<Pools>,
    max_connections: u32,
    background_max_connections: u32,
}

/// Sets `TCP_NODELAY` and keepalive on an accepted socket. Without
/// `TCP_NODELAY` Nagle's algorithm holds a response's last segment until
/// the client's delayed ACK: about 15 ms per call.
fn tune_accepted(stream: &TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::warn!(error = %err, "cannot set TCP_NODELAY on an accepted socket");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_TIME)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_RETRIES);
    if let Err(err) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::warn!(error = %err, "cannot set TCP keepalive on an accepted socket");
    }
}

async fn serve_metrics(
    listener: TcpListener,
    state: MetricsState,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let router = Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(state);
    axum::serve(listener.tap_io(|stream| tune_accepted(stream)), router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .context("metrics server failed")
}

async fn render_metrics(State(state): State<MetricsState>) -> impl IntoResponse {
    let pools = &state.pools;
    crate::metrics::refresh(
        state.started,
        &[
            PoolGauge {
                name: "api",
                pool: pools.api.get(),
                max_connections: state.max_connections,
            },
            PoolGauge {
                name: "background",
                pool: pools.background.get(),
                max_connections: state.background_max_connections,
            },
        ],
        pools.api.get().is_some() && pools.reachable.load(Ordering::Relaxed),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.prometheus.render(),
    )
}

/// Loads the custody seed named by `[signer]` (the public devnet phrase when
/// none is named, which `Settings::validate` refuses on mainnet).
pub fn load_deposit_keys(settings: &Settings) -> anyhow::Result<signer::DepositKeys> {
    use signer::{HdSeed, SeedPhrase, SeedSource};
    let source = match (&settings.signer.seed_file, &settings.signer.seed_env) {
        (Some(path), _) => Some(SeedSource::File(path.clone())),
        (None, Some(var)) => Some(SeedSource::Env(var.clone())),
        (None, None) => None,
    };
    let phrase = match source {
        Some(source) => SeedPhrase::load(&source).context("config section `signer`")?,
        None => {
            tracing::warn!(
                "no signer.seed_file or signer.seed_env: using the PUBLIC devnet seed phrase; never hold real funds"
            );
            SeedPhrase::from_words(signer::INSECURE_DEVNET_MNEMONIC)
        }
    };
    let mainnet = settings.network == Network::Mainnet;
    HdSeed::check_allowed(&phrase, mainnet).context("config section `signer`")?;
    let seed = HdSeed::from_phrase(&phrase, "").context("config section `signer`")?;
    let network = match settings.chains.bitcoin.network {
        BitcoinNetwork::Bitcoin => signer::BitcoinNetwork::Bitcoin,
        BitcoinNetwork::Testnet => signer::BitcoinNetwork::Testnet,
        BitcoinNetwork::Signet => signer::BitcoinNetwork::Signet,
        BitcoinNetwork::Regtest => signer::BitcoinNetwork::Regtest,
    };
    Ok(signer::DepositKeys::new(seed, network)?)
}

/// Releases the holds of expired offers, once a second. Several processes
/// may run it: each offer's row lock lets exactly one finish it.
async fn expire_offers(pool: PgPool, cancel: CancellationToken) -> anyhow::Result<()> {
    let ledger = indexer::ledger::Ledger::new(pool);
    loop {
        match ledger.expire_offers(chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "offers expired"),
            Err(err) => tracing::warn!(error = %err, "expiring offers failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = cancel.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn bitcoin_networks_accept_both_core_and_btcd_names() {
        assert!(check_bitcoin_network(BitcoinNetwork::Regtest, "regtest").is_ok());
        assert!(check_bitcoin_network(BitcoinNetwork::Bitcoin, "main").is_ok());
        assert!(check_bitcoin_network(BitcoinNetwork::Bitcoin, "mainnet").is_ok());
        assert!(check_bitcoin_network(BitcoinNetwork::Testnet, "testnet4").is_ok());
        let err = check_bitcoin_network(BitcoinNetwork::Bitcoin, "regtest").err();
        assert!(
            err.as_deref()
                .is_some_and(|e| e.starts_with("config key `chains.bitcoin.network`")),
            "{err:?}"
        );
        assert!(check_bitcoin_network(BitcoinNetwork::Regtest, "simnet").is_err());
    }

    #[test]
    fn ethereum_chain_id_is_the_configured_one_or_follows_the_network() {
        use Network::{Devnet, Mainnet};
        assert!(check_ethereum_chain_id(Devnet, None, 31_337).is_ok());
        assert!(check_ethereum_chain_id(Devnet, Some(31_337), 31_337).is_ok());
        assert!(check_ethereum_chain_id(Mainnet, None, 1).is_ok());
        for (network, configured, reported) in [
            (Devnet, Some(5), 31_337),
            (Mainnet, None, 31_337),
            (Devnet, None, 1),
            (Mainnet, Some(1), 11_155_111),
        ] {
            let err = check_ethereum_chain_id(network, configured, reported).err();
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.starts_with("config key `chains.ethereum.chain_id`")),
                "{network:?} {configured:?} {reported}: {err:?}"
            );
        }
    }

    #[test]
    fn solana_genesis_is_the_configured_one_or_follows_the_network() {
        use Network::{Devnet, Mainnet, Testnet};
        let local = "4uhcVJyU9pJkvQyS88uRDiswHXSCkY3zQawwpjk2NsNY";
        assert!(check_solana_genesis(Devnet, None, local).is_ok());
        assert!(check_solana_genesis(Testnet, Some(local), local).is_ok());
        assert!(check_solana_genesis(Mainnet, None, SOLANA_MAINNET_GENESIS_HASH).is_ok());
        for (network, configured, reported) in [
            (Devnet, Some(SOLANA_MAINNET_GENESIS_HASH), local),
            (Mainnet, None, local),
            (Devnet, None, SOLANA_MAINNET_GENESIS_HASH),
        ] {
            let err = check_solana_genesis(network, configured, reported).err();
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.starts_with("config key `chains.solana.genesis_hash`")),
                "{network:?} {configured:?} {reported}: {err:?}"
            );
        }
    }

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
            Chain::Bitcoin,
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
            Chain::Ethereum,
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
