//! gRPC health: NOT_SERVING until the database is migrated, and whenever
//! PostgreSQL stops answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How often health asks PostgreSQL, and how long the answer may take.
const DB_PROBE_INTERVAL: Duration = Duration::from_secs(1);
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The overall gRPC health status. Once stopping it stays NOT_SERVING, so a
/// database probe that finishes during shutdown cannot report SERVING again.
#[derive(Clone)]
pub(super) struct Readiness {
    reporter: HealthReporter,
    stopping: Arc<tokio::sync::Mutex<bool>>,
}

impl Readiness {
    pub(super) fn new(reporter: HealthReporter) -> Self {
        Self {
            reporter,
            stopping: Arc::default(),
        }
    }

    pub(super) async fn set(&self, serving: bool) {
        let stopping = self.stopping.lock().await;
        if !*stopping {
            self.reporter
                .set_service_status("", serving_status(serving))
                .await;
        }
    }

    pub(super) async fn stop(&self) {
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
pub(super) async fn watch_database(
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
