//! The daemon end to end: a real server on 127.0.0.1:0 following real nodes
//! into a real PostgreSQL, and the real binary riding out a database outage,
//! a node answering garbage and a node on the wrong network.
//!
//! Per-chain metrics are process-wide, and other tests in this binary run
//! watchers of their own, so tests that read them run the binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use api::grpc::pb::auth_service_client::AuthServiceClient;
use api::grpc::pb::{LoginRequest, RegisterRequest};
use chains::Chain;
use chains::devnet::{Anvil, Btcd, DevnetError, SolanaValidator, free_port, spawn_guarded};
use indexer::chain_heads::recorded_head;
use indexer::devnet::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::{
    Coffer, Daemon, api_only_settings, auth_client, binary_env, binary_env_on_free_ports,
    enable_chain, health_status, loopback, sample, scrape, set, test_settings, wait_for_sample,
    wait_health, wait_serving,
};

async fn reflected_services(addr: SocketAddr) -> Vec<String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
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

async fn register(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
) -> Result<(), tonic::Status> {
    client
        .register(RegisterRequest {
            email: email.into(),
            password: "correct horse battery".into(),
        })
        .await
        .map(drop)
}

/// The bitcoin watcher's committed height, read from the database.
async fn bitcoin_cursor(db: &TestDb) -> Option<i64> {
    sqlx::query_scalar("SELECT height FROM chain_cursors WHERE chain = 'bitcoin'")
        .fetch_optional(db.pool())
        .await
        .expect("read chain_cursors")
}

