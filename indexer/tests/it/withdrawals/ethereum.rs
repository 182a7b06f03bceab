//! Ethereum payouts end to end on a real anvil and PostgreSQL: deposits
//! credited by the real watcher, swept into the hot wallet, paid out by
//! the payout loop; reconciled to the wei after each test.
//!
//! Each test drives the loop round by round (`EthereumPayouts::round`)
//! between blocks it mines itself, so what happens between two steps is
//! the test's choice: a crash is the loop stopping at a step's edge.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use chains::Chain;
use chains::devnet::{Anvil, TestToken};
use chains::ethereum::BlockNumberOrTag;
use indexer::deposits::DepositStore;
use indexer::deposits::ethereum::{EthereumWatchConfig, EthereumWatcher, Token};
use indexer::deposits::watcher::WatchConfig;
use indexer::devnet::TestDb;
use indexer::devnet::deposits::{Running, deposit_keys, init_logs, users_with_addresses_from};
use indexer::ledger::{AccountPurpose, AccountRef, Amount, Asset, IdempotencyKey, Ledger};
use indexer::payouts::ethereum::{EthereumPayoutConfig, EthereumPayouts};
use indexer::withdrawals::{
    AssetPolicy, ManualResolution, NewWithdrawal, PayoutKind, Withdrawal, WithdrawalPolicy,
    WithdrawalStatus, Withdrawals,
};
use uuid::Uuid;

use crate::support::assert_invariants;

const ETH: Chain = Chain::Ethereum;
const TOKEN: &str = "TUSD";
const WEI_PER_ETH: u128 = 1_000_000_000_000_000_000;
const FEE: u64 = 1_000_000_000_000;
const TOKEN_FEE: u64 = 100_000;
/// Credited at two confirmations: the loop completes at the same depth.
const CONFIRMATIONS: u64 = 2;

fn eth(tenths: u128) -> U256 {
    U256::from(tenths * WEI_PER_ETH / 10)
}

fn policy() -> WithdrawalPolicy {
    let mut policy = WithdrawalPolicy::default();
    for (asset, fee) in [("ETH", FEE), (TOKEN, TOKEN_FEE)] {
        policy.assets.insert(
            asset.into(),
            AssetPolicy {
                fee: Amount::from_u64(fee),
                approval_threshold: Amount::from_u128(10 * WEI_PER_ETH),
                daily_limit: Amount::from_u128(100 * WEI_PER_ETH),
            },
        );
    }
    policy
}

struct Harness {
    anvil: Anvil,
    db: TestDb,
    ledger: Ledger,
    store: Withdrawals,
    payouts: EthereumPayouts,
    token: Option<TestToken>,
    next_index: std::sync::atomic::AtomicI64,
    config: EthereumPayoutConfig,
    _watcher: Running,
}

impl Harness {
    async fn new(with_token: bool, configure: impl FnOnce(&mut EthereumPayoutConfig)) -> Self {
        init_logs();
        let anvil = Anvil::spawn().await.expect("anvil");
        let db = TestDb::new().await.expect("database");
        let ledger = Ledger::new(db.pool().clone());
        let mut tokens = Vec::new();
        let mut token = None;
        let mut config = EthereumPayoutConfig {
            chain_id: 31337,
            poll_interval: Duration::from_millis(50),
            min_priority_fee_per_gas: 1_000_000_000,
            use_finalized_tag: false,
            confirmations: CONFIRMATIONS,
            replace_after_blocks: 3,
            rebroadcast_after_blocks: 1,
            ..EthereumPayoutConfig::default()
        };
        config
            .sweeps
            .assets
            .insert("ETH".into(), Amount::from_u128(WEI_PER_ETH / 100));
        if with_token {
            let supply = U256::from(10u64).pow(U256::from(15));
            let deployed = anvil.deploy_minted_token(6, supply).await.expect("token");
            anvil.mine(1).await.expect("mine");
            ledger
                .register_asset(&Asset {
                    code: TOKEN.into(),
                    chain: ETH,
                    decimals: 6,
                    contract: Some(deployed.address.to_checksum(None)),
                })
                .await
                .expect("register token");
            tokens.push(Token {
                contract: deployed.address,
                asset: TOKEN.into(),
            });
            config.tokens.insert(TOKEN.into(), deployed.address);
            config
                .sweeps
                .assets
                .insert(TOKEN.into(), Amount::from_u64(1_000_000));
            token = Some(deployed);
        }
        configure(&mut config);
        let store = Withdrawals::new(ledger.clone(), policy());
        let payouts = EthereumPayouts::new(
            anvil.client().clone(),
            store.clone(),
            deposit_keys(),
            config.clone(),
        )
        .expect("payouts");
        let start_height = anvil_height(&anvil).await + 1;
        let watch = EthereumWatchConfig {
            watch: WatchConfig {
                start_height: Some(start_height),
                max_reorg_depth: 20,
                batch_blocks: 5,
                poll_interval: Duration::from_millis(50),
                ..EthereumWatchConfig::default().watch
            },
            use_finalized_tag: false,
            confirmations: CONFIRMATIONS,
            tokens,
            own_senders: vec![payouts.hot_wallet()],
        };
        let deposits = DepositStore::new(ledger.clone(), ETH, watch.watch.max_reorg_depth);
        let watcher = Running::spawn(EthereumWatcher::new(
            anvil.client().clone(),
            deposits,
            watch,
        ));
        Self {
            anvil,
            db,
            ledger,
            store,
            payouts,
            token,
            next_index: Default::default(),
            config,
            _watcher: watcher,
        }
    }

    /// A second payout loop on the same database, talking to the node
    /// through `url`.
    fn payouts_via(&self, url: &str) -> EthereumPayouts {
        let client =
            chains::ethereum::EthereumClient::new(url, Duration::from_secs(2)).expect("client");
        EthereumPayouts::new(
            client,
            self.store.clone(),
            deposit_keys(),
            self.config.clone(),
        )
        .expect("payouts")
    }

    fn token(&self) -> &TestToken {
        self.token.as_ref().expect("a harness with a token")
    }

