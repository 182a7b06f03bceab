//! The process-wide Prometheus recorder and the daemon's own metrics.

use std::sync::OnceLock;
use std::time::Instant;

use metrics::{Unit, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

pub const BUILD_INFO: &str = "coffer_build_info";
pub const UPTIME: &str = "coffer_uptime_seconds";
pub const DB_UP: &str = "coffer_db_up";
pub const DB_POOL_CONNECTIONS: &str = "coffer_db_pool_connections";
pub const DB_POOL_MAX_CONNECTIONS: &str = "coffer_db_pool_max_connections";
pub const WATCHER_UP: &str = "coffer_watcher_up";
pub const WATCHER_RESTARTS: &str = "coffer_watcher_restarts_total";
pub const PAYOUT_LOOP_UP: &str = "coffer_payout_loop_up";
pub const PAYOUT_LOOP_RESTARTS: &str = "coffer_payout_loop_restarts_total";
pub const PAYOUT_LOOP_HALTED: &str = "coffer_payout_loop_halted";

const DETECTION_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0];
const RPC_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// One step of a payout round: milliseconds when idle, up to minutes for
/// a backlog of rows to plan, sign or send.
const STEP_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const DEPTH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 6.0, 12.0, 32.0, 64.0, 150.0];
/// Request to broadcast or completion: seconds when approved at once, up to
/// a day when an approver or the hot wallet's funding is waited for.
const PAYOUT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 180.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0,
];

/// Installs the recorder once per process and returns its handle.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Histograms export as buckets, so dashboards can aggregate
            // quantiles across replicas with `histogram_quantile`.
            let builder = PrometheusBuilder::new();
            let builder = [
                (
                    indexer::metrics::DEPOSIT_DETECTION_LATENCY,
                    DETECTION_BUCKETS,
                ),
                (chains::metrics::RPC_DURATION, RPC_BUCKETS),
                (indexer::metrics::REORG_DEPTH, DEPTH_BUCKETS),
                (indexer::metrics::WITHDRAWAL_TO_BROADCAST, PAYOUT_BUCKETS),
                (indexer::metrics::WITHDRAWAL_TO_COMPLETION, PAYOUT_BUCKETS),
                (indexer::metrics::PAYOUT_STEP_DURATION, STEP_BUCKETS),
            ]
            .into_iter()
            .fold(builder, |builder, (name, buckets)| {
                builder
                    .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                    .expect("bucket lists are non-empty constants")
            });
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed, in which case
            // this handle still renders whatever is recorded through it.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            indexer::metrics::describe();
            chains::metrics::describe();
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!(BUILD_INFO, "Always 1; labels carry the build's version.");
    describe_gauge!(
        UPTIME,
        Unit::Seconds,
        "Seconds since this process started serving."
    );
    describe_gauge!(
        DB_UP,
        "1 while PostgreSQL is migrated and answers the health probe, else 0."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        Unit::Count,
        "Open PostgreSQL connections by pool (api: gRPC requests; background: watchers and other background work) and state (idle or in_use)."
    );
    describe_gauge!(
        DB_POOL_MAX_CONNECTIONS,
        Unit::Count,
        "Each pool's configured maximum number of connections."
    );
    describe_gauge!(
        WATCHER_UP,
        "1 while the chain's deposit watcher runs (halted by a deep reorg included: see coffer_watcher_halted); 0 while it starts, waits to restart, or after its node proved to be on the wrong network."
    );
    describe_counter!(
        WATCHER_RESTARTS,
        Unit::Count,
        "Restarts of the chain's deposit watcher after it crashed or its node could not be checked."
    );
    describe_gauge!(
        PAYOUT_LOOP_UP,
        "1 while the chain's payout loop runs; 0 while it starts, waits to restart, or after its node proved to be on the wrong network."
    );
    describe_counter!(
        PAYOUT_LOOP_RESTARTS,
        Unit::Count,
        "Restarts of the chain's payout loop after it crashed or its node could not be checked."
    );
    describe_gauge!(
        PAYOUT_LOOP_HALTED,
        "1 when the chain's payout loop halted because its node is on the wrong network (nothing is signed or sent until restart)."
    );
}

/// One database pool as the scrape sees it.
#[derive(Debug)]
pub struct PoolGauge<'a> {
    /// The `pool` label.
    pub name: &'static str,
    /// `None` until connected.
    pub pool: Option<&'a PgPool>,
    pub max_connections: u32,
}

/// Refreshes the gauges that are read at scrape time rather than pushed.
pub fn refresh(started: Instant, pools: &[PoolGauge<'_>], db_up: bool) {
    gauge!(UPTIME).set(started.elapsed().as_secs_f64());
    gauge!(DB_UP).set(if db_up { 1.0 } else { 0.0 });
    for gauge in pools {
        let name = gauge.name;
        gauge!(DB_POOL_MAX_CONNECTIONS, "pool" => name).set(f64::from(gauge.max_connections));
        let (idle, in_use) = match gauge.pool {
            Some(pool) => {
                let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
                (idle, pool.size().saturating_sub(idle))
            }
            None => (0, 0),
        };
        gauge!(DB_POOL_CONNECTIONS, "pool" => name, "state" => "idle").set(f64::from(idle));
        gauge!(DB_POOL_CONNECTIONS, "pool" => name, "state" => "in_use").set(f64::from(in_use));
    }
}
