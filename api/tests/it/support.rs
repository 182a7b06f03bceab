//! What the test files of this binary share: settings for a daemon in this
//! process, the daemon itself and a server on a fresh database, the real
//! binary and its environment, users and balances through the API and the
//! ledger, health and metrics polling.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::grpc::pb;
use api::grpc::pb::auth_service_client::AuthServiceClient;
use api::{App, Settings};
use chains::Chain;
use chains::devnet::free_port;
use indexer::devnet::TestDb;
use indexer::devnet::ledger::credit_entry;
use indexer::ledger::{AccountPurpose, EntryKind, IdempotencyKey, Ledger, NewEntry};
use indexer::users::{Role, Users};
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

/// Settings for a daemon in this process on `db`: gRPC and metrics on
/// loopback ports of their own, no event publishing, chains as configured
/// by default.
pub fn test_settings(db: &TestDb) -> Settings {
    let mut settings = Settings::default();
    settings.database.url = db.url().as_str().into();
    settings.grpc.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.metrics.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.events.enabled = false;
    settings
}

/// [`test_settings`] with every chain off: only the API and the database.
pub fn api_only_settings(db: &TestDb) -> Settings {
    let mut settings = test_settings(db);
    settings.chains.bitcoin.enabled = false;
    settings.chains.ethereum.enabled = false;
    settings.chains.solana.enabled = false;
    settings
}

/// A daemon run in this process until [`Daemon::stop`].
pub struct Daemon {
    pub grpc: SocketAddr,
    metrics: Option<SocketAddr>,
    cancel: CancellationToken,
    pub running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    /// Binds `settings` and runs the daemon, without waiting for it.
    pub async fn start(settings: Settings) -> Self {
        let app = App::bind(settings).await.expect("bind");
        let grpc = app.grpc_addr().expect("grpc bound");
        let metrics = app.metrics_addr();
        let cancel = CancellationToken::new();
        let running = tokio::spawn(app.run(cancel.clone()));
        Self {
            grpc,
            metrics,
            cancel,
            running,
        }
    }

    /// [`Daemon::start`], then waits up to `timeout` for SERVING.
    pub async fn serving(settings: Settings, timeout: Duration) -> Self {
        let daemon = Self::start(settings).await;
        wait_serving(daemon.grpc, timeout).await;
        daemon
    }

    pub fn metrics(&self) -> SocketAddr {
        self.metrics.expect("metrics bound")
    }

    /// Cancels the daemon and asserts it stops cleanly within 20 s.
    pub async fn stop(self) {
        self.cancel.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(20), self.running)
            .await
            .expect("shut down within 20 s")
            .expect("run task");
        assert!(stopped.is_ok(), "clean shutdown: {stopped:?}");
    }
}

/// A serving daemon on a database of its own, cancelled when dropped.
pub struct Server {
    pub db: TestDb,
    pub grpc: SocketAddr,
    daemon: Daemon,
}

impl Server {
    pub fn metrics(&self) -> SocketAddr {
        self.daemon.metrics()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.daemon.cancel.cancel();
    }
}

/// A server on a fresh database, with only the API on and no metrics.
pub async fn server() -> Server {
    server_with(|_| {}).await
}

/// [`server`], with `configure` applied to the settings.
pub async fn server_with(configure: impl FnOnce(&mut Settings)) -> Server {
    let db = TestDb::new().await.expect("database");
    server_on(
        |settings| {
            settings.metrics.enabled = false;
            configure(settings);
        },
        db,
    )
    .await
}

/// A server on `db` from [`api_only_settings`] with `configure` applied.
pub async fn server_on(configure: impl FnOnce(&mut Settings), db: TestDb) -> Server {
    let mut settings = api_only_settings(&db);
    configure(&mut settings);
    let daemon = Daemon::serving(settings, Duration::from_secs(30)).await;
    Server {
        db,
        grpc: daemon.grpc,
        daemon,
    }
}

