//! Helpers for deposit tests: a watcher on its own task, a relay in front
//! of a node, users with deposit addresses, and the ledger read back per
//! address. Used by the `it` and `solana_fork` test binaries.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::deposits::watcher::{DepositSource, Watcher};
use crate::wallets::Wallets;
use chains::Chain;
use signer::{DepositKeys, HdSeed, INSECURE_DEVNET_MNEMONIC, SeedPhrase};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A watcher running on its own task until stopped.
#[derive(Debug)]
pub struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    pub fn spawn<S: DepositSource>(watcher: Watcher<S>) -> Self {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watcher.run(cancel.clone()));
        Self { cancel, task }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.expect("watcher task");
    }
}

/// A TCP relay in front of a node's RPC port, so a test can change the node
/// a running watcher talks to, as a balancer in front of several nodes does.
#[derive(Debug)]
pub struct Relay {
    url: String,
    upstream: Arc<Mutex<SocketAddr>>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

fn socket_address(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

impl Relay {
    /// Relays to the node at `url` (`http://<ip>:<port>`).
    pub async fn start(url: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay port");
        let address = listener.local_addr().expect("relay address");
        let upstream = Arc::new(Mutex::new(socket_address(url)));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let (upstream, connections) = (Arc::clone(&upstream), Arc::clone(&connections));
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let to = *upstream.lock().expect("upstream");
                    let relayed = tokio::spawn(async move {
                        if let Ok(mut node) = TcpStream::connect(to).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
                        }
                    });
                    connections
                        .lock()
                        .expect("connections")
                        .push(relayed.abort_handle());
                }
            })
            .abort_handle()
        };
        Self {
            url: format!("http://{address}"),
            upstream,
            connections,
            accept,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Relays to the node at `url` from now on, cutting the connections open
    /// to the one before.
    pub fn switch(&self, url: &str) {
        *self.upstream.lock().expect("upstream") = socket_address(url);
        for connection in self.connections.lock().expect("connections").drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            connection.abort();
        }
    }
}

/// Watcher logs on the test's output (shown for failing tests), filtered by
/// `RUST_LOG` (default `warn`).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub fn deposit_keys() -> Arc<DepositKeys> {
    let seed =
        HdSeed::from_phrase(&SeedPhrase::from_words(INSECURE_DEVNET_MNEMONIC), "").expect("seed");
    Arc::new(DepositKeys::new(seed, signer::BitcoinNetwork::Regtest).expect("keys"))
}

/// `count` users with one deposit address each on `chain`, issued in order
/// (so two databases set up alike hold the same addresses).
pub async fn users_with_addresses(
    pool: &PgPool,
    chain: Chain,
    count: usize,
) -> Vec<(Uuid, String)> {
    users_with_addresses_from(pool, chain, count, 0).await
}

/// As [`users_with_addresses`], from HD index `first`: tests sharing one
/// node (the Solana validator) must not share deposit addresses.
pub async fn users_with_addresses_from(
    pool: &PgPool,
    chain: Chain,
    count: usize,
    first: i64,
) -> Vec<(Uuid, String)> {
    sqlx::query("UPDATE address_counters SET next_index = $2 WHERE chain = $1")
        .bind(chain.as_str())
        .bind(first)
        .execute(pool)
        .await
        .expect("address counter");
    let wallets = Wallets::new(pool.clone(), deposit_keys());
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let user = Uuid::new_v4();
        sqlx::query("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'not-a-login')")
            .bind(user)
            .bind(format!("depositor{i}-{user}@example.com"))
            .execute(pool)
            .await
            .expect("user");
        let wallet = wallets.create(user, chain).await.expect("wallet");
        let issued = wallets.new_address(&wallet).await.expect("address");
        out.push((user, issued.address));
    }
    out
}

/// Polls `check` until it holds, failing with `what` after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `chain`'s watcher stands on the node's tip (`height`,
/// `hash`) with nothing pending at or below `final_height`.
pub async fn wait_synced(pool: &PgPool, chain: Chain, tip: (u64, String), final_height: u64) {
    wait_synced_polling(pool, chain, tip, final_height, Duration::from_millis(50)).await;
}

/// [`wait_synced`], looking every `poll`.
pub async fn wait_synced_polling(
    pool: &PgPool,
    chain: Chain,
    (height, hash): (u64, String),
    final_height: u64,
    poll: Duration,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let at = cursor(pool, chain).await;
        let unconfirmed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM deposits WHERE chain = $1 AND status = 'pending' AND block_height <= $2",
        )
        .bind(chain.as_str())
        .bind(final_height as i64)
        .fetch_one(pool)
        .await
        .expect("pending");
        if at == Some((height as i64, hash.clone())) && unconfirmed == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{chain} watcher not synced: cursor {at:?}, tip {height} {hash}, {unconfirmed} pending at or below {final_height}"
        );
        tokio::time::sleep(poll).await;
    }
}

