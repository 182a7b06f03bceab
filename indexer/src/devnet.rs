//! Test helpers on real services: a fresh, migrated database per test on the
//! devnet PostgreSQL, and a single-node Kafka broker (KRaft) per call. The
//! submodules hold what more than one test or benchmark binary needs:
//! balances for ledger tests ([`ledger`]), deposit-test helpers
//! ([`deposits`]), the watch loop's cases ([`cases`]) and their Solana
//! validators ([`solana`]), and the benchmarks' plumbing ([`bench`]).

pub mod bench;
pub mod cases;
pub mod deposits;
pub mod ledger;
pub mod solana;

use std::net::TcpStream;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use chains::devnet::{
    DevnetError, INSTALL_COMMAND, NodeProcess, free_port, locate_tool, node_dir, run_tool,
    tools_dir,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// The devnet PostgreSQL that `./scripts/devnet up postgres` starts.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:55432/postgres";

/// A database of its own for one test, dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDb {
    pool: PgPool,
    name: String,
    options: PgConnectOptions,
    admin_url: String,
}

impl TestDb {
    /// Creates `coffer_test_<unique>` on the server named by
    /// `COFFER_TEST_DATABASE_URL` (default [`DEFAULT_ADMIN_URL`]) and migrates it.
    pub async fn new() -> Result<Self, DevnetError> {
        Self::create(true).await
    }

    /// Like [`TestDb::new`] but without running migrations.
    pub async fn empty() -> Result<Self, DevnetError> {
        Self::create(false).await
    }

    async fn create(migrated: bool) -> Result<Self, DevnetError> {
        let admin_url = std::env::var("COFFER_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let mut admin = PgConnection::connect(&admin_url).await.map_err(|e| {
            DevnetError::Other(format!(
                "PostgreSQL is not reachable at {admin_url} ({e}); start it with `./scripts/devnet up postgres` \
                 (after `{INSTALL_COMMAND}`), or point COFFER_TEST_DATABASE_URL at another server"
            ))
        })?;
        let name = unique_name();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .map_err(|e| DevnetError::Other(format!("CREATE DATABASE {name}: {e}")))?;
        let _ = admin.close().await;
        let options = PgConnectOptions::from_str(&admin_url)
            .map_err(|e| DevnetError::Other(format!("COFFER_TEST_DATABASE_URL: {e}")))?
            .database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .connect_with(options.clone())
            .await
            .map_err(|e| DevnetError::Other(format!("connect to {name}: {e}")))?;
        if migrated {
            crate::db::migrate(&pool)
                .await
                .map_err(|e| DevnetError::Other(format!("migrate {name}: {e}")))?;
        }
        Ok(Self {
            pool,
            name,
            options,
            admin_url,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection options for this database, for code under test that
    /// connects by itself.
    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// A `postgres://` URL for this database.
    pub fn url(&self) -> String {
        let base = self
            .admin_url
            .rsplit_once('/')
            .map_or(self.admin_url.as_str(), |(base, _)| base);
        format!("{base}/{}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside any runtime guarantee, so the cleanup gets a
        // thread and a runtime of its own.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn unique_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "coffer_test_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A single-node Kafka broker in KRaft mode, run from the jars that
/// `./scripts/devnet install` fetched from Maven Central.
#[derive(Debug)]
pub struct KafkaBroker {
    /// Held for its drop, which kills the node.
    _process: NodeProcess,
    bootstrap: String,
}

impl KafkaBroker {
    pub async fn spawn() -> Result<Self, DevnetError> {
        let java = locate_tool("java")?;
        let libs = tools_dir().join("kafka").join("libs");
        if !libs.join(".complete").exists() {
            return Err(DevnetError::MissingTool {
                tool: "Kafka".into(),
                looked: libs.display().to_string(),
            });
        }
        let dir = node_dir("kafka")?;
        let port = free_port();
        let controller_port = free_port();
        let bootstrap = format!("127.0.0.1:{port}");
        let properties = dir.path().join("server.properties");
        let config = broker_properties(
            port,
            controller_port,
            &dir.path().join("data").display().to_string(),
        );
        std::fs::write(&properties, config)
            .map_err(|e| DevnetError::Other(format!("write server.properties: {e}")))?;
        let classpath = format!("{}/*", libs.display());
        let log4j = dir.path().join("log4j.properties");
        std::fs::write(&log4j, LOG4J_PROPERTIES)
            .map_err(|e| DevnetError::Other(format!("write log4j.properties: {e}")))?;
        let log4j_arg = format!("-Dlog4j.configuration=file:{}", log4j.display());

        run_tool(
            "kafka storage format",
            Command::new(&java)
                .args([
                    log4j_arg.as_str(),
                    "-cp",
                    &classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                ])
                .args(["--cluster-id", "Y29mZmVyLWRldm5ldC0xMA"])
                .arg("--config")
                .arg(&properties),
        )?;

        let mut cmd = Command::new(&java);
        cmd.args([
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            &log4j_arg,
            "-cp",
            &classpath,
            "kafka.Kafka",
        ])
        .arg(&properties);
        let ready = Duration::from_secs(90);
        let connect = async |addr: String| TcpStream::connect(addr);
        let process = NodeProcess::start("kafka", cmd, dir, ready, &bootstrap, connect).await?;
        Ok(Self {
            _process: process,
            bootstrap,
        })
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates `topic` with one partition, so a consumer can subscribe
    /// before the first message: subscribing to a topic that does not exist
    /// yet makes librdkafka report `UnknownTopicOrPartition` instead of
    /// waiting for it.
    pub async fn create_topic(&self, topic: &str) -> Result<(), DevnetError> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::types::RDKafkaErrorCode;

        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .map_err(|e| DevnetError::Other(format!("kafka admin client: {e}")))?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
                &options,
            )
            .await
            .map_err(|e| DevnetError::Other(format!("create topic {topic}: {e}")))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(DevnetError::Other(format!("create topic {name}: {code}")));
                }
            }
        }
        Ok(())
    }
}

/// Broker logs at WARN, plus the lines that say it started.
const LOG4J_PROPERTIES: &str = include_str!("../../scripts/kafka/log4j.properties");

/// A KRaft single-node config: broker and controller in one process.
pub fn broker_properties(port: u16, controller_port: u16, data_dir: &str) -> String {
    format!(
        "process.roles=broker,controller\n\
         node.id=1\n\
         controller.quorum.voters=1@127.0.0.1:{controller_port}\n\
         listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
         log.dirs={data_dir}\n\
         num.partitions=1\n\
         offsets.topic.replication.factor=1\n\
         transaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\n\
         group.initial.rebalance.delay.ms=0\n\
         auto.create.topics.enable=true\n"
    )
}