/// Polls for up to `timeout` until the bitcoin cursor satisfies `check`;
/// `failure` says what went wrong if it never does.
async fn wait_bitcoin_cursor(
    db: &TestDb,
    check: impl Fn(Option<i64>) -> bool,
    timeout: Duration,
    failure: &str,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let cursor = bitcoin_cursor(db).await;
        if check(cursor) {
            return;
        }
        assert!(Instant::now() < deadline, "{failure} (cursor {cursor:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Takes `users` in ACCESS EXCLUSIVE mode, so every query on it waits
/// until the transaction ends.
async fn lock_users(db: &TestDb) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = db.pool().begin().await.expect("begin");
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock users");
    lock
}

/// Polls for up to `timeout` until at least `count` queries of this
/// database wait on a lock; `failure` says what went wrong if they never do.
async fn wait_lock_waiters(db: &TestDb, count: i64, timeout: Duration, failure: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(db.pool())
        .await
        .expect("pg_stat_activity");
        if waiting >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{failure} ({waiting} waiting)");
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    settings.chains.bitcoin.rpc_url = btcd.rpc_url().into();
    settings.chains.ethereum.rpc_url = anvil.rpc_url().into();
    settings.chains.solana.rpc_url = validator.rpc_url().into();
    // Explicit identities that match the nodes are accepted.
    settings.chains.ethereum.chain.chain_id = Some(31_337);
    settings.chains.solana.chain.genesis_hash =
        Some(validator.client().genesis_hash().await.expect("genesis"));
    for interval in [
        &mut settings.chains.bitcoin.poll_interval_ms,
        &mut settings.chains.ethereum.poll_interval_ms,
        &mut settings.chains.solana.poll_interval_ms,
    ] {
        *interval = 100;
    }

    let daemon = Daemon::serving(settings, Duration::from_secs(60)).await;
    let (grpc, metrics) = (daemon.grpc, daemon.metrics());
    assert_ne!(grpc.port(), 0);
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
        "coffer_db_pool_max_connections{pool=\"api\"} 16",
        "coffer_db_pool_max_connections{pool=\"background\"} 8",
        "coffer_db_pool_connections{pool=\"api\",state=\"idle\"}",
        "coffer_db_pool_connections{pool=\"background\",state=\"in_use\"}",
        "# TYPE coffer_watcher_up gauge",
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

    daemon.stop().await;
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
    settings.chains.bitcoin.rpc_url = dead.as_str().into();
    settings.chains.ethereum.rpc_url = dead.as_str().into();
    settings.chains.solana.rpc_url = dead.as_str().into();
    let daemon = Daemon::serving(settings, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !daemon.running.is_finished(),
        "node failures must not stop the daemon"
    );
    assert_eq!(
        health_status(daemon.grpc).await,
        Some(ServingStatus::Serving)
    );
    daemon.stop().await;
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
    let grpc = loopback(free_port());
    let url = db
        .url()
        .replace(&format!(":{}/", pg_addr.port()), &format!(":{proxy_port}/"));
    let mut coffer = Coffer::run(&binary_env(&url, grpc, None));

    // PostgreSQL "down": nothing listens on the proxy port yet.
    coffer
        .wait_logged(
            "PostgreSQL is not reachable yet; retrying",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        health_status(grpc).await,
        Some(ServingStatus::NotServing),
        "serving gRPC but not ready"
    );
    assert!(coffer.running(), "still running while the database is down");

    // PostgreSQL "back": the daemon connects, migrates and serves.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", proxy_port))
        .await
        .expect("bind proxy");
    let forwarding = tokio::spawn(proxy(listener, pg_addr));
    wait_serving(grpc, Duration::from_secs(60)).await;
    assert!(coffer.logged("connected to PostgreSQL"));
    let migrated: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(db.pool())
        .await
        .expect("migrated by the daemon");
    assert!(migrated >= 1);

    let log = coffer.stop().await;
    forwarding.abort();
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
    let mut settings = api_only_settings(&db);
    settings.events.enabled = true;
    settings.events.brokers = broker.bootstrap_servers().to_owned();
    settings.events.topic = "coffer.daemon.test".into();
    let daemon = Daemon::serving(settings, Duration::from_secs(30)).await;

    let ledger = indexer::ledger::Ledger::new(db.pool().clone());
    let user = uuid::Uuid::new_v4();
    let entry = indexer::ledger::NewEntry {
        metadata: serde_json::json!({ "txid": "abc" }),
        ..indexer::devnet::ledger::credit_entry(
            indexer::ledger::EntryKind::DepositCredit,
            indexer::ledger::AccountPurpose::Custody,
            user,
            "SOL",
            7,
            "kafka-e2e",
        )
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

    daemon.stop().await;
}

/// `(TCP_NODELAY, SO_KEEPALIVE)` of every socket this process accepted on
/// `port`: open sockets whose local port is `port` and that have a peer.
#[allow(unsafe_code)]
fn accepted_socket_options(port: u16) -> Vec<(bool, bool)> {
    use std::os::fd::BorrowedFd;
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !socket {
            continue;
        }
        // SAFETY: only read-only socket calls on a descriptor that was open a
        // moment ago. If it closed since (or was reused), the calls fail or
        // describe another socket, which the port check discards.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
        if local.map(|a| a.port()) == Some(port) && peer.is_some() {
            found.push((
                sock.tcp_nodelay().unwrap_or(false),
                sock.keepalive().unwrap_or(false),
            ));
        }
    }
    found
}

/// Polls until this process holds a socket accepted on `port`.
async fn wait_accepted(port: u16) -> Vec<(bool, bool)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = accepted_socket_options(port);
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no socket accepted on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Without TCP_NODELAY every gRPC answer waited ~15 ms for a delayed ACK.
/// The socket options are read off the server's own accepted sockets, so
/// the check does not depend on timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_sockets_have_nodelay_and_keepalive() {
    let db = TestDb::new().await.expect("database");
    let daemon = Daemon::serving(api_only_settings(&db), Duration::from_secs(30)).await;
    let (grpc, metrics) = (daemon.grpc, daemon.metrics());

    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let started = Instant::now();
    for _ in 0..50 {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("Health/Check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32);
    }
    // For the log only: with Nagle this was ~750 ms on one machine.
    eprintln!("50 sequential Health/Check calls: {:?}", started.elapsed());
    for (nodelay, keepalive) in wait_accepted(grpc.port()).await {
        assert!(nodelay, "a gRPC connection without TCP_NODELAY");
        assert!(keepalive, "a gRPC connection without TCP keepalive");
    }

    // The metrics endpoint too: a connection held open by a client.
    let _held = tokio::net::TcpStream::connect(metrics)
        .await
        .expect("connect to metrics");
    for (nodelay, keepalive) in wait_accepted(metrics.port()).await {
        assert!(nodelay, "a metrics connection without TCP_NODELAY");
        assert!(keepalive, "a metrics connection without TCP keepalive");
    }

    daemon.stop().await;
}

/// Serves HTTP on a free loopback port, answering every request with 200
/// and bytes that are no JSON-RPC answer; counts the requests.
async fn garbage_node() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind garbage node");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                // Read the whole request (headers, then Content-Length bytes),
                // so the client sees an answer rather than a reset.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let body: &[u8] = b"\x00\xff{\"jsonrpc\":\"2.0\",\"result\":[[[ garbage";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_node_answering_garbage_leaves_the_api_and_other_chains_serving() {
    let db = TestDb::new().await.expect("database");
    let btcd = Btcd::spawn().await.expect("btcd");
    let (garbage, hits) = garbage_node().await;
    let (grpc, metrics, mut env) = binary_env_on_free_ports(&db.url());
    enable_chain(&mut env, Chain::Bitcoin, btcd.rpc_url());
    set(&mut env, "COFFER__CHAINS__BITCOIN__POLL_INTERVAL_MS", "100");
    enable_chain(&mut env, Chain::Ethereum, garbage);
    set(
        &mut env,
        "COFFER__CHAINS__ETHEREUM__POLL_INTERVAL_MS",
        "100",
    );
    let mut coffer = Coffer::run(&env);
    wait_serving(grpc, Duration::from_secs(60)).await;

    // The garbage node's chain restarts with backoff and shows as down ...
    wait_for_sample(
        metrics,
        "coffer_watcher_restarts_total{chain=\"ethereum\"}",
        |n| n >= 2.0,
    )
    .await;
    assert!(hits.load(Ordering::SeqCst) >= 2, "the node was asked again");
    let body = scrape(metrics).await;
    assert_eq!(
        sample(&body, "coffer_watcher_up{chain=\"ethereum\"}"),
        Some(0.0),
        "{body}"
    );
    // ... while the API answers calls that need the database ...
    let mut client = auth_client(grpc).await;
    register(&mut client, "garbage-node@example.com")
        .await
        .expect("Register while a node answers garbage");
    client
        .login(LoginRequest {
            email: "garbage-node@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("Login while a node answers garbage");
    // ... and the other chain keeps indexing.
    wait_for_sample(metrics, "coffer_watcher_up{chain=\"bitcoin\"}", |v| {
        v == 1.0
    })
    .await;
    btcd.generate(2).await.expect("mine");
    wait_bitcoin_cursor(
        &db,
        |cursor| cursor == Some(2),
        Duration::from_secs(60),
        "bitcoin never indexed block 2",
    )
    .await;
    assert_eq!(health_status(grpc).await, Some(ServingStatus::Serving));
    assert!(coffer.running(), "the daemon keeps running");
    assert!(
        coffer.logged("deposit watcher is down; restarting it"),
        "{}",
        coffer.log()
    );

    coffer.stop().await;
}

/// Logins whose query waits on a lock hold every connection of the API
/// pool; the watcher commits anyway, on a pool of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_login_flood_cannot_stop_a_watcher_committing() {
    let db = TestDb::new().await.expect("database");
    let btcd = Btcd::spawn().await.expect("btcd");
    let mut settings = test_settings(&db);
    settings.metrics.enabled = false;
    settings.chains.bitcoin.rpc_url = btcd.rpc_url().into();
    settings.chains.bitcoin.poll_interval_ms = 100;
    settings.chains.ethereum.enabled = false;
    settings.chains.solana.enabled = false;
    let api_connections = i64::from(settings.database.max_connections);
    let daemon = Daemon::serving(settings, Duration::from_secs(30)).await;
    let grpc = daemon.grpc;
    wait_bitcoin_cursor(
        &db,
        |cursor| cursor.is_some(),
        Duration::from_secs(30),
        "the bitcoin watcher never started",
    )
    .await;

    // Every Login's query now waits for this lock, holding its connection.
    let lock = lock_users(&db).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for connection in 0..4 {
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        for caller in 0..40 {
            let mut client = AuthServiceClient::new(channel.clone());
            let stop = Arc::clone(&stop);
            flood.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = client
                        .login(LoginRequest {
                            email: format!("flood-{connection}-{caller}@example.com"),
                            password: "not the password".into(),
                        })
                        .await;
                    if answer.is_err() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
    }
    // The flood holds the whole API pool ...
    wait_lock_waiters(
        &db,
        api_connections,
        Duration::from_secs(30),
        "the flood never held the API pool",
    )
    .await;
    // ... and the watcher still commits new blocks.
    btcd.generate(3).await.expect("mine");
    wait_bitcoin_cursor(
        &db,
        |cursor| cursor == Some(3),
        Duration::from_secs(30),
        "the watcher did not commit during the flood",
    )
    .await;
    assert_eq!(health_status(grpc).await, Some(ServingStatus::Serving));

    stop.store(true, Ordering::Relaxed);
    lock.rollback().await.expect("unlock");
    for caller in flood {
        tokio::time::timeout(Duration::from_secs(30), caller)
            .await
            .expect("flood callers finish once the lock is gone")
            .expect("flood task");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_limits_refuse_excess_calls_oversized_messages_and_slow_calls() {
    let db = TestDb::new().await.expect("database");
    let mut settings = api_only_settings(&db);
    settings.metrics.enabled = false;
    settings.grpc.concurrency_limit = 4;
    settings.grpc.queue_limit = 0;
    settings.grpc.request_timeout_ms = 1_500;
    settings.grpc.max_message_bytes = 64 * 1024;
    let daemon = Daemon::serving(settings, Duration::from_secs(30)).await;
    let mut client = auth_client(daemon.grpc).await;
    let bounded = Duration::from_secs(20);

    // A message over the limit is refused before any handler runs.
    let oversized = tokio::time::timeout(bounded, register(&mut client, &"x".repeat(100 * 1024)))
        .await
        .expect("answered")
        .expect_err("refused");
    assert_eq!(oversized.code(), Code::OutOfRange, "{oversized:?}");

    // Calls stuck on a lock end at the deadline ...
    let lock = lock_users(&db).await;
    let stuck: Vec<_> = (0..4)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = client
                    .login(LoginRequest {
                        email: format!("stuck-{i}@example.com"),
                        password: "whatever it is".into(),
                    })
                    .await;
                (answer.map(drop), started.elapsed())
            })
        })
        .collect();
    wait_lock_waiters(&db, 4, bounded, "the logins never reached the lock").await;
    // ... and while they run, a fifth call, finding no room to wait, is
    // told at once that the server is busy.
    let refused = tokio::time::timeout(bounded, register(&mut client, "fifth@example.com"))
        .await
        .expect("answered")
        .expect_err("refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().starts_with("server busy"), "{refused:?}");
    for call in stuck {
        let (answer, elapsed) = tokio::time::timeout(bounded, call)
            .await
            .expect("the deadline ends a stuck call")
            .expect("task");
        let status = answer.expect_err("timed out");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(elapsed >= Duration::from_millis(1_400), "{elapsed:?}");
    }
    lock.rollback().await.expect("unlock");
    register(&mut client, "after-the-limits@example.com")
        .await
        .expect("served again once the stuck calls ended");

    daemon.stop().await;
}

fn tls_fixture(name: &str) -> PathBuf {
    // A throwaway CA and a certificate for localhost and 127.0.0.1 signed by
    // it, valid until 2126: test fixtures only.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/tls")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_serves_tls_clients_only() {
    let db = TestDb::new().await.expect("database");
    let mut settings = api_only_settings(&db);
    settings.metrics.enabled = false;
    settings.grpc.tls.cert_file = Some(tls_fixture("server.pem"));
    settings.grpc.tls.key_file = Some(tls_fixture("server.key"));
    let daemon = Daemon::start(settings).await;
    let grpc = daemon.grpc;

    let ca = std::fs::read(tls_fixture("ca.pem")).expect("ca.pem");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{grpc}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("TLS handshake");
    let mut health = HealthClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("Health/Check over TLS")
            .into_inner()
            .status;
        if status == ServingStatus::Serving as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "not SERVING over TLS");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut client = AuthServiceClient::new(channel);
    register(&mut client, "tls@example.com")
        .await
        .expect("Register over TLS");
    assert_eq!(
        health_status(grpc).await,
        None,
        "plaintext gRPC is not served"
    );

    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_the_wrong_network_halts_only_its_chain() {
    let db = TestDb::new().await.expect("database");
    let btcd = Btcd::spawn().await.expect("btcd");
    let anvil = Anvil::spawn().await.expect("anvil");
    let validator = SolanaValidator::shared()
        .await
        .expect("solana-test-validator");
    let (grpc, metrics, mut env) = binary_env_on_free_ports(&db.url());
    // btcd is on regtest, not signet.
    enable_chain(&mut env, Chain::Bitcoin, btcd.rpc_url());
    set(&mut env, "COFFER__CHAINS__BITCOIN__NETWORK", "signet");
    // anvil is the chain configured.
    enable_chain(&mut env, Chain::Ethereum, anvil.rpc_url());
    set(&mut env, "COFFER__CHAINS__ETHEREUM__CHAIN_ID", "31337");
    set(
        &mut env,
        "COFFER__CHAINS__ETHEREUM__POLL_INTERVAL_MS",
        "100",
    );
    // The local validator is not Solana's testnet.
    enable_chain(&mut env, Chain::Solana, validator.rpc_url());
    set(
        &mut env,
        "COFFER__CHAINS__SOLANA__GENESIS_HASH",
        "4uhcVJyU9pJkvQyS88uRDiswHXSCkY3zQawwpjk2NsNY",
    );
    let mut coffer = Coffer::run(&env);
    wait_serving(grpc, Duration::from_secs(60)).await;

    for key in ["chains.bitcoin.network", "chains.solana.genesis_hash"] {
        coffer
            .wait_logged(&format!("config key `{key}`"), Duration::from_secs(60))
            .await;
    }
    for chain in ["bitcoin", "solana"] {
        wait_for_sample(
            metrics,
            &format!("coffer_watcher_halted{{chain=\"{chain}\"}}"),
            |v| v == 1.0,
        )
        .await;
    }
    let tip = wait_for_sample(
        metrics,
        "coffer_chain_tip_height{chain=\"ethereum\"}",
        |_| true,
    )
    .await;
    anvil.mine(3).await.expect("mine");
    wait_for_sample(
        metrics,
        "coffer_chain_tip_height{chain=\"ethereum\"}",
        |h| h >= tip + 3.0,
    )
    .await;
    let body = scrape(metrics).await;
    for (series, value) in [
        ("coffer_watcher_up{chain=\"ethereum\"}", 1.0),
        ("coffer_watcher_up{chain=\"bitcoin\"}", 0.0),
        ("coffer_watcher_up{chain=\"solana\"}", 0.0),
        ("coffer_watcher_halted{chain=\"ethereum\"}", 0.0),
    ] {
        assert_eq!(sample(&body, series), Some(value), "{series}:\n{body}");
    }
    assert_eq!(
        bitcoin_cursor(&db).await,
        None,
        "a halted chain indexes nothing"
    );
    assert_eq!(health_status(grpc).await, Some(ServingStatus::Serving));
    assert!(coffer.running());

    let log = coffer.stop().await;
    assert!(
        !log.contains("restarting it"),
        "a wrong network is never retried:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_claiming_mainnet_is_refused_off_mainnet() {
    let db = TestDb::new().await.expect("database");
    let anvil = Anvil::spawn_with_args(&["--chain-id", "1"])
        .await
        .expect("anvil");
    let (grpc, metrics, mut env) = binary_env_on_free_ports(&db.url());
    enable_chain(&mut env, Chain::Ethereum, anvil.rpc_url());
    let coffer = Coffer::run(&env);
    wait_serving(grpc, Duration::from_secs(60)).await;
    wait_for_sample(metrics, "coffer_watcher_halted{chain=\"ethereum\"}", |v| {
        v == 1.0
    })
    .await;
    let log = coffer.stop().await;
    assert!(
        log.contains("config key `chains.ethereum.chain_id`") && log.contains("Ethereum mainnet"),
        "{log}"
    );
}

/// Node URLs carry API keys: none of them may reach a log line, whatever
/// the node does with the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_url_secrets_never_reach_the_log() {
    let db = TestDb::new().await.expect("database");
    let grpc = loopback(free_port());
    let dead = free_port();
    let (garbage, _) = garbage_node().await;
    let garbage_port = garbage.rsplit(':').next().expect("port").to_owned();
    let secrets = [
        "btc-secret-1",
        "eth-user",
        "eth-secret-2",
        "eth-secret-3",
        "sol-secret-4",
    ];
    let mut env = binary_env(&db.url(), grpc, None);
    set(
        &mut env,
        "RUST_LOG",
        "info,api=debug,indexer=debug,chains=debug",
    );
    enable_chain(
        &mut env,
        Chain::Bitcoin,
        format!("http://127.0.0.1:{dead}/wallet/btc-secret-1"),
    );
    enable_chain(
        &mut env,
        Chain::Ethereum,
        format!("http://eth-user:eth-secret-2@127.0.0.1:{dead}/v3/eth-secret-3"),
    );
    enable_chain(
        &mut env,
        Chain::Solana,
        format!("http://127.0.0.1:{garbage_port}/?api-key=sol-secret-4"),
    );
    let coffer = Coffer::run(&env);
    wait_serving(grpc, Duration::from_secs(60)).await;
    // Each chain's node was asked and failed, and that was logged.
    for method in ["`getblockchaininfo`", "`eth_chainId`", "`getGenesisHash`"] {
        coffer.wait_logged(method, Duration::from_secs(30)).await;
    }
    let log = coffer.stop().await;
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    assert!(log.contains("://[REDACTED]"), "{log}");
}

/// A PostgreSQL server of this test's own (initdb into a temp dir, on a
/// free port, with the binaries `./scripts/devnet install` provides), so
/// stopping it disturbs no test on the shared devnet server.
struct OwnPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// `postgres`'s uid and gid when running as root (initdb refuses root).
    owner: Option<(u32, u32)>,
    server: Option<Child>,
    _dir: tempfile::TempDir,
}

