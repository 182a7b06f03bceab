//! Ethereum withdrawals: a bare client against the daemon, in one run on
//! the same anvil (`cargo bench -p api --bench ethereum_withdrawals`; it
//! lives in `api` because it drives the real `coffer` binary over gRPC).
//!
//! (a) the reference: one client signs `COFFER_BENCH_WITHDRAWALS` ETH
//!     transfers (default 1000) with consecutive nonces, sends them
//!     `CONCURRENCY` at a time and waits for every receipt;
//! (b) Coffer: the same number of `RequestWithdrawal` calls over gRPC
//!     (`CONCURRENCY` in flight, spread over `USERS` users funded by real
//!     deposits that the daemon swept into its hot wallet first), timed
//!     from the first request until every withdrawal is completed.
//!
//! Prints both rates in transfers/s, the ratio b/a, and the p50/p99 time
//! from a request to its first broadcast. anvil automines: each
//! transaction is a block, and completion is at one confirmation.

// Rates and ratios are measurements, not amounts of money.
#![allow(clippy::float_arithmetic)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use api::grpc::pb;
use api::grpc::pb::auth_service_client::AuthServiceClient;
use api::grpc::pb::withdrawal_service_client::WithdrawalServiceClient;
use chains::Chain;
use chains::devnet::{Anvil, free_port};
use chains::ethereum::SendOutcome;
use futures::StreamExt;
use indexer::devnet::bench;
use indexer::devnet::deposits::{deposit_keys, users_with_addresses_from};
use indexer::users::{Role, Users};
use signer::KeyId;
use signer::ethereum::{Payment, UnsignedTransaction};
use tonic::Request;
use tonic::transport::Channel;

const CONCURRENCY: usize = 32;
const USERS: usize = 50;
const WEI_PER_ETH: u128 = 1_000_000_000_000_000_000;
/// Each withdrawal and each reference transfer: 1 mETH.
const AMOUNT: u128 = WEI_PER_ETH / 1000;
const MAX_FEE: u128 = 20_000_000_000;
const TIP: u128 = 1_000_000_000;
/// A derivation index no user is issued in this run: the reference's key.
const REFERENCE_INDEX: u32 = 1_000_000;
/// No new receipt for this long means anvil has stalled the reference.
const STALL: Duration = Duration::from_secs(2);

fn main() {
    let count = bench::env("COFFER_BENCH_WITHDRAWALS", 1000).max(1);
    bench::runtime().block_on(run(count));
}

fn outside(i: u64) -> Address {
    Address::from_word(alloy_primitives::keccak256(
        [b"outside".as_slice(), &i.to_be_bytes()].concat(),
    ))
}

