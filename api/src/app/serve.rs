//! The servers: gRPC behind the call limits (optionally over TLS) and the
//! Prometheus endpoint.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Router as GrpcRouter, ServerTlsConfig};
use tonic::transport::{Identity, Server};
use tower::layer::util::{Identity as NoLayer, Stack};

use super::{App, Pools};
use crate::config::Settings;
use crate::grpc::Shared;
use crate::grpc::auth::AuthApi;
use crate::grpc::history::HistoryApi;
use crate::grpc::pb::{
    self, auth_service_server::AuthServiceServer, history_service_server::HistoryServiceServer,
    settlement_service_server::SettlementServiceServer, wallet_service_server::WalletServiceServer,
    withdrawal_service_server::WithdrawalServiceServer,
};
use crate::grpc::settlement::SettlementApi;
use crate::grpc::wallet::WalletApi;
use crate::grpc::withdrawal::WithdrawalApi;
use crate::limits::CallLimitLayer;
use crate::metrics::PoolGauge;

/// TCP keepalive on accepted sockets: a peer that vanished (no FIN, no RST)
/// is found after about two minutes instead of holding its connection forever.
pub(super) const TCP_KEEPALIVE_TIME: Duration = Duration::from_secs(60);
pub(super) const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
pub(super) const TCP_KEEPALIVE_RETRIES: u32 = 4;

/// The gRPC router behind the server-wide call limits.
type LimitedRouter = GrpcRouter<Stack<CallLimitLayer, NoLayer>>;

impl App {
    /// Every gRPC service behind the server's limits. They share the pool
    /// through `pool_cell`, which is empty (calls answer UNAVAILABLE) until
    /// the database is migrated.
    pub(super) fn grpc_router(
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
        let withdrawal_api = WithdrawalApi::new(shared.clone(), self.settings.withdrawals.policy())
            .context("derive the hot wallet addresses")?;
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
            )
            .add_service(
                WithdrawalServiceServer::new(withdrawal_api)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            );
        Ok(router)
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

#[derive(Clone)]
pub(super) struct MetricsState {
    pub(super) prometheus: PrometheusHandle,
    pub(super) started: Instant,
    pub(super) pools: Arc<Pools>,
    pub(super) max_connections: u32,
    pub(super) background_max_connections: u32,
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

pub(super) async fn serve_metrics(
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
