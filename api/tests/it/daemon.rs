//! The daemon end to end: a real server on 127.0.0.1:0 following real nodes
//! into a real PostgreSQL, and the real binary riding out a database outage.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{App, Settings};
use chains::Chain;
use chains::devnet::{Anvil, Btcd, SolanaValidator, free_port};
use indexer::devnet::TestDb;
use indexer::watch::recorded_head;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::{health_status, sample, scrape, wait_serving};

fn test_settings(db: &TestDb) -> Settings {
    let mut settings = Settings::default();
    settings.database.url = db.url().as_str().into();
    settings.grpc.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.metrics.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.events.enabled = false;
    settings
}

async fn reflected_services(addr: SocketAddr) -> Vec<String> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .next()
        .await
        .expect("one response")
        .expect("ok response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection response: {other:?}"),
    }
}

/// Polls the metrics endpoint until `series` satisfies `check`.
async fn wait_for_sample(addr: SocketAddr, series: &str, check: impl Fn(f64) -> bool) -> f64 {
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
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_health_reflection_and_follows_all_three_chains() {
    let db = TestDb::empty().await.expect("database");
    let btcd = Btcd::spawn().await.expect("btcd");
    let anvil = Anvil::spawn().await.expect("anvil");
    let validator = SolanaValidator::shared()
        .await
        .expect("solana-test-validator");

    let mut settings = test_settings(&db);
    settings.chains.bitcoin.rpc_url = btcd.rpc_url().to_owned();
    settings.chains.ethereum.rpc_url = anvil.rpc_url().to_owned();
    settings.chains.solana.rpc_url = validator.rpc_url().to_owned();
    for interval in [
        &mut settings.chains.bitcoin.poll_interval_ms,
        &mut settings.chains.ethereum.poll_interval_ms,
        &mut settings.chains.solana.poll_interval_ms,
    ] {
        *interval = 100;
    }

    let app = App::bind(settings).await.expect("bind");
    let grpc = app.grpc_addr().expect("grpc bound");
    let metrics = app.metrics_addr().expect("metrics bound");
    assert_ne!(grpc.port(), 0);
    let cancel = CancellationToken::new();
    let running = tokio::spawn(app.run(cancel.clone()));

    wait_serving(grpc, Duration::from_secs(60)).await;
    let migrated: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(db.pool())
        .await
        .expect("`coffer run` applied the migrations");
    assert!(migrated >= 1);

    let services = reflected_services(grpc).await;
    for expected in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "coffer.v1.AuthService",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} missing from {services:?}"
        );
    }

    let body = scrape(metrics).await;
    for series in [
        "coffer_build_info{version=\"0.1.0\"} 1",
        "# TYPE coffer_uptime_seconds gauge",
        "coffer_db_pool_max_connections 16",
        "coffer_db_pool_connections{state=\"idle\"}",
        "coffer_db_pool_connections{state=\"in_use\"}",
    ] {
        assert!(
            body.contains(series),
            "{series} missing from /metrics:\n{body}"
        );
    }

    // The tips move as blocks are mined.
    wait_for_sample(metrics, "coffer_chain_tip_height{chain=\"bitcoin\"}", |h| {
        h == 0.0
    })
    .await;
    btcd.generate(3).await.expect("mine bitcoin");
    wait_for_sample(metrics, "coffer_chain_tip_height{chain=\"bitcoin\"}", |h| {
        h == 3.0
    })
    .await;

    let eth_before = wait_for_sample(
        metrics,
        "coffer_chain_tip_height{chain=\"ethereum\"}",
        |_| true,
    )
    .await;
    anvil.mine(5).await.expect("mine ethereum");
    wait_for_sample(
        metrics,
        "coffer_chain_tip_height{chain=\"ethereum\"}",
        |h| h == eth_before + 5.0,
    )
    .await;

    let slot = wait_for_sample(metrics, "coffer_chain_tip_height{chain=\"solana\"}", |s| {
        s > 0.0
    })
    .await;
    wait_for_sample(metrics, "coffer_chain_tip_height{chain=\"solana\"}", |s| {
        s > slot
    })
    .await;

    // And the watchers record them in the database.
    let head = recorded_head(db.pool(), Chain::Bitcoin)
        .await
        .expect("read head")
        .expect("bitcoin head");
    assert_eq!(head.height, 3);
    assert_eq!(
        head.hash,
        Some(
            btcd.client()
                .best_block_hash()
                .await
                .expect("best")
                .to_string()
        )
    );
    assert!(
        recorded_head(db.pool(), Chain::Ethereum)
            .await
            .expect("read")
            .is_some()
    );
    assert!(
        recorded_head(db.pool(), Chain::Solana)
            .await
            .expect("read")
            .is_some()
    );

    cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("shut down within 20 s")
        .expect("run task");
    assert!(stopped.is_ok(), "clean shutdown: {stopped:?}");
    assert_eq!(
        health_status(grpc).await,
        None,
        "the gRPC listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_chain_nodes_are_retried_not_fatal() {
    let db = TestDb::empty().await.expect("database");
    let mut settings = test_settings(&db);
    let dead = format!("http://127.0.0.1:{}", free_port());
    settings.chains.bitcoin.rpc_url = dead.clone();
    settings.chains.ethereum.rpc_url = dead.clone();
    settings.chains.solana.rpc_url = dead;
    let app = App::bind(settings).await.expect("bind");
    let grpc = app.grpc_addr().expect("grpc");
    let cancel = CancellationToken::new();
    let running = tokio::spawn(app.run(cancel.clone()));
    wait_serving(grpc, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !running.is_finished(),
        "node failures must not stop the daemon"
    );
    assert_eq!(health_status(grpc).await, Some(ServingStatus::Serving));
    cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("stops")
        .expect("task");
    assert!(stopped.is_ok(), "{stopped:?}");
}