    /// A user with a deposit address holding `wei` (credited once final).
    async fn depositor(&self, wei: U256) -> (Uuid, Address) {
        let index = self
            .next_index
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (user, address) = users_with_addresses_from(self.db.pool(), ETH, 1, index)
            .await
            .pop()
            .expect("user");
        let address: Address = address.parse().expect("address");
        if !wei.is_zero() {
            self.anvil
                .send(Anvil::DEV_ACCOUNT, address, wei, &[], None)
                .await
                .expect("deposit");
        }
        (user, address)
    }

    /// A user whose `wei` deposit is credited and swept into the hot
    /// wallet, with nothing left in flight.
    async fn settled_depositor(&self, wei: U256) -> Uuid {
        let (user, _) = self.depositor(wei).await;
        self.wait_available(user, "ETH", Amount::from_u256(wei))
            .await;
        self.settle_everything().await;
        user
    }

    /// Mines `blocks` blocks, each with a base fee above twice `fee` (so
    /// an attempt capped at `fee` cannot land), running a round after each.
    async fn price_out(&self, fee: Amount, blocks: usize) {
        let high = 2 * fee.as_u256().to::<u128>() + 1;
        for _ in 0..blocks {
            self.anvil.set_next_base_fee(high).await.expect("base fee");
            self.anvil.mine(1).await.expect("mine");
            self.payouts.round().await.expect("round");
        }
    }

    async fn available(&self, user: Uuid, asset: &str) -> Amount {
        self.ledger
            .balance(user, asset)
            .await
            .expect("balance")
            .available
    }

    async fn wait_available(&self, user: Uuid, asset: &str, at_least: Amount) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.available(user, asset).await < at_least {
            assert!(Instant::now() < deadline, "deposit never credited");
            self.anvil.mine(1).await.expect("mine");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn request(&self, user: Uuid, asset: &str, amount: U256, to: Address) -> Withdrawal {
        self.store
            .request(
                &IdempotencyKey::new("eth-payout-test", Uuid::new_v4().to_string()),
                &NewWithdrawal {
                    user,
                    asset: asset.into(),
                    chain: ETH,
                    amount: Amount::from_u256(amount),
                    destination: to.to_checksum(None),
                    requested_by: user,
                },
            )
            .await
            .expect("request")
    }

    async fn status(&self, id: i64) -> WithdrawalStatus {
        self.store
            .payout(id)
            .await
            .expect("read")
            .expect("row")
            .status
    }

    /// Rounds (each followed by a block) until `done`, failing after 60 s.
    async fn drive_until<F, Fut>(&self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            self.payouts.round().await.expect("round");
            if done().await {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.anvil.mine(1).await.expect("mine");
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }

    async fn drive_until_status(&self, id: i64, status: WithdrawalStatus) {
        self.drive_until(&format!("row {id} to be {status}"), || async {
            self.status(id).await == status
        })
        .await;
    }

    /// Every Coffer address on chain: issued deposit addresses and the hot
    /// wallet.
    async fn coffer_addresses(&self) -> Vec<Address> {
        let mut addresses: Vec<Address> = sqlx::query_scalar::<_, String>(
            "SELECT address FROM deposit_addresses WHERE chain = 'ethereum'",
        )
        .fetch_all(self.db.pool())
        .await
        .expect("addresses")
        .into_iter()
        .map(|a| a.parse().expect("address"))
        .collect();
        addresses.push(self.payouts.hot_wallet());
        addresses
    }

    /// Invariant 11, to the wei: per asset, what Coffer's addresses hold on
    /// chain equals the ledger's custody, once nothing is in flight or
    /// pending.
    async fn assert_reconciled(&self) {
        self.settle_everything().await;
        let mut assets = vec![("ETH".to_owned(), None)];
        if let Some(token) = &self.token {
            assets.push((TOKEN.to_owned(), Some(token.address)));
        }
        for (asset, contract) in assets {
            let (on_chain, custody) = self.chain_and_custody(&asset, contract).await;
            assert_eq!(
                custody,
                as_custody(on_chain),
                "{asset}: custody against the chain"
            );
        }
        assert_invariants(self.db.pool()).await;
    }

    /// What Coffer's addresses hold of `asset` on chain (a token when
    /// `contract` is set) and the ledger's custody account for it.
    async fn chain_and_custody(&self, asset: &str, contract: Option<Address>) -> (U256, String) {
        let head = BlockNumberOrTag::Latest;
        let mut on_chain = U256::ZERO;
        for address in self.coffer_addresses().await {
            on_chain += match contract {
                None => self
                    .anvil
                    .client()
                    .balance(address, head)
                    .await
                    .expect("balance"),
                Some(token) => self
                    .anvil
                    .client()
                    .token_balance(token, address, head)
                    .await
                    .expect("token balance"),
            };
        }
        let custody = self
            .ledger
            .account_balance(&AccountRef::system(asset, AccountPurpose::Custody))
            .await
            .expect("custody");
        (on_chain, custody.to_string())
    }

    /// Mines and runs rounds until, two rounds running, no row is in
    /// flight and no deposit is pending (a round that finishes a top-up
    /// creates the sweep it paid for only in the next), so the chain and
    /// the ledger describe the same moment.
    async fn settle_everything(&self) {
        let quiet_rounds = std::sync::atomic::AtomicU32::new(0);
        self.drive_until("everything to settle", || async {
            let busy: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM withdrawals WHERE status IN ('reserved', 'signed', 'broadcast', 'confirming'))
                      + (SELECT count(*) FROM deposits WHERE status = 'pending')",
            )
            .fetch_one(self.db.pool())
            .await
            .expect("count");
            if busy > 0 {
                quiet_rounds.store(0, std::sync::atomic::Ordering::SeqCst);
                return false;
            }
            quiet_rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 1
        })
        .await;
    }

