//! The typed settings tree. Sources, lowest precedence first: built-in
//! defaults that point at the local devnet, an optional TOML file, then
//! `COFFER__SECTION__KEY` environment variables. Unknown keys are errors, and
//! every error names the key it is about.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

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
    pub events: EventsSettings,
    pub chains: ChainsSettings,
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

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettlementSettings {
    /// Fee on P2P trades, in basis points of the sell amount the taker
    /// receives, credited to the asset's fee account. 0 disables it.
    pub trade_fee_bps: u32,
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BitcoinNetwork {
    Bitcoin,
    Testnet,
    Signet,
    #[default]
    Regtest,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    Devnet,
    Testnet,
    Mainnet,
}

/// The built-in access-token key. PUBLIC AND INSECURE: it lets `coffer run`
/// work on the devnet with no setup, and is refused on mainnet.
pub const INSECURE_DEVNET_JWT_SECRET: &str = "coffer-devnet-insecure-jwt-signing-key-0001";

/// The devnet's Bitcoin RPC password (`scripts/devnet`, docker compose):
/// public, so refused on mainnet.
pub const INSECURE_DEVNET_BITCOIN_RPC_PASSWORD: &str = "coffer-devnet";

/// Ethereum mainnet's `eth_chainId`.
pub const ETHEREUM_MAINNET_CHAIN_ID: u64 = 1;

/// Solana mainnet-beta's genesis hash.
pub const SOLANA_MAINNET_GENESIS_HASH: &str = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_days: u64,
    /// The `kid` that signs new access tokens; every key in `keys` verifies.
    pub active_kid: String,
    pub keys: Vec<JwtKey>,
    /// Failed password checks (Login, ChangePassword) allowed per account
    /// and client address in `login_window_secs`.
    pub login_failures_per_account_and_client: u32,
    /// Failed password checks allowed per client address, over all
    /// accounts; taken emails at Register count too.
    pub login_failures_per_client: u32,
    /// Failed password checks allowed per account over all client addresses
    /// in the window; past it each attempt waits a doubling backoff after
    /// the last failure, except from a client that logged into the account
    /// before.
    pub login_failures_per_account: u32,
    /// The ceiling of that backoff.
    pub login_backoff_max_secs: u64,
    pub login_window_secs: u64,
    /// Registrations allowed per client address in `login_window_secs`.
    pub registrations_per_client: u32,
    /// Proxies (addresses or CIDR blocks) whose `client_address_header` is
    /// believed. A client is an IPv4 address or an IPv6 /64.
    pub trusted_proxies: Vec<String>,
    /// Where trusted proxies put the client's address, `X-Forwarded-For`
    /// style: read from the right, past trusted proxies.
    pub client_address_header: String,
    /// Password hashes and checks (argon2id, 19 MiB each) run at once at
    /// most; 0 means one per CPU.
    pub password_hash_concurrency: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    pub kid: String,
    /// At least 32 bytes.
    pub secret: Secret,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuer: "coffer".into(),
            audience: "coffer-api".into(),
            access_ttl_secs: 900,
            refresh_ttl_days: 30,
            active_kid: "devnet".into(),
            keys: vec![JwtKey {
                kid: "devnet".into(),
                secret: Secret::from(INSECURE_DEVNET_JWT_SECRET),
            }],
            login_failures_per_account_and_client: 5,
            login_failures_per_client: 50,
            login_failures_per_account: 20,
            login_backoff_max_secs: 60,
            login_window_secs: 300,
            registrations_per_client: 100,
            trusted_proxies: Vec::new(),
            client_address_header: "x-forwarded-for".into(),
            password_hash_concurrency: 0,
        }
    }
}

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

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainsSettings {
    pub bitcoin: BitcoinSettings,
    pub ethereum: EthereumSettings,
    pub solana: SolanaSettings,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BitcoinSettings {
    pub enabled: bool,
    /// Address format and BIP84 coin type: `bitcoin` (mainnet), `testnet`, `signet`, `regtest`.
    pub network: BitcoinNetwork,
    /// A secret: node URLs often carry a provider's API key.
    pub rpc_url: Secret,
    pub rpc_user: Option<String>,
    pub rpc_password: Option<Secret>,
    /// Bitcoin Core's `.cookie` file; when set it replaces `rpc_user`/`rpc_password`.
    pub cookie_file: Option<PathBuf>,
    pub poll_interval_ms: u64,
    pub timeout_ms: u64,
    /// First block to index on a new install; unset starts at the node's
    /// tip. Ignored once the watcher has a cursor.
    pub start_height: Option<u64>,
    /// Confirmations (the deposit's block counts as one) that make a
    /// deposit available; it is pending from the first.
    pub confirmations: u64,
    /// A reorg deeper than this halts the watcher (`coffer_watcher_halted`).
    pub max_reorg_depth: u64,
    /// Blocks per fetch during catch-up; a transaction writes one or more.
    pub batch_blocks: u64,
    /// Batches fetched ahead while earlier ones are written.
    pub fetch_concurrency: usize,
    /// Addresses derived past the last issued one, and the run of unused
    /// issued addresses that raises `coffer_deposit_address_gap_exceeded`.
    pub gap_limit: u32,
}

impl Default for BitcoinSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            network: BitcoinNetwork::Regtest,
            rpc_url: "http://127.0.0.1:18334".into(),
            rpc_user: Some("coffer".into()),
            rpc_password: Some(Secret::from(INSECURE_DEVNET_BITCOIN_RPC_PASSWORD)),
            cookie_file: None,
            poll_interval_ms: 1_000,
            timeout_ms: 15_000,
            start_height: None,
            confirmations: 6,
            max_reorg_depth: 24,
            batch_blocks: 10,
            fetch_concurrency: 2,
            gap_limit: 20,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SolanaSettings {
    pub enabled: bool,
    /// A secret: node URLs often carry a provider's API key.
    pub rpc_url: Secret,
    /// The cluster's genesis hash (base58), checked against the node's
    /// `getGenesisHash` at start. Unset: mainnet-beta's on mainnet; on other
    /// networks any cluster but mainnet-beta (a fresh local validator has a
    /// genesis of its own).
    pub genesis_hash: Option<String>,
    pub poll_interval_ms: u64,
    pub timeout_ms: u64,
    /// First slot to index on a new install; unset starts at the node's
    /// confirmed tip. Ignored once the watcher has a cursor.
    pub start_slot: Option<u64>,
    /// A fork deeper than this many slots halts the watcher.
    pub max_reorg_depth: u64,
    /// Slots per fetch; a transaction writes one or more fetches.
    pub batch_slots: u64,
    /// Batches fetched ahead while earlier ones are written.
    pub fetch_concurrency: usize,
    /// Allow-listed SPL Token mints; transfers of any other mint are ignored.
    pub tokens: Vec<SplTokenSettings>,
}

impl Default for SolanaSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            rpc_url: "http://127.0.0.1:8899".into(),
            genesis_hash: None,
            poll_interval_ms: 400,
            timeout_ms: 15_000,
            start_slot: None,
            max_reorg_depth: 150,
            batch_slots: 10,
            fetch_concurrency: 4,
            tokens: Vec::new(),
        }
    }
}

