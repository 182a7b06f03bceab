//! Wiring: bind the listeners, connect and migrate the database, start the
//! chain watchers, serve gRPC and metrics, and stop everything on one
//! cancellation token.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use chains::bitcoin::{BitcoinAuth, BitcoinClient};
use chains::ethereum::EthereumClient;
use chains::solana::SolanaClient;
use indexer::db::PoolSettings;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::auth::tokens::AccessTokens;
use crate::config::Settings;
use crate::grpc::Shared;
use crate::grpc::auth::AuthApi;
use crate::grpc::history::HistoryApi;
use crate::grpc::pb::{
    self, auth_service_server::AuthServiceServer, history_service_server::HistoryServiceServer,
    settlement_service_server::SettlementServiceServer, wallet_service_server::WalletServiceServer,
};
use crate::grpc::settlement::SettlementApi;
use crate::grpc::throttle::LoginThrottle;
use crate::grpc::wallet::WalletApi;

/// How long shutdown waits for tasks to finish in-flight work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A daemon with its listeners bound, ready to [`App::run`].
#[derive(Debug)]
pub struct App {
    settings: Settings,
    tokens: Arc<AccessTokens>,
    deposit_keys: Arc<signer::DepositKeys>,
    grpc: Option<TcpListener>,
    metrics: Option<TcpListener>,
}

impl App {
    /// Binds the enabled listeners (port 0 picks a free port), so the
    /// addresses are known before anything runs.
    pub async fn bind(settings: Settings) -> anyhow::Result<Self> {
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
    /// and migrated, which is retried for as long as it takes.
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        let started = Instant::now();
        let prometheus = crate::metrics::recorder();
        let pool_cell: Arc<OnceLock<PgPool>> = Arc::new(OnceLock::new());
        let mut tasks = JoinSet::new();

        if let Some(listener) = self.metrics.take() {
            let state = MetricsState {
                prometheus,
                started,
                pool: Arc::clone(&pool_cell),
                max_connections: self.settings.database.max_connections,
            };
            tracing::info!(address = %listener.local_addr()?, "metrics endpoint listening on /metrics");
            tasks.spawn(serve_metrics(listener, state, cancel.clone()));
        }

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        if let Some(listener) = self.grpc.take() {
            tracing::info!(address = %listener.local_addr()?, "gRPC server listening");
            let router = self.grpc_router(health_service, &pool_cell)?;
            let shutdown = cancel.clone();
            tasks.spawn(async move {
                router
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(listener),
                        shutdown.cancelled_owned(),
                    )
                    .await
                    .context("gRPC server failed")
            });
        }