    /// Every payout with its nonce and landing, for a failure message.
    async fn rows(&self) -> String {
        type Row = (i64, String, String, Option<i64>, Option<i64>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT w.id, w.kind::text, w.status::text, r.nonce,
                    (SELECT max(a.landed_block_height) FROM withdrawal_attempts a WHERE a.withdrawal_id = w.id)
             FROM withdrawals w LEFT JOIN eth_nonce_reservations r ON r.withdrawal_id = w.id
             ORDER BY w.id",
        )
        .fetch_all(self.db.pool())
        .await
        .expect("rows");
        rows.iter()
            .map(|(id, kind, status, nonce, landed)| {
                format!("{id} {kind} {status} nonce {nonce:?} landed at {landed:?}\n")
            })
            .collect()
    }

    async fn attempts(&self, id: i64) -> Vec<indexer::withdrawals::Attempt> {
        self.store.attempts(id).await.expect("attempts")
    }

    async fn eth_balance(&self, address: Address) -> U256 {
        self.anvil
            .client()
            .balance(address, BlockNumberOrTag::Latest)
            .await
            .expect("balance")
    }
}

async fn anvil_height(anvil: &Anvil) -> u64 {
    use chains::HeadSource;
    anvil.client().head().await.expect("head").height
}

/// The custody balance that accounts for `on_chain` (custody is the
/// ledger's side of what users are owed: negative).
fn as_custody(on_chain: U256) -> String {
    if on_chain.is_zero() {
        "0".to_owned()
    } else {
        format!("-{on_chain}")
    }
}

/// A fresh address outside Coffer.
fn outside() -> Address {
    Address::from_slice(&Uuid::new_v4().as_bytes()[..].repeat(2)[..20])
}

fn hash(text: &str) -> B256 {
    text.parse().expect("hash")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_is_swept_and_a_withdrawal_pays_exactly_once() {
    let h = Harness::new(false, |_| {}).await;
    let (user, _) = h.depositor(eth(20)).await;
    h.wait_available(user, "ETH", Amount::from_u256(eth(20)))
        .await;
    let to = outside();

    let withdrawal = h.request(user, "ETH", eth(5), to).await;
    let balance = h.ledger.balance(user, "ETH").await.expect("balance");
    assert_eq!(balance.held, Amount::from_u256(eth(5) + U256::from(FEE)));

    // The hot wallet starts empty: the withdrawal waits, still held, until
    // the sweep of the deposit lands.
    h.payouts.round().await.expect("round");
    let waiting = h.store.get(withdrawal.id).await.expect("get").expect("row");
    assert_eq!(waiting.status, WithdrawalStatus::Approved);
    assert!(
        waiting
            .waiting_reason
            .as_deref()
            .is_some_and(|r| r.contains("hot wallet")),
        "{waiting:?}"
    );
    h.drive_until_status(withdrawal.id, WithdrawalStatus::Completed)
        .await;

    assert_eq!(
        h.eth_balance(to).await,
        eth(5),
        "the destination got exactly the amount"
    );
    let balance = h.ledger.balance(user, "ETH").await.expect("balance");
    assert_eq!(balance.held, Amount::ZERO);
    assert_eq!(
        balance.available,
        Amount::from_u256(eth(20) - eth(5) - U256::from(FEE))
    );
    let attempts = h.attempts(withdrawal.id).await;
    let landed = attempts
        .iter()
        .find(|a| a.landed_block_hash.is_some())
        .expect("a landed attempt");
    let history = h
        .ledger
        .history(user, &Default::default(), 50, None)
        .await
        .expect("history");
    assert!(
        history.items.iter().any(|item| item.metadata.get("tx_hash")
            == Some(&serde_json::Value::String(landed.tx_hash.clone()))),
        "history names the tx hash"
    );
    let sweeps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM withdrawals WHERE kind = 'sweep' AND status = 'completed'",
    )
    .fetch_one(h.db.pool())
    .await
    .expect("sweeps");
    assert_eq!(sweeps, 1);
    h.assert_reconciled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_withdrawal_follows_a_gas_top_up_and_a_token_sweep() {
    let h = Harness::new(true, |_| {}).await;
    // ETH for the hot wallet (swept), then tokens at a second address with
    // no ether of its own.
    let (eth_user, _) = h.depositor(eth(10)).await;
    let (user, address) = h.depositor(U256::ZERO).await;
    h.anvil
        .send(
            Anvil::DEV_ACCOUNT,
            h.token().address,
            U256::ZERO,
            &TestToken::transfer(address, U256::from(7_000_000)),
            None,
        )
        .await
        .expect("token deposit");
    h.wait_available(eth_user, "ETH", Amount::from_u256(eth(10)))
        .await;
    h.wait_available(user, TOKEN, Amount::from_u64(7_000_000))
        .await;

    let to = outside();
    let withdrawal = h.request(user, TOKEN, U256::from(2_500_000), to).await;
    h.drive_until_status(withdrawal.id, WithdrawalStatus::Completed)
        .await;

    let received = h
        .anvil
        .client()
        .token_balance(h.token().address, to, BlockNumberOrTag::Latest)
        .await
        .expect("token balance");
    assert_eq!(received, U256::from(2_500_000));
    let kinds: Vec<(PayoutKind, String)> = sqlx::query_as(
        "SELECT kind, asset FROM withdrawals WHERE kind <> 'withdrawal' AND status = 'completed' ORDER BY id",
    )
    .fetch_all(h.db.pool())
    .await
    .expect("kinds");
    assert!(
        kinds.contains(&(PayoutKind::GasTopUp, "ETH".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(PayoutKind::Sweep, TOKEN.into())),
        "{kinds:?}"
    );
    // The top-up from the hot wallet was never credited to the user.
    assert_eq!(h.available(user, "ETH").await, Amount::ZERO);
    assert_eq!(
        h.available(user, TOKEN).await,
        Amount::from_u64(7_000_000 - 2_500_000 - TOKEN_FEE)
    );
    h.assert_reconciled().await;
}

/// A crash after the signed commit and before any send: the next round
/// sends exactly the committed bytes. A crash after sending and before
/// recording the send: the next round finds the bytes known (or landed)
/// and records them; one payment either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_every_gap_pays_once() {
    let h = Harness::new(false, |_| {}).await;
    let (user, _) = h.depositor(eth(30)).await;
    h.wait_available(user, "ETH", Amount::from_u256(eth(30)))
        .await;
    // Fill the hot wallet first.
    h.settle_everything().await;
    let to = outside();

    // Gap 1: signed and committed, never sent.
    let first = h.request(user, "ETH", eth(2), to).await;
    h.payouts.sign_pending().await.expect("sign");
    assert_eq!(h.status(first.id).await, WithdrawalStatus::Signed);
    let committed = h.attempts(first.id).await;
    assert_eq!(committed.len(), 1);

    // Gap 2: sent by a process that died before recording it. The bytes
    // went out exactly as committed.
    let second = h.request(user, "ETH", eth(3), to).await;
    h.payouts.sign_pending().await.expect("sign");
    let [sent] = h.attempts(second.id).await.try_into().expect("one attempt");
    h.anvil
        .client()
        .send_raw_transaction(&sent.raw_tx)
        .await
        .expect("send");
    assert_eq!(h.status(second.id).await, WithdrawalStatus::Signed);
    h.anvil.mine(1).await.expect("mine");

    // The restarted loop: both complete, once.
    h.drive_until("both to complete", || async {
        h.status(first.id).await == WithdrawalStatus::Completed
            && h.status(second.id).await == WithdrawalStatus::Completed
    })
    .await;
    assert_eq!(h.eth_balance(to).await, eth(5), "each paid exactly once");
    assert_eq!(h.attempts(first.id).await[0].tx_hash, committed[0].tx_hash);
    assert_eq!(h.attempts(second.id).await.len(), 1);
    h.assert_reconciled().await;
}

/// A transaction the node forgot (`anvil_dropTransaction`) is sent again,
/// byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transaction_is_rebroadcast_unchanged() {
    let h = Harness::new(false, |config| config.replace_after_blocks = 1_000).await;
    let user = h.settled_depositor(eth(20)).await;
    let to = outside();
    h.anvil.set_automine(false).await.expect("automine off");
    let withdrawal = h.request(user, "ETH", eth(4), to).await;
    h.payouts.round().await.expect("round");
    assert_eq!(h.status(withdrawal.id).await, WithdrawalStatus::Broadcast);
    let [attempt] = h.attempts(withdrawal.id).await.try_into().expect("one");
    let tx = hash(&attempt.tx_hash);
    h.anvil.drop_transaction(tx).await.expect("drop");
    assert!(!h.anvil.mempool_contains(tx).await.expect("mempool"));
    // Blocks pass without it; the loop sends the same bytes again.
    h.anvil.mine(1).await.expect("mine");
    h.payouts.round().await.expect("round");
    assert!(
        h.anvil.mempool_contains(tx).await.expect("mempool"),
        "sent again"
    );
    h.anvil.set_automine(true).await.expect("automine on");
    h.drive_until_status(withdrawal.id, WithdrawalStatus::Completed)
        .await;
    let attempts = h.attempts(withdrawal.id).await;
    assert_eq!(
        attempts.len(),
        1,
        "no new signature for a dropped transaction"
    );
    assert!(attempts[0].broadcast_count >= 2);
    assert_eq!(h.eth_balance(to).await, eth(4));
    h.assert_reconciled().await;
}