pub async fn cursor(pool: &PgPool, chain: Chain) -> Option<(i64, String)> {
    sqlx::query_as("SELECT height, block_hash FROM chain_cursors WHERE chain = $1")
        .bind(chain.as_str())
        .fetch_optional(pool)
        .await
        .expect("cursor")
}

/// (available, pending, held) per (deposit address, asset), as decimal text.
pub type Balances = BTreeMap<(String, String), (String, String, String)>;

pub async fn balances_by_address(pool: &PgPool, chain: Chain) -> Balances {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT d.address, b.asset, b.purpose::text, b.balance::text
         FROM balances b JOIN wallets w ON w.user_id = b.owner_id AND w.chain = $1
         JOIN deposit_addresses d ON d.wallet_id = w.id",
    )
    .bind(chain.as_str())
    .fetch_all(pool)
    .await
    .expect("balances");
    let mut out: Balances = BTreeMap::new();
    for (address, asset, purpose, balance) in rows {
        let slot = out
            .entry((address, asset))
            .or_insert_with(|| ("0".into(), "0".into(), "0".into()));
        match purpose.as_str() {
            "available" => slot.0 = balance,
            "pending" => slot.1 = balance,
            _ => slot.2 = balance,
        }
    }
    // An account that went back to zero equals one never opened.
    out.retain(|_, (a, p, h)| (a.as_str(), p.as_str(), h.as_str()) != ("0", "0", "0"));
    out
}

/// (available, pending) of `asset` at one deposit address; zeros for none.
pub async fn address_balance(
    pool: &PgPool,
    chain: Chain,
    address: &str,
    asset: &str,
) -> (String, String) {
    balances_by_address(pool, chain)
        .await
        .get(&(address.to_owned(), asset.to_owned()))
        .map(|(available, pending, _)| (available.clone(), pending.clone()))
        .unwrap_or_else(|| ("0".into(), "0".into()))
}

/// The sum of the `balances` rows where `filter` (SQL) holds, as decimal
/// text; `None` where none does.
pub async fn balance_sum(pool: &PgPool, filter: &str) -> Option<String> {
    let sql = format!("SELECT sum(balance)::text FROM balances WHERE {filter}");
    sqlx::query_scalar(&sql).fetch_one(pool).await.expect("sum")
}

/// Asserts `count` live deposits (`what` says which), and user balances
/// where `filter` (SQL) holds summing to `total`.
pub async fn assert_live_deposits_and_sum(
    pool: &PgPool,
    count: usize,
    what: &str,
    filter: &str,
    total: u64,
) {
    assert_eq!(live_deposits(pool).await.len(), count, "{what}");
    assert_eq!(balance_sum(pool, filter).await, Some(total.to_string()));
}

/// System account balances (custody, suspense, …) per asset and purpose.
pub async fn system_balances(pool: &PgPool) -> BTreeMap<(String, String), String> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT a.asset, a.purpose::text, sum(p.amount)::text FROM postings p JOIN accounts a ON a.id = p.account_id
         WHERE a.owner_id IS NULL GROUP BY 1, 2 HAVING sum(p.amount) <> 0",
    )
    .fetch_all(pool)
    .await
    .expect("system balances");
    rows.into_iter().map(|(a, p, s)| ((a, p), s)).collect()
}

/// A live deposit: (tx, position, address, asset, amount, status, block hash).
pub type LiveDeposit = (String, i64, String, String, String, String, String);

/// Live deposits, oldest first.
pub async fn live_deposits(pool: &PgPool) -> Vec<LiveDeposit> {
    sqlx::query_as(
        "SELECT tx_id, position, address, asset, amount::text, status::text, block_hash FROM deposits
         WHERE status <> 'orphaned' ORDER BY block_height, tx_id, position",
    )
    .fetch_all(pool)
    .await
    .expect("deposits")
}

/// Asserts that two databases indexing `chain` hold the same ledger: every
/// address's balances, the system accounts, and the live deposits.
pub async fn assert_same_ledgers(a: &PgPool, b: &PgPool, chain: Chain) {
    assert_eq!(
        balances_by_address(a, chain).await,
        balances_by_address(b, chain).await
    );
    assert_eq!(system_balances(a).await, system_balances(b).await);
    assert_eq!(live_deposits(a).await, live_deposits(b).await);
}

/// Every entry of a deposit kind, once per deposit and kind.
pub async fn assert_one_entry_per_deposit_and_kind(pool: &PgPool) {
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT metadata->>'deposit_id', kind FROM entries
         WHERE kind IN ('deposit_pending', 'deposit_credit', 'deposit_reversal') GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .expect("duplicates");
    assert_eq!(duplicates, 0, "a deposit has two entries of one kind");
}