/// Forwards every connection on `listener` to `target`.
async fn proxy(listener: tokio::net::TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_retries_until_postgres_answers_then_stops_on_sigterm() {
    let db = TestDb::empty().await.expect("database");
    let options = db.connect_options();
    let pg_addr: SocketAddr = format!("{}:{}", options.get_host(), options.get_port())
        .parse()
        .expect("PostgreSQL on an IP address");
    let proxy_port = free_port();
    let grpc_port = free_port();
    let url = db
        .url()
        .replace(&format!(":{}/", pg_addr.port()), &format!(":{proxy_port}/"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("run")
        .env("COFFER__DATABASE__URL", &url)
        .env("COFFER__GRPC__LISTEN", format!("127.0.0.1:{grpc_port}"))
        .env("COFFER__METRICS__ENABLED", "false")
        .env("COFFER__EVENTS__ENABLED", "false")
        .env("COFFER__CHAINS__BITCOIN__ENABLED", "false")
        .env("COFFER__CHAINS__ETHEREUM__ENABLED", "false")
        .env("COFFER__CHAINS__SOLANA__ENABLED", "false")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coffer");
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log = Arc::clone(&log);
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut log) = log.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        })
    };
    let logged = |needle: &str| log.lock().map(|l| l.contains(needle)).unwrap_or(false);
    let grpc = SocketAddr::from(([127, 0, 0, 1], grpc_port));

    // PostgreSQL "down": nothing listens on the proxy port yet.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !logged("PostgreSQL is not reachable yet; retrying") {
        assert!(
            Instant::now() < deadline,
            "no retry log line:\n{}",
            log.lock().map(|l| l.clone()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        health_status(grpc).await,
        Some(ServingStatus::NotServing),
        "serving gRPC but not ready"
    );
    assert!(
        child.try_wait().expect("poll child").is_none(),
        "still running while the database is down"
    );

    // PostgreSQL "back": the daemon connects, migrates and serves.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", proxy_port))
        .await
        .expect("bind proxy");
    let forwarding = tokio::spawn(proxy(listener, pg_addr));
    wait_serving(grpc, Duration::from_secs(60)).await;
    assert!(logged("connected to PostgreSQL"));
    let migrated: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(db.pool())
        .await
        .expect("migrated by the daemon");
    assert!(migrated >= 1);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("poll child") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "coffer did not stop within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = reader.join();
    forwarding.abort();
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(exit.success(), "exit status {exit:?}; log:\n{log}");
    assert!(
        log.contains("SIGTERM received") && log.contains("stopped"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_publishes_ledger_entries_to_kafka() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;

    let broker = indexer::devnet::KafkaBroker::spawn()
        .await
        .expect("start Kafka");
    let db = TestDb::new().await.expect("database");
    let mut settings = test_settings(&db);
    settings.events.enabled = true;
    settings.events.brokers = broker.bootstrap_servers().to_owned();
    settings.events.topic = "coffer.daemon.test".into();
    settings.chains.bitcoin.enabled = false;
    settings.chains.ethereum.enabled = false;
    settings.chains.solana.enabled = false;
    let app = App::bind(settings).await.expect("bind");
    let grpc = app.grpc_addr().expect("grpc");
    let cancel = CancellationToken::new();
    let running = tokio::spawn(app.run(cancel.clone()));
    wait_serving(grpc, Duration::from_secs(30)).await;

    let ledger = indexer::ledger::Ledger::new(db.pool().clone());
    let user = uuid::Uuid::new_v4();
    let entry = indexer::ledger::NewEntry {
        kind: indexer::ledger::EntryKind::DepositCredit,
        reference: "kafka-e2e".into(),
        metadata: serde_json::json!({ "txid": "abc" }),
        legs: vec![
            indexer::ledger::Leg::decrease(
                indexer::ledger::AccountRef::system(
                    "SOL",
                    indexer::ledger::AccountPurpose::Custody,
                ),
                indexer::ledger::Amount::from_u64(7),
            ),
            indexer::ledger::Leg::increase(
                indexer::ledger::AccountRef::available(user, "SOL"),
                indexer::ledger::Amount::from_u64(7),
            ),
        ],
    };
    let posted = ledger
        .post(
            &indexer::ledger::IdempotencyKey::new("e2e", "kafka"),
            &entry,
        )
        .await
        .expect("post");

    broker
        .create_topic("coffer.daemon.test")
        .await
        .expect("create topic");
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "coffer-daemon-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&["coffer.daemon.test"])
        .expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("the daemon publishes within 60 s")
        .expect("consume");
    let event: serde_json::Value =
        serde_json::from_slice(message.payload().expect("payload")).expect("json");
    assert_eq!(event["entry_id"], posted.id);
    assert_eq!(event["reference"], "kafka-e2e");
    assert_eq!(event["metadata"]["txid"], "abc");

    cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("stops")
        .expect("task");
    assert!(stopped.is_ok(), "{stopped:?}");
}