/// A transaction priced out (the base fee jumps above its max fee) is
/// replaced under the same nonce with both fees raised; exactly one
/// attempt lands and the withdrawal completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_transaction_is_replaced_and_completes_once() {
    let h = Harness::new(false, |config| config.replace_after_blocks = 2).await;
    let user = h.settled_depositor(eth(20)).await;
    let to = outside();
    h.anvil.set_automine(false).await.expect("automine off");
    let withdrawal = h.request(user, "ETH", eth(3), to).await;
    h.payouts.round().await.expect("round");
    let [first] = h.attempts(withdrawal.id).await.try_into().expect("one");
    let first_fee = first.max_fee_per_gas.expect("fee");
    // Price it out: every block from now on has a base fee above its cap.
    h.price_out(first_fee, 3).await;
    let attempts = h.attempts(withdrawal.id).await;
    assert!(attempts.len() >= 2, "replaced: {attempts:?}");
    let nonces: std::collections::HashSet<_> =
        attempts.iter().map(|a| a.nonce_reservation_id).collect();
    assert_eq!(nonces.len(), 1, "every attempt shares the nonce");
    let last = attempts.last().expect("attempt");
    assert!(last.max_fee_per_gas.expect("fee") >= indexer::withdrawals::bumped(first_fee));
    assert!(
        last.max_priority_fee_per_gas.expect("tip")
            >= indexer::withdrawals::bumped(first.max_priority_fee_per_gas.expect("tip"))
    );
    h.anvil.set_automine(true).await.expect("automine on");
    h.drive_until_status(withdrawal.id, WithdrawalStatus::Completed)
        .await;
    let landed: Vec<_> = h
        .attempts(withdrawal.id)
        .await
        .into_iter()
        .filter(|a| a.landed_block_hash.is_some())
        .collect();
    assert_eq!(landed.len(), 1);
    assert_eq!(h.eth_balance(to).await, eth(3), "paid once");
    h.assert_reconciled().await;
}