        let connect_options = PgConnectOptions::from_str(self.settings.database.url.expose())
            .context("config key `database.url`")?;
        let pool_settings = PoolSettings {
            max_connections: self.settings.database.max_connections,
            acquire_timeout: self.settings.database_acquire_timeout(),
        };
        let pool = indexer::db::connect_with_retry(connect_options, &pool_settings, &cancel).await;
        let result = match pool {
            Some(pool) => {
                self.start_with_database(pool, &pool_cell, &health, &mut tasks, &cancel)
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
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
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
        if let Some(pool) = pool_cell.get() {
            pool.close().await;
        }
        tracing::info!("stopped");
        first_error.map_or(Ok(()), Err)
    }

    /// Every gRPC service. They share the pool through `pool_cell`, which is
    /// empty (calls answer UNAVAILABLE) until the database is migrated.
    fn grpc_router(
        &self,
        health_service: tonic_health::pb::health_server::HealthServer<
            impl tonic_health::pb::health_server::Health,
        >,
        pool_cell: &Arc<OnceLock<PgPool>>,
    ) -> anyhow::Result<tonic::transport::server::Router> {
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
        let auth = &self.settings.auth;
        let throttle = LoginThrottle::new(
            auth.login_failures_per_account_and_client,
            auth.login_failures_per_client,
            Duration::from_secs(auth.login_window_secs),
        );
        let auth_api = AuthApi::new(
            shared.clone(),
            Duration::from_secs(auth.refresh_ttl_days * 86_400),
            throttle,
        );
        let router = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(AuthServiceServer::new(auth_api))
            .add_service(WalletServiceServer::new(WalletApi::new(shared.clone())))
            .add_service(HistoryServiceServer::new(HistoryApi::new(shared.clone())))
            .add_service(SettlementServiceServer::new(SettlementApi::new(
                shared,
                self.settings.settlement.trade_fee_bps,
            )));
        Ok(router)
    }

    async fn start_with_database(
        &self,
        pool: PgPool,
        pool_cell: &OnceLock<PgPool>,
        health: &tonic_health::server::HealthReporter,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        indexer::db::migrate(&pool)
            .await
            .context("apply migrations")?;
        tracing::info!("database migrated");
        let _ = pool_cell.set(pool.clone());
        self.spawn_watchers(&pool, tasks, cancel).await?;
        tasks.spawn(expire_offers(pool.clone(), cancel.clone()));
        let events = &self.settings.events;
        if events.enabled {
            let relay =
                indexer::events::EventRelay::new(pool.clone(), &events.brokers, &events.topic)
                    .context("config section `events`")?;
            let cancel = cancel.clone();
            tasks.spawn(async move {
                relay.run(cancel).await;
                Ok(())
            });
        }
        health.set_service_status("", ServingStatus::Serving).await;
        Ok(())
    }

    async fn spawn_watchers(
        &self,
        pool: &PgPool,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
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
            let client =
                BitcoinClient::new(&btc.rpc_url, auth, Duration::from_millis(btc.timeout_ms))
                    .context("config section `chains.bitcoin`")?;
            let config = indexer::deposits::bitcoin::BitcoinWatchConfig {
                start_height: btc.start_height,
                confirmations: btc.confirmations,
                max_reorg_depth: btc.max_reorg_depth,
                batch_blocks: btc.batch_blocks,
                concurrency: btc.fetch_concurrency,
                fetch_ahead: indexer::deposits::watcher::FETCH_AHEAD,
                poll_interval: Duration::from_millis(btc.poll_interval_ms),
                gap_limit: btc.gap_limit,
            };
            let store = indexer::deposits::DepositStore::new(
                indexer::ledger::Ledger::new(pool.clone()),
                chains::Chain::Bitcoin,
                btc.max_reorg_depth,
            );
            let watcher = indexer::deposits::bitcoin::BitcoinWatcher::new(
                client,
                self.deposit_keys.bitcoin_account_xpub(),
                self.deposit_keys.bitcoin_network(),
                store,
                config,
            );
            spawn_watcher(tasks, watcher, cancel);
        }
        if chains.ethereum.enabled {
            let eth = &chains.ethereum;
            let client = EthereumClient::new(&eth.rpc_url, Duration::from_millis(eth.timeout_ms))
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
                    chains::Chain::Ethereum,
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
                start_height: eth.start_height,
                use_finalized_tag: eth.use_finalized_tag,
                confirmations: eth.confirmations,
                max_reorg_depth: eth.max_reorg_depth,
                batch_blocks: eth.batch_blocks,
                concurrency: eth.fetch_concurrency,
                fetch_ahead: indexer::deposits::watcher::FETCH_AHEAD,
                poll_interval: Duration::from_millis(eth.poll_interval_ms),
                tokens,
            };
            let store = indexer::deposits::DepositStore::new(
                ledger,
                chains::Chain::Ethereum,
                eth.max_reorg_depth,
            );
            let watcher = indexer::deposits::ethereum::EthereumWatcher::new(client, store, config);
            spawn_watcher(tasks, watcher, cancel);
        }
        if chains.solana.enabled {
            let sol = &chains.solana;
            let client = SolanaClient::new(&sol.rpc_url, Duration::from_millis(sol.timeout_ms))
                .context("config section `chains.solana`")?;
            let ledger = indexer::ledger::Ledger::new(pool.clone());
            let mut tokens = Vec::with_capacity(sol.tokens.len());
            for (i, token) in sol.tokens.iter().enumerate() {
                let key = format!("chains.solana.tokens[{i}]");
                register_token(
                    &ledger,
                    chains::Chain::Solana,
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
                start_slot: sol.start_slot,
                max_reorg_depth: sol.max_reorg_depth,
                batch_slots: sol.batch_slots,
                concurrency: sol.fetch_concurrency,
                fetch_ahead: indexer::deposits::watcher::FETCH_AHEAD,
                poll_interval: Duration::from_millis(sol.poll_interval_ms),
                tokens,
            };
            let store = indexer::deposits::DepositStore::new(
                ledger,
                chains::Chain::Solana,
                sol.max_reorg_depth,
            );
            let watcher = indexer::deposits::solana::SolanaWatcher::new(client, store, config);
            spawn_watcher(tasks, watcher, cancel);
        }
        Ok(())
    }
}

/// Registers an allow-listed token as an asset; a conflict with what is
/// registered stops startup naming the config key.
async fn register_token(
    ledger: &indexer::ledger::Ledger,
    chain: chains::Chain,
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

fn spawn_watcher<S: indexer::deposits::watcher::DepositSource>(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    watcher: indexer::deposits::watcher::Watcher<S>,
    cancel: &CancellationToken,
) {
    let cancel = cancel.clone();
    tasks.spawn(async move {
        watcher.run(cancel).await;
        Ok(())
    });
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

#[derive(Clone)]
struct MetricsState {
    prometheus: PrometheusHandle,
    started: Instant,
    pool: Arc<OnceLock<PgPool>>,
    max_connections: u32,
}

async fn serve_metrics(
    listener: TcpListener,
    state: MetricsState,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let router = Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .context("metrics server failed")
}

async fn render_metrics(State(state): State<MetricsState>) -> impl IntoResponse {
    crate::metrics::refresh(state.started, state.pool.get(), state.max_connections);
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
    let mainnet = settings.network == crate::config::Network::Mainnet;
    HdSeed::check_allowed(&phrase, mainnet).context("config section `signer`")?;
    let seed = HdSeed::from_phrase(&phrase, "").context("config section `signer`")?;
    let network = match settings.chains.bitcoin.network {
        crate::config::BitcoinNetwork::Bitcoin => signer::BitcoinNetwork::Bitcoin,
        crate::config::BitcoinNetwork::Testnet => signer::BitcoinNetwork::Testnet,
        crate::config::BitcoinNetwork::Signet => signer::BitcoinNetwork::Signet,
        crate::config::BitcoinNetwork::Regtest => signer::BitcoinNetwork::Regtest,
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