async fn run(count: u64) {
    let anvil = bench::node("anvil", Anvil::spawn().await);
    let db = bench::database().await;

    let reference = measure_reference(&anvil, count).await;
    println!(
        "reference: {count} signed transfers sent and mined in {:.2} s: {:.1} transfers/s",
        reference.as_secs_f64(),
        count as f64 / reference.as_secs_f64()
    );

    let mut coffer = Daemon::start(&db, &anvil).await;
    let channel = Channel::from_shared(format!("http://{}", coffer.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let token = service_token(&db, channel.clone()).await;
    let users = fund_users(&db, &anvil, count).await;
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let mut client = WithdrawalServiceClient::new(channel.clone());
            let user = users[i as usize % users.len()];
            let token = token.clone();
            async move {
                let mut request = Request::new(pb::RequestWithdrawalRequest {
                    asset: "ETH".into(),
                    amount: AMOUNT.to_string(),
                    destination: outside(count + i).to_checksum(None),
                    idempotency_key: format!("bench-{i}"),
                    user_id: Some(user.to_string()),
                });
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}").parse().expect("header"),
                );
                client.request_withdrawal(request).await.expect("request");
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let requested = started.elapsed();
    wait_for(
        &db,
        &mut coffer,
        count,
        "completed",
        Duration::from_secs(1800),
    )
    .await;
    let elapsed = started.elapsed();
    let (p50, p99) = broadcast_latency(&db).await;
    let rate = count as f64 / elapsed.as_secs_f64();
    let reference_rate = count as f64 / reference.as_secs_f64();
    println!(
        "coffer: {count} withdrawals requested in {:.2} s, completed in {:.2} s: {rate:.1} withdrawals/s",
        requested.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("request to broadcast: p50 {p50:.0} ms, p99 {p99:.0} ms");
    println!(
        "ratio coffer/reference: {:.2} (target >= 0.5)",
        rate / reference_rate
    );
    drop(coffer);
}

/// (a), measured again from a fresh key when anvil stalls a run.
async fn measure_reference(anvil: &Anvil, count: u64) -> Duration {
    for attempt in 0..3 {
        if let Some(elapsed) = reference(anvil, count, REFERENCE_INDEX + attempt).await {
            return elapsed;
        }
        println!("reference run {attempt} stalled in anvil's pool; measuring again");
    }
    panic!("the reference stalled in anvil's pool three times");
}

/// (a): sign `count` transfers from a fresh key, send them, await receipts.
/// `None` when anvil leaves a transaction queued behind a nonce it has
/// already mined (its pool can miss the promotion when sends arrive out of
/// order): the stalled run is discarded, not timed.
async fn reference(anvil: &Anvil, count: u64, key_index: u32) -> Option<Duration> {
    let keys = deposit_keys();
    let sign = |nonce: u64| {
        keys.sign_ethereum(
            KeyId::Deposit(key_index),
            &UnsignedTransaction {
                chain_id: 31337,
                nonce,
                max_fee_per_gas: MAX_FEE,
                max_priority_fee_per_gas: TIP,
                gas_limit: 21_000,
                payment: Payment::Ether {
                    to: outside(nonce),
                    value: U256::from(AMOUNT),
                },
            },
        )
        .expect("sign")
    };
    let from = sign(0).from;
    anvil
        .set_balance(from, U256::from(10_000 * WEI_PER_ETH))
        .await
        .expect("fund the reference");
    let client = anvil.client();
    let started = Instant::now();
    let hashes: Vec<B256> = futures::stream::iter(0..count)
        .map(|nonce| async move {
            let signed = sign(nonce);
            match client.send_raw_transaction(&signed.raw).await {
                Ok(SendOutcome::Accepted(_) | SendOutcome::AlreadyKnown) => signed.hash,
                other => panic!("reference send {nonce}: {other:?}"),
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let (mut mined, mut seen, mut progressed) = (0, 0, Instant::now());
    for chunk in hashes.chunks(200) {
        loop {
            let receipts = client.receipts(chunk).await.expect("receipts");
            let found = receipts.iter().filter(|r| r.is_some()).count();
            if mined + found > seen {
                seen = mined + found;
                progressed = Instant::now();
            }
            if found == chunk.len() {
                mined += found;
                break;
            }
            if progressed.elapsed() > STALL {
                // A block nudges the pool; the run is discarded either way.
                anvil.mine(1).await.expect("mine");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Some(started.elapsed())
}

/// `USERS` users, each credited by a real deposit enough for its share of
/// `count` withdrawals, every deposit swept into the hot wallet.
async fn fund_users(db: &indexer::devnet::TestDb, anvil: &Anvil, count: u64) -> Vec<uuid::Uuid> {
    let users = users_with_addresses_from(db.pool(), Chain::Ethereum, USERS, 0).await;
    let each = U256::from(AMOUNT * 2 * (u128::from(count) / USERS as u128 + 1) + WEI_PER_ETH / 100);
    for (_, address) in &users {
        let to: Address = address.parse().expect("address");
        anvil
            .send(Anvil::DEV_ACCOUNT, to, each, &[], None)
            .await
            .expect("deposit");
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (credited, swept): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM deposits WHERE status = 'credited'),
                    (SELECT count(*) FROM withdrawals WHERE kind = 'sweep' AND status = 'completed')",
        )
        .fetch_one(db.pool())
        .await
        .expect("progress");
        if credited == USERS as i64 && swept == USERS as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deposits credited and swept within 300 s"
        );
        anvil.mine(1).await.expect("mine");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    users.into_iter().map(|(user, _)| user).collect()
}

/// A service-role account's access token: it requests on users' behalf.
async fn service_token(db: &indexer::devnet::TestDb, channel: Channel) -> String {
    let hash = api::auth::password::hash_password("bench service passphrase").expect("hash");
    Users::new(db.pool().clone())
        .create("bench-service@example.com", &hash, Role::Service)
        .await
        .expect("service user");
    AuthServiceClient::new(channel)
        .login(pb::LoginRequest {
            email: "bench-service@example.com".into(),
            password: "bench service passphrase".into(),
        })
        .await
        .expect("login")
        .into_inner()
        .access_token
}

/// Waits for `count` withdrawals in `status`; fails at once, with its exit
/// status, if the daemon exits meanwhile.
async fn wait_for(
    db: &indexer::devnet::TestDb,
    daemon: &mut Daemon,
    count: u64,
    status: &str,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(exit) = daemon.child.try_wait().expect("daemon status") {
            panic!("the daemon exited ({exit}) before {count} withdrawals were {status}");
        }
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM withdrawals WHERE kind = 'withdrawal' AND status = $1::withdrawal_status",
        )
        .bind(status)
        .fetch_one(db.pool())
        .await
        .expect("count");
        if done == count as i64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} withdrawals {status} within {limit:?}; {done} are"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// p50 and p99 of request to first broadcast, in milliseconds.
async fn broadcast_latency(db: &indexer::devnet::TestDb) -> (f64, f64) {
    sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
         FROM (SELECT extract(epoch FROM (min(a.broadcast_at) - w.requested_at)) * 1000 AS ms
               FROM withdrawals w JOIN withdrawal_attempts a ON a.withdrawal_id = w.id
               WHERE w.kind = 'withdrawal' GROUP BY w.id, w.requested_at) latencies",
    )
    .fetch_one(db.pool())
    .await
    .expect("latencies")
}

/// The `coffer` binary on the bench database and anvil, killed on drop.
struct Daemon {
    child: Child,
    grpc: SocketAddr,
}

impl Daemon {
    async fn start(db: &indexer::devnet::TestDb, anvil: &Anvil) -> Self {
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
        cmd.arg("run");
        for (key, _) in std::env::vars() {
            if key.starts_with("COFFER__") || key == "COFFER_CONFIG" {
                cmd.env_remove(key);
            }
        }
        let limit = (AMOUNT * 1_000_000).to_string();
        for (key, value) in [
            // COFFER_BENCH_LOG=indexer::payouts=debug shows each round's steps.
            (
                "RUST_LOG",
                std::env::var("COFFER_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()),
            ),
            ("COFFER__DATABASE__URL", db.url()),
            ("COFFER__GRPC__LISTEN", grpc.to_string()),
            ("COFFER__METRICS__ENABLED", "false".into()),
            ("COFFER__EVENTS__ENABLED", "false".into()),
            ("COFFER__CHAINS__BITCOIN__ENABLED", "false".into()),
            ("COFFER__CHAINS__SOLANA__ENABLED", "false".into()),
            ("COFFER__CHAINS__ETHEREUM__ENABLED", "true".into()),
            (
                "COFFER__CHAINS__ETHEREUM__RPC_URL",
                anvil.rpc_url().to_owned(),
            ),
            ("COFFER__CHAINS__ETHEREUM__POLL_INTERVAL_MS", "50".into()),
            (
                "COFFER__CHAINS__ETHEREUM__USE_FINALIZED_TAG",
                "false".into(),
            ),
            ("COFFER__CHAINS__ETHEREUM__CONFIRMATIONS", "1".into()),
            ("COFFER__WITHDRAWALS__ASSETS__ETH__FEE", "0".into()),
            (
                "COFFER__WITHDRAWALS__ASSETS__ETH__APPROVAL_THRESHOLD",
                limit.clone(),
            ),
            ("COFFER__WITHDRAWALS__ASSETS__ETH__DAILY_LIMIT", limit),
            (
                "COFFER__WITHDRAWALS__ETHEREUM__POLL_INTERVAL_MS",
                "50".into(),
            ),
            (
                "COFFER__WITHDRAWALS__ETHEREUM__SWEEP_THRESHOLDS__ETH",
                (WEI_PER_ETH / 1000).to_string(),
            ),
        ] {
            cmd.env(key, value);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn coffer");
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(grpc).await.is_err() {
            assert!(Instant::now() < deadline, "coffer serving within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, grpc }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
