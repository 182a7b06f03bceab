//! Wiring: bind the listeners, connect and migrate the database, start the
//! chain watchers and payout loops under supervision, serve gRPC and
//! metrics, and stop everything on one cancellation token. By job: `serve`
//! (gRPC, metrics, TLS), `health` (readiness and the database probe),
//! `watchers` (chain watchers under supervision), `payouts` (the payout
//! loops, under the same supervisor), `identity` (is each node on the
//! configured network).

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use indexer::db::PoolSettings;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{ServerTlsConfig, TcpIncoming};

use crate::auth::tokens::AccessTokens;
use crate::config::{BitcoinNetwork, Network, Settings};

mod health;
mod identity;
mod payouts;
mod serve;
mod watchers;

use health::{Readiness, watch_database};
pub use identity::{ETHEREUM_CHAIN_ID, Identity, SOLANA_GENESIS_HASH, check_bitcoin_network};
use serve::{
    MetricsState, TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES, TCP_KEEPALIVE_TIME, serve_metrics,
};
pub use serve::{install_crypto_provider, load_tls};

/// How long shutdown waits for tasks to finish in-flight work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

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

impl App {
    /// Binds the enabled listeners (port 0 picks a free port), so the
    /// addresses are known before anything runs.
    pub async fn bind(settings: Settings) -> anyhow::Result<Self> {
        let tls = load_tls(&settings)?;
        let grpc = bind_listener("grpc", settings.grpc.enabled, settings.grpc.listen).await?;
        let metrics =
            bind_listener("metrics", settings.metrics.enabled, settings.metrics.listen).await?;
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
        // One ledger (and account cache) for everything on the background pool.
        let background_ledger = indexer::ledger::Ledger::new(background.clone());
        self.spawn_watchers(&background_ledger, tasks, cancel)
            .await?;
        check_withdrawal_assets(&self.settings, &background_ledger).await?;
        self.spawn_payouts(&background_ledger, tasks, cancel)?;
        tasks.spawn(expire_offers(background_ledger, cancel.clone()));
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
}

/// Section `section`'s listener, if enabled.
async fn bind_listener(
    section: &str,
    enabled: bool,
    address: SocketAddr,
) -> anyhow::Result<Option<TcpListener>> {
    if !enabled {
        return Ok(None);
    }
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("bind {section}.listen {address}"))?;
    Ok(Some(listener))
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
    /// Watchers, payout loops, event relay, offer expiry and the health probe.
    background: OnceLock<PgPool>,
    /// Whether PostgreSQL answered the last health probe.
    reachable: Arc<AtomicBool>,
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
    let network = match settings.chains.bitcoin.chain.network {
        BitcoinNetwork::Bitcoin => signer::BitcoinNetwork::Bitcoin,
        BitcoinNetwork::Testnet => signer::BitcoinNetwork::Testnet,
        BitcoinNetwork::Signet => signer::BitcoinNetwork::Signet,
        BitcoinNetwork::Regtest => signer::BitcoinNetwork::Regtest,
    };
    Ok(signer::DepositKeys::new(seed, network)?)
}

/// Every asset `[withdrawals]` names must be one the ledger counts in
/// (after the watchers registered their tokens); startup stops naming the
/// key otherwise.
async fn check_withdrawal_assets(
    settings: &Settings,
    ledger: &indexer::ledger::Ledger,
) -> anyhow::Result<()> {
    if settings.withdrawals.assets.0.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = ledger
        .assets()
        .await
        .context("read the ledger's assets")?
        .into_iter()
        .map(|asset| asset.code)
        .collect();
    for code in settings.withdrawals.assets.0.keys() {
        if !known.contains(code) {
            anyhow::bail!(
                "config key `withdrawals.assets.{code}`: the ledger has no asset `{code}` (it has {}); \
                 a token is registered from chains.*.tokens while its chain is enabled",
                known.join(", ")
            );
        }
    }
    Ok(())
}

/// Releases the holds of expired offers, once a second. Several processes
/// may run it: each offer's row lock lets exactly one finish it.
async fn expire_offers(
    ledger: indexer::ledger::Ledger,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
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