impl OwnPostgres {
    async fn start() -> Self {
        let bin = postgres_bin();
        let owner = postgres_owner();
        let mut builder = tempfile::Builder::new();
        builder.prefix("coffer-own-postgres-");
        // As root the cluster belongs to `postgres`, which may not reach
        // TMPDIR (the test script keeps it under root's home): /var/tmp, as
        // the devnet script does.
        let dir = match owner {
            Some(_) => builder.tempdir_in("/var/tmp"),
            None => builder.tempdir(),
        }
        .expect("temp dir");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .current_dir(dir.path());
        as_owner(&mut initdb, owner);
        let output = initdb.output().expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut pg = Self {
            bin,
            data,
            port: free_port(),
            owner,
            server: None,
            _dir: dir,
        };
        pg.spawn().await;
        let mut admin = pg.connect("postgres").await;
        sqlx::query("CREATE DATABASE coffer")
            .execute(&mut admin)
            .await
            .expect("create database");
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/coffer", self.port)
    }

    async fn connect(&self, database: &str) -> sqlx::PgConnection {
        use sqlx::Connection;
        let url = format!("postgres://postgres@127.0.0.1:{}/{database}", self.port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match sqlx::PgConnection::connect(&url).await {
                Ok(connection) => return connection,
                Err(err) => assert!(
                    Instant::now() < deadline,
                    "own PostgreSQL never answered: {err}; log:\n{}",
                    self.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_file_name("postgres.log")).unwrap_or_default()
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.with_file_name("postgres.log"))
            .expect("log file");
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.data.parent().expect("dir").display()
            ))
            .args(["-c", "fsync=off", "-c", "max_connections=100"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        as_owner(&mut cmd, self.owner);
        self.server = Some(spawn_guarded(cmd).expect("spawn postgres"));
        drop(self.connect("postgres").await);
    }

    /// `pg_ctl stop -m immediate`: SIGQUIT to the postmaster, no checkpoint,
    /// connections cut.
    async fn stop_immediately(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-QUIT", &server.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.try_wait().expect("poll postgres").is_none() {
            assert!(Instant::now() < deadline, "postgres did not stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if let Some(server) = &mut self.server {
            let _ = Command::new("kill")
                .args(["-QUIT", &server.id().to_string()])
                .status();
            let _ = server.wait();
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`, as
/// `scripts/devnet` uses.
fn postgres_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "{}",
            DevnetError::MissingTool {
                tool: "initdb".into(),
                looked: "/usr/lib/postgresql/*/bin".into(),
            }
        ),
    }
}

/// As root, `postgres`'s uid and gid; otherwise `None` (run as ourselves).
fn postgres_owner() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let output = Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    let owner = id(&["-u", "postgres"]).zip(id(&["-g", "postgres"]));
    assert!(
        owner.is_some(),
        "running as root needs a `postgres` user for initdb; install PostgreSQL with `./scripts/devnet install`"
    );
    owner
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        cmd.gid(gid).uid(uid);
    }
}

/// With PostgreSQL stopped, a call that needs it answers UNAVAILABLE (a
/// client retries that; INTERNAL means a bug) and health turns NOT_SERVING;
/// both recover once PostgreSQL is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_unavailable_and_health_follows_it() {
    let mut pg = OwnPostgres::start().await;
    let (grpc, metrics, mut env) = binary_env_on_free_ports(&pg.url());
    set(&mut env, "COFFER__DATABASE__ACQUIRE_TIMEOUT_MS", "1000");
    let coffer = Coffer::run(&env);
    wait_serving(grpc, Duration::from_secs(60)).await;
    let mut client = auth_client(grpc).await;
    register(&mut client, "before@example.com")
        .await
        .expect("Register with PostgreSQL up");
    wait_for_sample(metrics, "coffer_db_up", |v| v == 1.0).await;

    pg.stop_immediately().await;
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        register(&mut client, "during@example.com"),
    )
    .await
    .expect("answered")
    .expect_err("no database");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    wait_health(grpc, ServingStatus::NotServing, Duration::from_secs(15)).await;
    wait_for_sample(metrics, "coffer_db_up", |v| v == 0.0).await;

    pg.spawn().await;
    wait_health(grpc, ServingStatus::Serving, Duration::from_secs(30)).await;
    register(&mut client, "after@example.com")
        .await
        .expect("Register once PostgreSQL is back");
    wait_for_sample(metrics, "coffer_db_up", |v| v == 1.0).await;

    let log = coffer.stop().await;
    assert!(
        log.contains("PostgreSQL is unreachable; health NOT_SERVING")
            && log.contains("PostgreSQL answers again; health SERVING"),
        "{log}"
    );
    assert!(!log.contains("internal error"), "{log}");
}