/// An allow-listed SPL mint, the asset code it credits, and its decimals.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplTokenSettings {
    pub mint: String,
    pub asset: String,
    pub decimals: u8,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EthereumSettings {
    pub enabled: bool,
    /// A secret: node URLs often carry a provider's API key.
    pub rpc_url: Secret,
    /// The chain id the node must report (`eth_chainId`) at start. Unset: 1
    /// on mainnet; on other networks any chain but mainnet.
    pub chain_id: Option<u64>,
    pub poll_interval_ms: u64,
    pub timeout_ms: u64,
    /// First block to index on a new install; unset starts at the node's
    /// tip. Ignored once the watcher has a cursor.
    pub start_height: Option<u64>,
    /// Credit deposits once the node's `finalized` tag covers them.
    pub use_finalized_tag: bool,
    /// Confirmations (the tip counts as one) that make a block final when
    /// the tag is off or the node serves none.
    pub confirmations: u64,
    /// A reorg deeper than this halts the watcher (`coffer_watcher_halted`).
    pub max_reorg_depth: u64,
    /// Blocks per batched request; a transaction writes one or more.
    pub batch_blocks: u64,
    /// Batches fetched ahead while earlier ones are written.
    pub fetch_concurrency: usize,
    /// Allow-listed ERC-20 contracts; transfers of any other token are ignored.
    pub tokens: Vec<TokenSettings>,
}