/// Fifty withdrawals at once from one hot wallet: consecutive nonces, no
/// gap, no duplicate; one cancelled after reserving is filled by a
/// zero-value self-transfer, so the ones after it still land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_withdrawals_use_consecutive_nonces_and_a_cancelled_one_is_filled() {
    let h = Harness::new(false, |_| {}).await;
    let (user, _) = h.depositor(eth(100)).await;
    h.wait_available(user, "ETH", Amount::from_u256(eth(100)))
        .await;
    h.settle_everything().await;
    let to = outside();
    let requests = (0..50).map(|_| h.request(user, "ETH", U256::from(10_000_000_000_000u64), to));
    let made: Vec<Withdrawal> = futures::future::join_all(requests).await;
    // Reserve (without sending), then cancel one in the middle.
    h.anvil.set_automine(false).await.expect("automine off");
    let hot = h.payouts.hot_wallet().to_string();
    let pending = h
        .anvil
        .client()
        .pending_nonce(h.payouts.hot_wallet())
        .await
        .expect("nonce");
    let mut reserved = Vec::new();
    for _ in 0..3 {
        reserved.push(
            h.store
                .reserve_nonce(&hot, pending)
                .await
                .expect("reserve")
                .expect("approved"),
        );
    }
    let cancelled = &reserved[1].0;
    h.store
        .cancel(cancelled.id, user, Some("changed my mind"))
        .await
        .expect("cancel");
    h.anvil.set_automine(true).await.expect("automine on");
    let ids: Vec<i64> = made
        .iter()
        .map(|w| w.id)
        .filter(|id| *id != cancelled.id)
        .collect();
    h.drive_until("49 withdrawals and the filler to complete", || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM withdrawals WHERE (id = ANY($1) OR kind = 'filler') AND status <> 'completed'",
        )
        .bind(&ids)
        .fetch_one(h.db.pool())
        .await
        .expect("count");
        open == 0
    })
    .await;
    let nonces: Vec<i64> = sqlx::query_scalar(
        "SELECT nonce FROM eth_nonce_reservations WHERE lower(from_address) = lower($1) ORDER BY nonce",
    )
    .bind(&hot)
    .fetch_all(h.db.pool())
    .await
    .expect("nonces");
    let first = nonces[0];
    assert_eq!(
        nonces,
        (first..first + nonces.len() as i64).collect::<Vec<_>>(),
        "consecutive, no gap, no duplicate"
    );
    assert_eq!(nonces.len(), 50, "49 withdrawals and one filler");
    let fillers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM withdrawals WHERE kind = 'filler' AND status = 'completed'",
    )
    .fetch_one(h.db.pool())
    .await
    .expect("fillers");
    assert_eq!(fillers, 1);
    assert_eq!(
        h.eth_balance(to).await,
        U256::from(49u64 * 10_000_000_000_000u64)
    );
    h.assert_reconciled().await;
}

/// A reorg that takes away the block holding a landed withdrawal sends it
/// back to broadcast, still held; it lands again and completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorged_withdrawal_goes_back_to_broadcast_and_completes_once() {
    let h = Harness::new(false, |config| config.confirmations = 4).await;
    let user = h.settled_depositor(eth(20)).await;
    let to = outside();
    let withdrawal = h.request(user, "ETH", eth(6), to).await;
    h.drive_until_status(withdrawal.id, WithdrawalStatus::Confirming)
        .await;
    let landed_at = h
        .attempts(withdrawal.id)
        .await
        .into_iter()
        .find_map(|a| a.landed_block_height)
        .expect("landed");
    let depth = anvil_height(&h.anvil).await - landed_at + 1;
    // The block and everything after it are replaced by empty blocks; the
    // transaction goes back to the pool, and the new branch is longer.
    h.anvil.set_automine(false).await.expect("automine off");
    h.anvil.reorg(depth, &[]).await.expect("reorg");
    h.payouts.round().await.expect("round");
    assert_eq!(h.status(withdrawal.id).await, WithdrawalStatus::Broadcast);
    let balance = h.ledger.balance(user, "ETH").await.expect("balance");
    assert_eq!(
        balance.held,
        Amount::from_u256(eth(6) + U256::from(FEE)),
        "still held"
    );
    h.anvil.set_automine(true).await.expect("automine on");
    h.drive_until_status(withdrawal.id, WithdrawalStatus::Completed)
        .await;
    assert_eq!(h.eth_balance(to).await, eth(6), "paid once");
    let settled: i64 = sqlx::query_scalar("SELECT count(*) FROM entries WHERE reference = $1")
        .bind(format!("withdrawal:{}:settle", withdrawal.id))
        .fetch_one(h.db.pool())
        .await
        .expect("entries");
    assert_eq!(settled, 1, "settled once");
    h.assert_reconciled().await;
}