pub async fn auth_client(addr: SocketAddr) -> AuthServiceClient<Channel> {
    AuthServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

pub async fn client(server: &Server) -> AuthServiceClient<Channel> {
    auth_client(server.grpc).await
}

pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

pub async fn register_and_login(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
) -> pb::TokenPair {
    client
        .register(pb::RegisterRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .expect("register");
    login(client, email, password).await.expect("login")
}

pub async fn login(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
) -> Result<pb::TokenPair, tonic::Status> {
    client
        .login(pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn who_am_i(
    client: &mut AuthServiceClient<Channel>,
    access: &str,
) -> Result<pb::WhoAmIResponse, tonic::Status> {
    client
        .who_am_i(bearer(pb::WhoAmIRequest {}, access))
        .await
        .map(|r| r.into_inner())
}

/// A user with `role`, logged in; returns (id, access token).
pub async fn user_with_role(server: &Server, email: &str, role: Role) -> (Uuid, String) {
    let hash = api::auth::password::hash_password("role passphrase").expect("hash");
    let id = Users::new(server.db.pool().clone())
        .create(email, &hash, role)
        .await
        .expect("user");
    let mut auth = client(server).await;
    (
        id,
        login(&mut auth, email, "role passphrase")
            .await
            .expect("login")
            .access_token,
    )
}

/// Credits `amount` of `asset` to the user from the outside world.
pub async fn credit(server: &Server, user: Uuid, asset: &str, amount: u64) -> i64 {
    let reference = format!("credit-{}", Uuid::new_v4());
    let entry = NewEntry {
        metadata: serde_json::json!({ "txid": reference }),
        ..credit_entry(
            EntryKind::DepositCredit,
            AccountPurpose::Custody,
            user,
            asset,
            amount,
            reference.clone(),
        )
    };
    Ledger::new(server.db.pool().clone())
        .post(&IdempotencyKey::new("test", reference), &entry)
        .await
        .expect("credit")
        .id
}

/// The overall serving status, or `None` while the server is unreachable.
pub async fn health_status(addr: SocketAddr) -> Option<ServingStatus> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

/// Polls until health reports `wanted`.
pub async fn wait_health(addr: SocketAddr, wanted: ServingStatus, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let status = health_status(addr).await;
        if status == Some(wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr}: health {status:?}, not {wanted:?}, after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until the server reports SERVING.
pub async fn wait_serving(addr: SocketAddr, timeout: Duration) {
    wait_health(addr, ServingStatus::Serving, timeout).await;
}

pub async fn scrape(addr: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics");
    assert!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let content_type = response.headers().get("content-type").cloned();
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    response.text().await.expect("metrics body")
}

/// The value of a sample line `name{labels} value` in a Prometheus exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Polls the metrics endpoint for up to 60 s until `series` satisfies
/// `check`; returns the value that did.
pub async fn wait_for_sample(addr: SocketAddr, series: &str, check: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = scrape(addr).await;
        if let Some(value) = sample(&body, series).filter(|v| check(*v)) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never satisfied the check; last scrape:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real `coffer` binary, with its stderr collected.
pub struct Coffer {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Coffer {
    /// `coffer run` with `env` on top of an environment cleared of the
    /// caller's `COFFER__` overrides.
    pub fn run(env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
        cmd.arg("run");
        for (key, _) in std::env::vars() {
            if key.starts_with("COFFER__") || key == "COFFER_CONFIG" || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", "info");
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn coffer");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        Self {
            child,
            log,
            reader: Some(reader),
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log().contains(needle)
    }

    pub async fn wait_logged(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logged(needle) {
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("poll child").is_none()
    }

    /// SIGTERM, then waits up to 20 s for the exit; returns it with the log.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("poll child") {
                break exit;
            }
            assert!(
                Instant::now() < deadline,
                "coffer did not stop within 20 s of SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (exit, self.log())
    }

    /// SIGKILL: the process dies wherever it is, nothing flushed or rolled
    /// back by the daemon itself. Returns the log up to that moment.
    pub fn kill(mut self) -> String {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log()
    }

    /// [`Coffer::terminate`], asserting a clean exit; returns the log.
    pub async fn stop(self) -> String {
        let (exit, log) = self.terminate().await;
        assert!(exit.success(), "exit status {exit:?}; log:\n{log}");
        log
    }
}

impl Drop for Coffer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment for a binary on `db_url` with every chain and Kafka off.
pub fn binary_env(
    db_url: &str,
    grpc: SocketAddr,
    metrics: Option<SocketAddr>,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("COFFER__DATABASE__URL", db_url.to_owned()),
        ("COFFER__GRPC__LISTEN", grpc.to_string()),
        ("COFFER__EVENTS__ENABLED", "false".into()),
        ("COFFER__CHAINS__BITCOIN__ENABLED", "false".into()),
        ("COFFER__CHAINS__ETHEREUM__ENABLED", "false".into()),
        ("COFFER__CHAINS__SOLANA__ENABLED", "false".into()),
    ];
    match metrics {
        Some(addr) => env.push(("COFFER__METRICS__LISTEN", addr.to_string())),
        None => env.push(("COFFER__METRICS__ENABLED", "false".into())),
    }
    env
}

/// Sets `key` in `env`, replacing an earlier value.
pub fn set(env: &mut Vec<(&'static str, String)>, key: &'static str, value: impl Into<String>) {
    env.retain(|(k, _)| *k != key);
    env.push((key, value.into()));
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Free loopback addresses for gRPC and metrics, and [`binary_env`] on them.
pub fn binary_env_on_free_ports(
    db_url: &str,
) -> (SocketAddr, SocketAddr, Vec<(&'static str, String)>) {
    let grpc = loopback(free_port());
    let metrics = loopback(free_port());
    (grpc, metrics, binary_env(db_url, grpc, Some(metrics)))
}

/// Turns `chain` on in `env`, following the node at `rpc_url`.
pub fn enable_chain(
    env: &mut Vec<(&'static str, String)>,
    chain: Chain,
    rpc_url: impl Into<String>,
) {
    let (enabled, url) = match chain {
        Chain::Bitcoin => (
            "COFFER__CHAINS__BITCOIN__ENABLED",
            "COFFER__CHAINS__BITCOIN__RPC_URL",
        ),
        Chain::Ethereum => (
            "COFFER__CHAINS__ETHEREUM__ENABLED",
            "COFFER__CHAINS__ETHEREUM__RPC_URL",
        ),
        Chain::Solana => (
            "COFFER__CHAINS__SOLANA__ENABLED",
            "COFFER__CHAINS__SOLANA__RPC_URL",
        ),
    };
    set(env, enabled, "true");
    set(env, url, rpc_url);
}