impl Default for EthereumSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            rpc_url: "http://127.0.0.1:8545".into(),
            chain_id: None,
            poll_interval_ms: 1_000,
            timeout_ms: 15_000,
            start_height: None,
            use_finalized_tag: true,
            confirmations: 12,
            max_reorg_depth: 64,
            batch_blocks: 25,
            fetch_concurrency: 4,
            tokens: Vec::new(),
        }
    }
}

/// An allow-listed token: its contract, the asset code it credits, and the
/// decimals its amounts carry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub contract: String,
    pub asset: String,
    pub decimals: u8,
}

/// A string that never prints: `Debug` and serialization show `[REDACTED]`.
#[derive(Clone, Deserialize)]
#[serde(from = "SecretInput")]
pub struct Secret(SecretString);

/// Environment values that look numeric arrive as numbers; a secret takes them as text.
#[derive(Deserialize)]
#[serde(untagged)]
enum SecretInput {
    Text(String),
    Unsigned(u64),
    Signed(i64),
}

impl From<SecretInput> for Secret {
    fn from(input: SecretInput) -> Self {
        match input {
            SecretInput::Text(text) => Secret::from(text.as_str()),
            SecretInput::Unsigned(n) => Secret::from(n.to_string().as_str()),
            SecretInput::Signed(n) => Secret::from(n.to_string().as_str()),
        }
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(SecretString::from(value))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(SecretString::from(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[REDACTED]")
    }
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
        let settings: Settings = figment.extract().map_err(|err| ConfigError::Invalid {
            issues: err.into_iter().map(issue_from_figment).collect(),
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot: URLs, ranges, combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut issues = Vec::new();
        let mut bad = |key: &str, message: String| {
            issues.push(ConfigIssue {
                key: key.to_owned(),
                message,
                origin: None,
            })
        };
        let url = self.database.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bad(
                "database.url",
                "must start with postgres:// or postgresql://".into(),
            );
        } else if let Err(err) = sqlx::postgres::PgConnectOptions::from_str(url) {
            bad("database.url", format!("not a valid PostgreSQL URL: {err}"));
        }
        if self.database.max_connections == 0 {
            bad("database.max_connections", "must be at least 1".into());
        }
        if self.database.background_max_connections == 0 {
            bad(
                "database.background_max_connections",
                "must be at least 1".into(),
            );
        }
        if self.database.acquire_timeout_ms == 0 {
            bad("database.acquire_timeout_ms", "must be at least 1".into());
        }
        let grpc = &self.grpc;
        let ranges = [
            ("request_timeout_ms", grpc.request_timeout_ms, 1, 3_600_000),
            (
                "concurrency_limit",
                grpc.concurrency_limit as u64,
                1,
                100_000,
            ),
            ("queue_limit", grpc.queue_limit as u64, 0, 1_000_000),
            (
                "max_message_bytes",
                grpc.max_message_bytes as u64,
                1_024,
                256 * 1024 * 1024,
            ),
        ];
        check_ranges(&mut bad, "grpc", &ranges);
        match (&grpc.tls.cert_file, &grpc.tls.key_file) {
            (Some(_), None) => bad(
                "grpc.tls.key_file",
                "grpc.tls.cert_file and key_file must be set together".into(),
            ),
            (None, Some(_)) => bad(
                "grpc.tls.cert_file",
                "grpc.tls.cert_file and key_file must be set together".into(),
            ),
            _ => {}
        }
        for (key, path) in [
            ("grpc.tls.cert_file", &grpc.tls.cert_file),
            ("grpc.tls.key_file", &grpc.tls.key_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                bad(key, format!("{} is not a readable file", path.display()));
            }
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            bad("log.filter", format!("not a valid filter directive: {err}"));
        }
        let auth = &self.auth;
        if !auth.keys.iter().any(|k| k.kid == auth.active_kid) {
            bad(
                "auth.active_kid",
                format!("no key in auth.keys has kid `{}`", auth.active_kid),
            );
        }
        for (index, key) in auth.keys.iter().enumerate() {
            if key.secret.expose().len() < crate::auth::tokens::MIN_KEY_BYTES {
                bad(
                    &format!("auth.keys[{index}].secret"),
                    format!(
                        "must be at least {} bytes",
                        crate::auth::tokens::MIN_KEY_BYTES
                    ),
                );
            }
            if self.network == Network::Mainnet && key.secret.expose() == INSECURE_DEVNET_JWT_SECRET
            {
                bad(
                    &format!("auth.keys[{index}].secret"),
                    "the built-in devnet key is refused on mainnet".into(),
                );
            }
        }
        if auth.access_ttl_secs == 0 || auth.access_ttl_secs > 3_600 {
            bad("auth.access_ttl_secs", "must be 1 to 3600".into());
        }
        if auth.refresh_ttl_days == 0 || auth.refresh_ttl_days > 90 {
            bad("auth.refresh_ttl_days", "must be 1 to 90".into());
        }
        if self.events.enabled && self.events.brokers.trim().is_empty() {
            bad("events.brokers", "must name at least one broker".into());
        }
        if self.events.enabled && self.events.topic.trim().is_empty() {
            bad("events.topic", "must not be empty".into());
        }
        if self.settlement.trade_fee_bps > 1_000 {
            bad(
                "settlement.trade_fee_bps",
                "must be at most 1000 (10%)".into(),
            );
        }
        if auth.login_window_secs == 0 {
            bad("auth.login_window_secs", "must be at least 1".into());
        }
        for (key, value) in [
            (
                "auth.login_failures_per_account_and_client",
                auth.login_failures_per_account_and_client,
            ),
            (
                "auth.login_failures_per_client",
                auth.login_failures_per_client,
            ),
            (
                "auth.login_failures_per_account",
                auth.login_failures_per_account,
            ),
            (
                "auth.registrations_per_client",
                auth.registrations_per_client,
            ),
        ] {
            if value == 0 {
                bad(key, "must be at least 1".into());
            }
        }
        if auth.login_backoff_max_secs == 0 {
            bad("auth.login_backoff_max_secs", "must be at least 1".into());
        }
        if let Err((index, why)) = crate::grpc::throttle::ClientAddresses::new(
            &auth.trusted_proxies,
            &auth.client_address_header,
        ) {
            bad(&format!("auth.trusted_proxies[{index}]"), why);
        }
        let header = auth.client_address_header.trim().to_ascii_lowercase();
        if tonic::metadata::AsciiMetadataKey::from_bytes(header.as_bytes()).is_err()
            || header.ends_with("-bin")
        {
            bad(
                "auth.client_address_header",
                "must be a header name such as `x-forwarded-for`".into(),
            );
        }
        if self.signer.seed_file.is_some() && self.signer.seed_env.is_some() {
            bad(
                "signer.seed_env",
                "set either signer.seed_file or signer.seed_env, not both".into(),
            );
        }
        if self.network == Network::Mainnet {
            if self.signer.seed_file.is_none() && self.signer.seed_env.is_none() {
                bad(
                    "signer.seed_file",
                    "mainnet needs a seed (signer.seed_file or signer.seed_env)".into(),
                );
            }
            if self.chains.bitcoin.network != BitcoinNetwork::Bitcoin {
                bad(
                    "chains.bitcoin.network",
                    "must be `bitcoin` on mainnet".into(),
                );
            }
            self.validate_mainnet(&mut bad);
        } else {
            // Real money only under mainnet's rules (and never with the
            // public devnet secrets that other networks allow).
            let needs_mainnet = "names mainnet, which needs network = \"mainnet\"";
            if self.chains.bitcoin.network == BitcoinNetwork::Bitcoin {
                bad("chains.bitcoin.network", needs_mainnet.into());
            }
            if self.chains.ethereum.chain_id == Some(ETHEREUM_MAINNET_CHAIN_ID) {
                bad("chains.ethereum.chain_id", needs_mainnet.into());
            }
            if self.chains.solana.genesis_hash.as_deref() == Some(SOLANA_MAINNET_GENESIS_HASH) {
                bad("chains.solana.genesis_hash", needs_mainnet.into());
            }
        }
        let btc = &self.chains.bitcoin;
        let nodes = [
            (
                "bitcoin",
                btc.enabled,
                btc.rpc_url.expose(),
                btc.poll_interval_ms,
                btc.timeout_ms,
            ),
            (
                "ethereum",
                self.chains.ethereum.enabled,
                self.chains.ethereum.rpc_url.expose(),
                self.chains.ethereum.poll_interval_ms,
                self.chains.ethereum.timeout_ms,
            ),
            (
                "solana",
                self.chains.solana.enabled,
                self.chains.solana.rpc_url.expose(),
                self.chains.solana.poll_interval_ms,
                self.chains.solana.timeout_ms,
            ),
        ];
        for (chain, enabled, rpc_url, poll_interval_ms, timeout_ms) in nodes {
            if !enabled {
                continue;
            }
            match url::Url::parse(rpc_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => bad(
                    &format!("chains.{chain}.rpc_url"),
                    format!("scheme must be http or https, not `{}`", url.scheme()),
                ),
                Err(err) => bad(
                    &format!("chains.{chain}.rpc_url"),
                    format!("not a valid URL: {err}"),
                ),
            }
            if poll_interval_ms == 0 {
                bad(
                    &format!("chains.{chain}.poll_interval_ms"),
                    "must be at least 1".into(),
                );
            }
            if timeout_ms == 0 {
                bad(
                    &format!("chains.{chain}.timeout_ms"),
                    "must be at least 1".into(),
                );
            }
        }
        let sol = &self.chains.solana;
        if sol.enabled {
            let ranges = [
                ("max_reorg_depth", sol.max_reorg_depth, 1, 100_000),
                ("batch_slots", sol.batch_slots, 1, 1_000),
                ("fetch_concurrency", sol.fetch_concurrency as u64, 1, 64),
            ];
            check_ranges(&mut bad, "chains.solana", &ranges);
            if let Some(hash) = &sol.genesis_hash
                && let Err(err) = hash.parse::<solana_pubkey::Pubkey>()
            {
                bad(
                    "chains.solana.genesis_hash",
                    format!("not a base58 hash: {err}"),
                );
            }
            let mut seen = std::collections::HashSet::new();
            for (i, token) in sol.tokens.iter().enumerate() {
                let key = |field: &str| format!("chains.solana.tokens[{i}].{field}");
                match token.mint.parse::<solana_pubkey::Pubkey>() {
                    Ok(mint) if !seen.insert(mint) => bad(&key("mint"), "is listed twice".into()),
                    Ok(_) => {}
                    Err(err) => bad(&key("mint"), format!("not a base58 public key: {err}")),
                }
                check_asset_code(&mut bad, &key("asset"), &token.asset);
                if token.decimals > 38 {
                    bad(&key("decimals"), "must be 0 to 38".into());
                }
            }
        }
        let eth = &self.chains.ethereum;
        if eth.enabled {
            let ranges = [
                ("confirmations", eth.confirmations, 1, 10_000),
                ("max_reorg_depth", eth.max_reorg_depth, 1, 10_000),
                ("batch_blocks", eth.batch_blocks, 1, 1_000),
                ("fetch_concurrency", eth.fetch_concurrency as u64, 1, 64),
            ];
            check_ranges(&mut bad, "chains.ethereum", &ranges);
            if eth.chain_id == Some(0) {
                bad("chains.ethereum.chain_id", "must be at least 1".into());
            }
            let mut seen = std::collections::HashSet::new();
            for (i, token) in eth.tokens.iter().enumerate() {
                let key = |field: &str| format!("chains.ethereum.tokens[{i}].{field}");
                match token.contract.parse::<alloy_primitives::Address>() {
                    Ok(address) if !seen.insert(address) => {
                        bad(&key("contract"), "is listed twice".into())
                    }
                    Ok(_) => {}
                    Err(err) => bad(&key("contract"), format!("not an address: {err}")),
                }
                check_asset_code(&mut bad, &key("asset"), &token.asset);
                if token.decimals > 38 {
                    bad(&key("decimals"), "must be 0 to 38".into());
                }
            }
        }
        if btc.enabled {
            let ranges = [
                ("confirmations", btc.confirmations, 1, 10_000),
                ("max_reorg_depth", btc.max_reorg_depth, 1, 10_000),
                ("batch_blocks", btc.batch_blocks, 1, 1_000),
                ("fetch_concurrency", btc.fetch_concurrency as u64, 1, 64),
                ("gap_limit", u64::from(btc.gap_limit), 1, 100_000),
            ];
            check_ranges(&mut bad, "chains.bitcoin", &ranges);
            if let Some(path) = &btc.cookie_file
                && !path.is_file()
            {
                bad(
                    "chains.bitcoin.cookie_file",
                    format!("{} is not a readable file", path.display()),
                );
            }
            if btc.rpc_user.is_some() != btc.rpc_password.is_some() {
                bad(
                    "chains.bitcoin.rpc_password",
                    "rpc_user and rpc_password must be set together".into(),
                );
            }
        }
        if self.grpc.enabled
            && self.metrics.enabled
            && self.grpc.listen == self.metrics.listen
            && self.grpc.listen.port() != 0
        {
            bad(
                "metrics.listen",
                format!("same address as grpc.listen ({})", self.grpc.listen),
            );
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { issues })
        }
    }

    /// What mainnet refuses beyond the built-in secrets: settings that are
    /// fine on a devnet but lose or expose funds on real money.
    fn validate_mainnet(&self, bad: &mut impl FnMut(&str, String)) {
        let btc = &self.chains.bitcoin;
        if btc.enabled {
            let devnet_password = btc
                .rpc_password
                .as_ref()
                .is_some_and(|p| p.expose() == INSECURE_DEVNET_BITCOIN_RPC_PASSWORD);
            if btc.cookie_file.is_none() && devnet_password {
                bad(
                    "chains.bitcoin.rpc_password",
                    "the devnet password is refused on mainnet (or set chains.bitcoin.cookie_file)"
                        .into(),
                );
            }
            if btc.confirmations < 2 {
                bad(
                    "chains.bitcoin.confirmations",
                    "must be at least 2 on mainnet: one confirmation is reorged away routinely"
                        .into(),
                );
            }
        }
        let eth = &self.chains.ethereum;
        if eth.enabled {
            if !eth.use_finalized_tag {
                bad(
                    "chains.ethereum.use_finalized_tag",
                    "must be true on mainnet: credit only what the chain finalized".into(),
                );
            }
            if let Some(id) = eth.chain_id
                && id != ETHEREUM_MAINNET_CHAIN_ID
            {
                bad(
                    "chains.ethereum.chain_id",
                    format!("is {id}, but Ethereum mainnet is {ETHEREUM_MAINNET_CHAIN_ID}"),
                );
            }
        }
        let sol = &self.chains.solana;
        if sol.enabled
            && let Some(hash) = &sol.genesis_hash
            && hash != SOLANA_MAINNET_GENESIS_HASH
        {
            bad(
                "chains.solana.genesis_hash",
                format!("is not mainnet-beta's ({SOLANA_MAINNET_GENESIS_HASH})"),
            );
        }
        let grpc = &self.grpc;
        if grpc.enabled && !grpc.listen.ip().is_loopback() && !grpc.tls.enabled() {
            bad(
                "grpc.tls.cert_file",
                format!(
                    "mainnet serves gRPC on {} (not loopback) only over TLS: set grpc.tls.cert_file and key_file, or listen on loopback behind a TLS-terminating proxy",
                    grpc.listen
                ),
            );
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

/// Each `(key, value, min, max)` of `section` within its bounds.
fn check_ranges(
    bad: &mut impl FnMut(&str, String),
    section: &str,
    ranges: &[(&str, u64, u64, u64)],
) {
    for &(key, value, min, max) in ranges {
        if !(min..=max).contains(&value) {
            bad(
                &format!("{section}.{key}"),
                format!("must be {min} to {max}, not {value}"),
            );
        }
    }
}

/// A token's asset code: the ledger's format, and not a native asset's.
fn check_asset_code(bad: &mut impl FnMut(&str, String), key: &str, code: &str) {
    let well_formed = (2..=16).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !well_formed {
        bad(key, "must be 2 to 16 upper-case letters or digits".into());
    } else if ["BTC", "ETH", "SOL"].contains(&code) {
        bad(key, "names a native asset".into());
    }
}