/// An HTTP relay to anvil that, while `swallow` is set, forwards
/// `eth_sendRawTransaction` and then cuts the connection instead of
/// answering: the node took the transaction, the sender never heard.
struct SwallowingRelay {
    url: String,
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SwallowingRelay {
    fn start(upstream: &str) -> Self {
        use std::io::{BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let swallow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let flag = std::sync::Arc::clone(&swallow);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let (upstream, flag) = (upstream.clone(), std::sync::Arc::clone(&flag));
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().expect("clone"));
                    let mut writer = client;
                    while let Ok(Some(body)) = chains::devnet::http::read_request(&mut reader) {
                        let mut node = std::net::TcpStream::connect(&upstream).expect("anvil");
                        let head = format!(
                            "POST / HTTP/1.1\r\nHost: {upstream}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        node.write_all(head.as_bytes()).expect("forward");
                        node.write_all(&body).expect("forward");
                        let mut reply = Vec::new();
                        node.read_to_end(&mut reply).expect("reply");
                        let sends =
                            String::from_utf8_lossy(&body).contains("eth_sendRawTransaction");
                        if sends && flag.load(std::sync::atomic::Ordering::SeqCst) {
                            let _ = writer.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        let split = reply
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map_or(reply.len(), |i| i + 4);
                        let payload = &reply[split..];
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            payload.len()
                        );
                        if writer.write_all(answer.as_bytes()).is_err()
                            || writer.write_all(payload).is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, swallow }
    }
}

/// The third gap: the send fails on the sender's side although the node
/// took the transaction. The row stays signed with its bytes; the next
/// round finds them known or landed; one payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_lost_after_the_node_took_it_pays_once() {
    let h = Harness::new(false, |_| {}).await;
    let user = h.settled_depositor(eth(20)).await;
    let relay = SwallowingRelay::start(h.anvil.rpc_url());
    let cut_off = h.payouts_via(&relay.url);
    let to = outside();
    let withdrawal = h.request(user, "ETH", eth(7), to).await;

    relay
        .swallow
        .store(true, std::sync::atomic::Ordering::SeqCst);
    cut_off.round().await.expect("round");
    assert_eq!(
        h.status(withdrawal.id).await,
        WithdrawalStatus::Signed,
        "the send's outcome was lost: nothing recorded"
    );
    let [attempt] = h.attempts(withdrawal.id).await.try_into().expect("one");
    assert_eq!(attempt.broadcast_count, 0);
    relay
        .swallow
        .store(false, std::sync::atomic::Ordering::SeqCst);

    h.drive_until_status(withdrawal.id, WithdrawalStatus::Completed)
        .await;
    let attempts = h.attempts(withdrawal.id).await;
    assert_eq!(attempts.len(), 1, "the same bytes, never a new signature");
    assert_eq!(attempts[0].tx_hash, attempt.tx_hash);
    assert_eq!(h.eth_balance(to).await, eth(7), "paid once");
    h.assert_reconciled().await;
}

/// anvil's second dev account, unlocked: an outside holder of tokens.
const HOLDER: Address = alloy_primitives::address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");

/// A hot wallet holding `tokens` of the test token (swept from the
/// returned user's deposit) and the ether it needs for gas.
async fn hot_wallet_with_tokens(h: &Harness, tokens: u64) -> Uuid {
    let _ = h.depositor(eth(10)).await;
    let (user, address) = h.depositor(U256::ZERO).await;
    h.anvil
        .send(
            Anvil::DEV_ACCOUNT,
            h.token().address,
            U256::ZERO,
            &TestToken::transfer(address, U256::from(tokens)),
            None,
        )
        .await
        .expect("token deposit");
    h.wait_available(user, TOKEN, Amount::from_u64(tokens))
        .await;
    h.settle_everything().await;
    user
}

/// A token transfer that reverts on chain (status 0) uses its nonce and
/// its gas; the withdrawal fails and its hold is released, the gas booked.
/// The revert comes from the chain changing between estimate and block:
/// the recipient held tokens when the gas was estimated and holds none
/// when the transfer runs, so storing its balance costs more gas than the
/// limit allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverted_token_withdrawal_fails_releases_and_books_its_gas() {
    let h = Harness::new(true, |_| {}).await;
    let user = hot_wallet_with_tokens(&h, 3_000_000).await;
    h.anvil
        .send(
            Anvil::DEV_ACCOUNT,
            h.token().address,
            U256::ZERO,
            &TestToken::transfer(HOLDER, U256::from(1)),
            None,
        )
        .await
        .expect("holder's token");
    h.anvil.set_automine(false).await.expect("automine off");
    let withdrawal = h.request(user, TOKEN, U256::from(1_000_000), HOLDER).await;
    h.payouts.round().await.expect("round");
    assert_eq!(h.status(withdrawal.id).await, WithdrawalStatus::Broadcast);
    // Mined first (a higher tip): the holder empties its balance.
    h.anvil
        .request(
            "eth_sendTransaction",
            serde_json::json!([{
                "from": HOLDER,
                "to": h.token().address,
                "data": alloy_primitives::Bytes::from(TestToken::transfer(Anvil::DEV_ACCOUNT, U256::from(1))),
                "gas": "0x30000",
                "maxPriorityFeePerGas": "0x174876e800",
                "maxFeePerGas": "0x2540be4000",
            }]),
        )
        .await
        .expect("empty the holder");
    h.anvil.mine(1).await.expect("mine");
    h.anvil.set_automine(true).await.expect("automine on");
    h.drive_until_status(withdrawal.id, WithdrawalStatus::Failed)
        .await;
    let [attempt] = h.attempts(withdrawal.id).await.try_into().expect("one");
    assert_eq!(attempt.landed_success, Some(false), "landed and reverted");
    let failed = h.store.get(withdrawal.id).await.expect("get").expect("row");
    assert!(
        failed
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("reverted")),
        "{failed:?}"
    );
    let balance = h.ledger.balance(user, TOKEN).await.expect("balance");
    assert_eq!(balance.held, Amount::ZERO);
    assert_eq!(
        balance.available,
        Amount::from_u64(3_000_000),
        "released in full"
    );
    let gas: i64 = sqlx::query_scalar("SELECT count(*) FROM entries WHERE reference = $1")
        .bind(format!("withdrawal:{}:network_fee", withdrawal.id))
        .fetch_one(h.db.pool())
        .await
        .expect("entries");
    assert_eq!(gas, 1, "the spent gas is booked");
    h.assert_reconciled().await;
}

/// A transfer the chain refuses before anything is signed (its gas
/// estimate fails: a destination contract that reverts on any call) fails
/// without a transaction; its reserved nonce goes to a filler so the
/// queue behind it moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_refused_before_signing_fails_and_its_nonce_is_filled() {
    let h = Harness::new(false, |_| {}).await;
    let user = h.settled_depositor(eth(20)).await;
    // A destination whose code reverts on any call: `PUSH0 PUSH0 REVERT`.
    let refuser = outside();
    h.anvil
        .request("anvil_setCode", serde_json::json!([refuser, "0x5f5ffd"]))
        .await
        .expect("code");
    let refused = h.request(user, "ETH", eth(1), refuser).await;
    let after = h.request(user, "ETH", eth(2), outside()).await;
    let completed_fillers = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM withdrawals WHERE kind = 'filler' AND status = 'completed'",
        )
        .fetch_one(h.db.pool())
        .await
        .expect("fillers")
    };
    // The filler may complete a round after the row queued behind it: a
    // resend of that row answered "nonce too low" records its landing at
    // once, while the filler's is read from the next round's receipts.
    h.drive_until("both and the filler to finish", || async {
        h.status(refused.id).await == WithdrawalStatus::Failed
            && h.status(after.id).await == WithdrawalStatus::Completed
            && completed_fillers().await == 1
    })
    .await;
    assert!(
        h.attempts(refused.id).await.is_empty(),
        "nothing was signed"
    );
    let filled: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT r.nonce, (SELECT nonce FROM eth_nonce_reservations WHERE withdrawal_id = $1)
         FROM withdrawals w JOIN eth_nonce_reservations r ON r.withdrawal_id = w.id
         WHERE w.kind = 'filler'",
    )
    .bind(after.id)
    .fetch_all(h.db.pool())
    .await
    .expect("fillers");
    assert_eq!(filled.len(), 1, "one filler:\n{}", h.rows().await);
    assert_eq!(
        filled[0].0 + 1,
        filled[0].1,
        "the filler took the nonce just before the next withdrawal's:\n{}",
        h.rows().await
    );
    assert_eq!(h.eth_balance(refuser).await, U256::ZERO);
    let balance = h.ledger.balance(user, "ETH").await.expect("balance");
    assert_eq!(balance.held, Amount::ZERO);
    assert_eq!(
        balance.available,
        Amount::from_u256(eth(20) - eth(2) - U256::from(FEE))
    );
    h.assert_reconciled().await;
}

