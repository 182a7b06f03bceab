//! `[auth]`: access tokens and the limits on password guessing.

use serde::{Deserialize, Serialize};

use super::{Issues, Network, Secret};

/// The built-in access-token key. PUBLIC AND INSECURE: it lets `coffer run`
/// work on the devnet with no setup, and is refused on mainnet.
pub const INSECURE_DEVNET_JWT_SECRET: &str = "coffer-devnet-insecure-jwt-signing-key-0001";

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

impl AuthSettings {
    pub(super) fn validate(&self, network: Network, issues: &mut Issues) {
        if !self.keys.iter().any(|k| k.kid == self.active_kid) {
            issues.bad(
                "auth.active_kid",
                format!("no key in auth.keys has kid `{}`", self.active_kid),
            );
        }
        let min_key_bytes = crate::auth::tokens::MIN_KEY_BYTES;
        for (index, key) in self.keys.iter().enumerate() {
            let at = format!("auth.keys[{index}].secret");
            if key.secret.expose().len() < min_key_bytes {
                issues.bad(&at, format!("must be at least {min_key_bytes} bytes"));
            }
            if network == Network::Mainnet && key.secret.expose() == INSECURE_DEVNET_JWT_SECRET {
                issues.bad(&at, "the built-in devnet key is refused on mainnet");
            }
        }
        if self.access_ttl_secs == 0 || self.access_ttl_secs > 3_600 {
            issues.bad("auth.access_ttl_secs", "must be 1 to 3600");
        }
        if self.refresh_ttl_days == 0 || self.refresh_ttl_days > 90 {
            issues.bad("auth.refresh_ttl_days", "must be 1 to 90");
        }
        for (key, value) in [
            ("auth.login_window_secs", self.login_window_secs),
            (
                "auth.login_failures_per_account_and_client",
                self.login_failures_per_account_and_client.into(),
            ),
            (
                "auth.login_failures_per_client",
                self.login_failures_per_client.into(),
            ),
            (
                "auth.login_failures_per_account",
                self.login_failures_per_account.into(),
            ),
            (
                "auth.registrations_per_client",
                self.registrations_per_client.into(),
            ),
            ("auth.login_backoff_max_secs", self.login_backoff_max_secs),
        ] {
            if value == 0 {
                issues.bad(key, "must be at least 1");
            }
        }
        if let Err((index, why)) = crate::grpc::throttle::ClientAddresses::new(
            &self.trusted_proxies,
            &self.client_address_header,
        ) {
            issues.bad(&format!("auth.trusted_proxies[{index}]"), why);
        }
        let header = self.client_address_header.trim().to_ascii_lowercase();
        if tonic::metadata::AsciiMetadataKey::from_bytes(header.as_bytes()).is_err()
            || header.ends_with("-bin")
        {
            issues.bad(
                "auth.client_address_header",
                "must be a header name such as `x-forwarded-for`",
            );
        }
    }
}
