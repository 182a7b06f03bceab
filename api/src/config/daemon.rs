//! The daemon's own sections: the database, the listeners, logs, events,
//! settlement and the signer's seed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Issues, Network, Secret};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://` URL; a secret because it may carry a password.
    pub url: Secret,
    /// The pool gRPC requests use.
    pub max_connections: u32,
    /// The pool of the chain watchers, the event relay and offer expiry, kept
    /// apart so that no flood of requests can starve them.
    pub background_max_connections: u32,
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: Secret::from("postgres://postgres@127.0.0.1:55432/coffer"),
            max_connections: 16,
            background_max_connections: 8,
            acquire_timeout_ms: 5_000,
        }
    }
}

impl DatabaseSettings {
    pub(super) fn validate(&self, issues: &mut Issues) {
        let url = self.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            issues.bad(
                "database.url",
                "must start with postgres:// or postgresql://",
            );
        } else if let Err(err) = sqlx::postgres::PgConnectOptions::from_str(url) {
            issues.bad("database.url", format!("not a valid PostgreSQL URL: {err}"));
        }
        for (key, value) in [
            ("database.max_connections", self.max_connections.into()),
            (
                "database.background_max_connections",
                self.background_max_connections.into(),
            ),
            ("database.acquire_timeout_ms", self.acquire_timeout_ms),
        ] {
            if value == 0 {
                issues.bad(key, "must be at least 1");
            }
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSettings {
    pub enabled: bool,
    /// Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Deadline of every call, waiting for its turn included; a client's
    /// shorter `grpc-timeout` wins. Past it: DEADLINE_EXCEEDED.
    pub request_timeout_ms: u64,
    /// Calls served at once over all connections.
    pub concurrency_limit: usize,
    /// Calls waiting for a turn at most; more are refused at once with
    /// RESOURCE_EXHAUSTED, as is one still waiting at its deadline.
    pub queue_limit: usize,
    /// Largest message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    pub tls: TlsSettings,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            request_timeout_ms: 10_000,
            concurrency_limit: 128,
            queue_limit: 1_024,
            max_message_bytes: 4 * 1024 * 1024,
            tls: TlsSettings::default(),
        }
    }
}

impl GrpcSettings {
    pub(super) fn validate(&self, network: Network, issues: &mut Issues) {
        issues.ranges(
            "grpc",
            &[
                ("request_timeout_ms", self.request_timeout_ms, 1, 3_600_000),
                (
                    "concurrency_limit",
                    self.concurrency_limit as u64,
                    1,
                    100_000,
                ),
                ("queue_limit", self.queue_limit as u64, 0, 1_000_000),
                (
                    "max_message_bytes",
                    self.max_message_bytes as u64,
                    1_024,
                    256 * 1024 * 1024,
                ),
            ],
        );
        self.tls.validate(issues);
        if network == Network::Mainnet
            && self.enabled
            && !self.listen.ip().is_loopback()
            && !self.tls.enabled()
        {
            issues.bad(
                "grpc.tls.cert_file",
                format!(
                    "mainnet serves gRPC on {} (not loopback) only over TLS: set grpc.tls.cert_file and key_file, or listen on loopback behind a TLS-terminating proxy",
                    self.listen
                ),
            );
        }
    }
}

/// Serve gRPC over TLS (rustls) when both files are set.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    fn validate(&self, issues: &mut Issues) {
        let together = "grpc.tls.cert_file and key_file must be set together";
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => issues.bad("grpc.tls.key_file", together),
            (None, Some(_)) => issues.bad("grpc.tls.cert_file", together),
            _ => {}
        }
        for (key, path) in [
            ("grpc.tls.cert_file", &self.cert_file),
            ("grpc.tls.key_file", &self.key_file),
        ] {
            if let Some(path) = path {
                issues.readable_file(key, path);
            }
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info,indexer=debug`; `RUST_LOG` wins if set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

impl LogSettings {
    pub(super) fn validate(&self, issues: &mut Issues) {
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.filter) {
            issues.bad("log.filter", format!("not a valid filter directive: {err}"));
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// Publish every ledger entry to Kafka from the outbox.
    pub enabled: bool,
    /// `bootstrap.servers`, comma-separated `host:port`.
    pub brokers: String,
    pub topic: String,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            brokers: "127.0.0.1:9092".into(),
            topic: "coffer.ledger.entries".into(),
        }
    }
}

impl EventsSettings {
    pub(super) fn validate(&self, issues: &mut Issues) {
        if !self.enabled {
            return;
        }
        if self.brokers.trim().is_empty() {
            issues.bad("events.brokers", "must name at least one broker");
        }
        if self.topic.trim().is_empty() {
            issues.bad("events.topic", "must not be empty");
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettlementSettings {
    /// Fee on P2P trades, in basis points of the sell amount the taker
    /// receives, credited to the asset's fee account. 0 disables it.
    pub trade_fee_bps: u32,
}

impl SettlementSettings {
    pub(super) fn validate(&self, issues: &mut Issues) {
        if self.trade_fee_bps > 1_000 {
            issues.bad("settlement.trade_fee_bps", "must be at most 1000 (10%)");
        }
    }
}

/// Where the custody seed phrase comes from. With neither set, the public
/// devnet phrase is used (refused on mainnet). Never a command-line argument.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignerSettings {
    pub seed_file: Option<PathBuf>,
    /// The name of an environment variable holding the phrase.
    pub seed_env: Option<String>,
}

impl SignerSettings {
    pub(super) fn validate(&self, network: Network, issues: &mut Issues) {
        match (&self.seed_file, &self.seed_env) {
            (Some(_), Some(_)) => issues.bad(
                "signer.seed_env",
                "set either signer.seed_file or signer.seed_env, not both",
            ),
            (None, None) if network == Network::Mainnet => issues.bad(
                "signer.seed_file",
                "mainnet needs a seed (signer.seed_file or signer.seed_env)",
            ),
            _ => {}
        }
    }
}