/// Two loops (replicas) planning at the same moment never budget the hot
/// wallet's balance twice: with room for one of two withdrawals, at most
/// one is ever reserved, and the other waits for the hot wallet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_loops_planning_at_once_never_overspend_the_hot_wallet() {
    let h = Harness::new(false, |_| {}).await;
    let (user, _) = h.depositor(eth(100)).await;
    h.wait_available(user, "ETH", Amount::from_u256(eth(100)))
        .await;
    h.settle_everything().await;
    // Funds leave the hot wallet outside Coffer (an operator's move):
    // 6 ETH remain for two withdrawals of 4.
    h.anvil
        .set_balance(h.payouts.hot_wallet(), eth(60))
        .await
        .expect("balance");
    let first = h.request(user, "ETH", eth(40), outside()).await;
    let second = h.request(user, "ETH", eth(40), outside()).await;
    let replica = h.payouts_via(h.anvil.rpc_url());
    let committed = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM withdrawals WHERE kind = 'withdrawal'
             AND status IN ('reserved', 'signed', 'broadcast', 'confirming', 'completed')",
        )
        .fetch_one(h.db.pool())
        .await
        .expect("count")
    };
    for _ in 0..8 {
        let (a, b) = tokio::join!(h.payouts.round(), replica.round());
        a.expect("round");
        b.expect("replica round");
        assert!(committed().await <= 1, "both withdrawals were budgeted");
        h.anvil.mine(1).await.expect("mine");
    }
    h.drive_until("one withdrawal to complete", || async {
        h.status(first.id).await == WithdrawalStatus::Completed
    })
    .await;
    let waiting = h.store.get(second.id).await.expect("get").expect("row");
    assert_eq!(waiting.status, WithdrawalStatus::Approved, "{waiting:?}");
    assert!(
        waiting
            .waiting_reason
            .as_deref()
            .is_some_and(|r| r.contains("hot wallet")),
        "{waiting:?}"
    );
    assert_eq!(
        h.ledger.balance(user, "ETH").await.expect("balance").held,
        Amount::from_u256(eth(40) + U256::from(FEE)),
        "the waiting one is still held"
    );
}

/// Someone else signs with the hot wallet's key at a nonce a withdrawal
/// holds: once that is final, no attempt of the withdrawal can land, but
/// what happened is for a person to find out. It goes to manual, held and
/// never rebuilt, until an admin other than its requester releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_taken_by_a_foreign_transaction_waits_in_manual_until_released() {
    let h = Harness::new(false, |_| {}).await;
    let user = h.settled_depositor(eth(20)).await;
    let to = outside();
    let withdrawal = h.request(user, "ETH", eth(4), to).await;
    h.payouts.sign_pending().await.expect("sign");
    assert_eq!(h.status(withdrawal.id).await, WithdrawalStatus::Signed);
    let [ours] = h.attempts(withdrawal.id).await.try_into().expect("one");
    let nonce: i64 =
        sqlx::query_scalar("SELECT nonce FROM eth_nonce_reservations WHERE withdrawal_id = $1")
            .bind(withdrawal.id)
            .fetch_one(h.db.pool())
            .await
            .expect("nonce");

    let hot = h.payouts.hot_wallet();
    let foreign = deposit_keys()
        .sign_ethereum(
            signer::KeyId::HotWallet,
            &signer::ethereum::UnsignedTransaction {
                chain_id: 31337,
                nonce: u64::try_from(nonce).expect("nonce"),
                max_fee_per_gas: 100_000_000_000,
                max_priority_fee_per_gas: 2_000_000_000,
                gas_limit: 21_000,
                payment: signer::ethereum::Payment::Ether {
                    to: hot,
                    value: U256::ZERO,
                },
            },
        )
        .expect("sign");
    let sent = h
        .anvil
        .client()
        .send_raw_transaction(&foreign.raw)
        .await
        .expect("send");
    assert!(
        matches!(sent, chains::ethereum::SendOutcome::Accepted(_)),
        "{sent:?}"
    );
    h.anvil.mine(CONFIRMATIONS + 1).await.expect("mine");
    h.drive_until_status(withdrawal.id, WithdrawalStatus::Manual)
        .await;
    let manual = h.store.get(withdrawal.id).await.expect("get").expect("row");
    assert!(
        manual
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("none of this row's attempts")),
        "{manual:?}"
    );
    for _ in 0..3 {
        h.payouts.round().await.expect("round");
        h.anvil.mine(1).await.expect("mine");
    }
    assert_eq!(h.status(withdrawal.id).await, WithdrawalStatus::Manual);
    let attempts = h.attempts(withdrawal.id).await;
    assert_eq!(attempts.len(), 1, "never rebuilt: {attempts:?}");
    assert_eq!(attempts[0].tx_hash, ours.tx_hash);
    assert_eq!(h.eth_balance(to).await, U256::ZERO, "nothing paid");
    let held = h.ledger.balance(user, "ETH").await.expect("balance").held;
    assert_eq!(held, Amount::from_u256(eth(4) + U256::from(FEE)));

    let refused = h
        .store
        .resolve_manual(withdrawal.id, user, ManualResolution::Release, "mine")
        .await
        .expect_err("the requester may not resolve");
    assert!(
        matches!(refused, indexer::Error::SelfApproval),
        "{refused:?}"
    );
    let admin = indexer::users::Users::new(h.db.pool().clone())
        .create("admin@example.com", "h", indexer::users::Role::Admin)
        .await
        .expect("admin");
    let requested = h
        .store
        .resolve_manual(
            withdrawal.id,
            admin,
            ManualResolution::Release,
            "the nonce went to a self-transfer nobody here signed; nothing reached the destination",
        )
        .await
        .expect("release");
    assert_eq!(
        requested.status,
        WithdrawalStatus::Manual,
        "the loop applies it"
    );
    assert_eq!(requested.resolution, Some(ManualResolution::Release));
    assert_eq!(requested.resolution_by, Some(admin));
    let again = h
        .store
        .resolve_manual(withdrawal.id, admin, ManualResolution::Settle, "twice")
        .await
        .expect_err("resolved once");
    assert!(
        matches!(again, indexer::Error::WithdrawalState { .. }),
        "{again:?}"
    );
    h.drive_until_status(withdrawal.id, WithdrawalStatus::Failed)
        .await;
    let released = h.store.get(withdrawal.id).await.expect("get").expect("row");
    assert!(
        released.reason.as_deref().is_some_and(|r| r.contains("none of this row's attempts")
            && r.ends_with("resolved by an admin: the nonce went to a self-transfer nobody here signed; nothing reached the destination")),
        "{released:?}"
    );
    let balance = h.ledger.balance(user, "ETH").await.expect("balance");
    assert_eq!(balance.held, Amount::ZERO);
    assert_eq!(
        balance.available,
        Amount::from_u256(eth(20)),
        "all of it back"
    );

    // Custody is short of the chain by exactly what the foreign
    // transaction burnt: Coffer never signed it, so never booked it.
    h.settle_everything().await;
    let receipt = h
        .anvil
        .client()
        .receipts(&[foreign.hash])
        .await
        .expect("receipt")
        .pop()
        .flatten()
        .expect("foreign transaction landed");
    let burnt = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    let (on_chain, custody) = h.chain_and_custody("ETH", None).await;
    assert_eq!(custody, as_custody(on_chain + burnt));
    assert_invariants(h.db.pool()).await;
}

