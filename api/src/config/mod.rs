//! The typed settings tree. Sources, lowest precedence first: built-in
//! defaults that point at the local devnet, an optional TOML file, then
//! `COFFER__SECTION__KEY` environment variables. Unknown keys are errors, and
//! every error names the key it is about.
//!
//! Each section's struct checks its own keys (`validate`); [`Settings`]
//! adds the checks across sections.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

mod auth;
mod chains;
mod daemon;
mod secret;
mod withdrawals;

pub use auth::{AuthSettings, INSECURE_DEVNET_JWT_SECRET, JwtKey};
pub use chains::{
    BitcoinNetwork, BitcoinSettings, ChainKeys, ChainSettings, ChainsSettings,
    ETHEREUM_MAINNET_CHAIN_ID, EthereumSettings, INSECURE_DEVNET_BITCOIN_RPC_PASSWORD,
    SOLANA_MAINNET_GENESIS_HASH, SolanaSettings, SplTokenSettings, TokenSettings,
};
pub use daemon::{
    DatabaseSettings, EventsSettings, GrpcSettings, LogFormat, LogSettings, MetricsSettings,
    SettlementSettings, SignerSettings, TlsSettings,
};
pub use secret::Secret;
pub use withdrawals::{
    AssetPolicies, AssetPolicySettings, EthereumPayoutSettings, SweepThresholdSettings,
    WithdrawalsSettings,
};

/// Environment variables with this prefix override settings; `__` separates levels.
pub const ENV_PREFIX: &str = "COFFER__";

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `devnet`, `testnet` or `mainnet`. On mainnet, the built-in devnet
    /// secrets are refused.
    pub network: Network,
    pub database: DatabaseSettings,
    pub grpc: GrpcSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub signer: SignerSettings,
    pub settlement: SettlementSettings,
    pub withdrawals: WithdrawalsSettings,
    pub events: EventsSettings,
    pub chains: ChainsSettings,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    Devnet,
    Testnet,
    Mainnet,
}

/// One problem with the configuration, tied to the key it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key, such as `database.url`; empty for a file that does not parse.
    pub key: String,
    pub message: String,
    /// Where the offending value came from (a file or an environment variable), if known.
    pub origin: Option<String>,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)?;
        } else {
            write!(f, "config key `{}`: {}", self.key, self.message)?;
        }
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{}", issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { issues: Vec<ConfigIssue> },
}

impl ConfigError {
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Invalid { issues } => issues,
            ConfigError::MissingFile(_) => &[],
        }
    }
}

impl Settings {
    /// Loads settings from the defaults, `file` (if given) and the process
    /// environment, then validates them.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        let mut errors = ChainsSettings::check_sections(&figment);
        match figment.extract::<Settings>() {
            Ok(settings) if errors.is_empty() => {
                settings.validate()?;
                return Ok(settings);
            }
            Ok(_) => {}
            Err(err) => {
                // Dropped where the chains' check named a key below it:
                // a flattened chain key's type error names only the section.
                let extra: Vec<_> = err
                    .into_iter()
                    .filter(|e| {
                        e.path.is_empty()
                            || !errors.iter().any(|named| {
                                named.path.len() > e.path.len() && named.path.starts_with(&e.path)
                            })
                    })
                    .collect();
                errors.extend(extra);
            }
        }
        Err(ConfigError::Invalid {
            issues: errors.into_iter().map(issue_from_figment).collect(),
        })
    }

    /// Checks what types alone cannot: URLs, ranges, combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut issues = Issues::default();
        self.database.validate(&mut issues);
        self.grpc.validate(self.network, &mut issues);
        self.log.validate(&mut issues);
        self.auth.validate(self.network, &mut issues);
        self.events.validate(&mut issues);
        self.settlement.validate(&mut issues);
        self.withdrawals
            .validate(&self.chains.ethereum, &mut issues);
        self.signer.validate(self.network, &mut issues);
        self.chains.validate(self.network, &mut issues);
        if self.grpc.enabled
            && self.metrics.enabled
            && self.grpc.listen == self.metrics.listen
            && self.grpc.listen.port() != 0
        {
            issues.bad(
                "metrics.listen",
                format!("same address as grpc.listen ({})", self.grpc.listen),
            );
        }
        if issues.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { issues: issues.0 })
        }
    }

    /// The effective settings as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|err| format!("# cannot render settings: {err}\n"))
    }

    pub fn database_acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.database.acquire_timeout_ms)
    }
}

/// The problems `validate` found so far, each tied to its dotted key.
#[derive(Debug, Default)]
pub struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn bad(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            key: key.to_owned(),
            message: message.into(),
            origin: None,
        });
    }

    /// Each `(key, value, min, max)` of `section` within its bounds.
    fn ranges(&mut self, section: &str, ranges: &[(&str, u64, u64, u64)]) {
        for &(key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                self.bad(
                    &format!("{section}.{key}"),
                    format!("must be {min} to {max}, not {value}"),
                );
            }
        }
    }

    fn readable_file(&mut self, key: &str, path: &Path) {
        if !path.is_file() {
            self.bad(key, format!("{} is not a readable file", path.display()));
        }
    }

    /// The keys of `section`, named relative to it.
    fn section(&mut self, section: &str) -> Section<'_> {
        Section {
            issues: self,
            prefix: section.to_owned(),
        }
    }
}

/// [`Issues`] about one section's keys.
#[derive(Debug)]
pub struct Section<'a> {
    issues: &'a mut Issues,
    prefix: String,
}

impl Section<'_> {
    fn bad(&mut self, key: &str, message: impl Into<String>) {
        self.issues.bad(&format!("{}.{key}", self.prefix), message);
    }

    fn ranges(&mut self, ranges: &[(&str, u64, u64, u64)]) {
        self.issues.ranges(&self.prefix, ranges);
    }

    fn readable_file(&mut self, key: &str, path: &Path) {
        self.issues
            .readable_file(&format!("{}.{key}", self.prefix), path);
    }
}

fn issue_from_figment(err: figment::Error) -> ConfigIssue {
    use figment::error::Kind;
    let mut path = err.path.clone();
    let message = match &err.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!(
                "unknown key `{field}`; expected one of: {}",
                expected.join(", ")
            )
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            format!("missing key `{field}`")
        }
        other => other.to_string(),
    };
    let origin = err.metadata.as_ref().map(|meta| match &meta.source {
        _ if meta.name.contains("environment") && !path.is_empty() => {
            format!(
                "environment variable {ENV_PREFIX}{}",
                path.join("__").to_uppercase()
            )
        }
        Some(source) => format!("{} {source}", meta.name),
        None => meta.name.to_string(),
    });
    let key = if path.is_empty() {
        "(top level)".to_owned()
    } else {
        path.join(".")
    };
    ConfigIssue {
        key,
        message,
        origin,
    }
}