/// A row sent to manual by a receipt the node did not serve in time keeps
/// being tracked: when its own attempt lands, it completes by itself and
/// pays once, even though an admin asked to release it meanwhile (the
/// release would have refunded a payment that went out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_row_whose_attempt_lands_completes_despite_a_release() {
    let h = Harness::new(false, |_| {}).await;
    let user = h.settled_depositor(eth(20)).await;
    let to = outside();
    h.anvil.set_automine(false).await.expect("automine off");
    let withdrawal = h.request(user, "ETH", eth(6), to).await;
    h.payouts.round().await.expect("round");
    assert_eq!(h.status(withdrawal.id).await, WithdrawalStatus::Broadcast);
    h.store
        .claim(withdrawal.id, &[WithdrawalStatus::Broadcast])
        .await
        .expect("claim")
        .expect("free")
        .to_manual("the node did not say what used the nonce")
        .await
        .expect("manual");
    let admin = indexer::users::Users::new(h.db.pool().clone())
        .create("admin@example.com", "h", indexer::users::Role::Admin)
        .await
        .expect("admin");
    h.store
        .resolve_manual(
            withdrawal.id,
            admin,
            ManualResolution::Release,
            "looks like nothing went out",
        )
        .await
        .expect("release requested");
    h.anvil.set_automine(true).await.expect("automine on");
    h.drive_until_status(withdrawal.id, WithdrawalStatus::Completed)
        .await;
    assert_eq!(h.eth_balance(to).await, eth(6), "paid once");
    let balance = h.ledger.balance(user, "ETH").await.expect("balance");
    assert_eq!(balance.held, Amount::ZERO);
    assert_eq!(
        balance.available,
        Amount::from_u256(eth(20) - eth(6) - U256::from(FEE)),
        "settled, not released"
    );
    assert_eq!(h.attempts(withdrawal.id).await.len(), 1);
    let done = h.store.get(withdrawal.id).await.expect("get").expect("row");
    assert_eq!(done.resolution, None, "the release was dropped");
    assert_eq!(done.reason, None, "the chain answered the question");
    h.assert_reconciled().await;
}

/// A sweep priced out by a fee spike is replaced like a withdrawal, its
/// higher fee paid out of the value swept: the address holds exactly what
/// the first attempt could spend, so a replacement paying more in value
/// plus gas would be refused for funds and never land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sweep_is_replaced_out_of_its_own_value() {
    let h = Harness::new(false, |config| config.replace_after_blocks = 2).await;
    let (user, address) = h.depositor(eth(20)).await;
    h.wait_available(user, "ETH", Amount::from_u256(eth(20)))
        .await;
    h.anvil.set_automine(false).await.expect("automine off");
    h.payouts.round().await.expect("round");
    let sweep: i64 = sqlx::query_scalar("SELECT id FROM withdrawals WHERE kind = 'sweep'")
        .fetch_one(h.db.pool())
        .await
        .expect("a sweep");
    assert_eq!(h.status(sweep).await, WithdrawalStatus::Broadcast);
    let [first] = h.attempts(sweep).await.try_into().expect("one");
    let first_fee = first.max_fee_per_gas.expect("fee");
    h.price_out(first_fee, 3).await;
    let attempts = h.attempts(sweep).await;
    assert!(attempts.len() >= 2, "replaced: {attempts:?}");
    let last = attempts.last().expect("attempt");
    assert!(last.fee_limit > first.fee_limit, "{attempts:?}");
    h.anvil.set_automine(true).await.expect("automine on");
    h.drive_until_status(sweep, WithdrawalStatus::Completed)
        .await;
    let landed: Vec<_> = h
        .attempts(sweep)
        .await
        .into_iter()
        .filter(|a| a.landed_block_hash.is_some())
        .collect();
    assert_eq!(landed.len(), 1, "one attempt landed");
    let left = h.eth_balance(address).await;
    assert!(
        left < last.fee_limit.as_u256(),
        "emptied but for unspent gas: {left}"
    );
    h.assert_reconciled().await;
}
