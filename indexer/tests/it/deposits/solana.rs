use std::time::{Duration, Instant};

use chains::Chain;
use chains::devnet::SolanaValidator;
use chains::devnet::solana_tx::{
    Instruction, Keypair, TOKEN_ACCOUNT_SPACE, associated_token_address, close_account,
    create_associated_token_account, create_token_account, mint_to, set_account_owner,
    system_transfer, transfer_checked,
};
use indexer::deposits::DepositStore;
use indexer::deposits::solana::{SolanaWatchConfig, SolanaWatcher, SplToken};
use indexer::deposits::watcher::WatchConfig;
use indexer::devnet::TestDb;
use indexer::ledger::{Asset, Ledger};
use solana_commitment_config::CommitmentConfig;
use solana_pubkey::Pubkey;
use tokio_util::sync::CancellationToken;

use super::*;
use indexer::devnet::solana::SharedValidator;

const SOL: Chain = Chain::Solana;
const LAMPORTS: u64 = 1_000_000_000;

fn config(start_slot: u64, tokens: Vec<SplToken>) -> SolanaWatchConfig {
    SolanaWatchConfig {
        watch: WatchConfig {
            start_height: Some(start_slot),
            batch_blocks: 8,
            fetch_concurrency: 2,
            poll_interval: Duration::from_millis(100),
            ..SolanaWatchConfig::default().watch
        },
        tokens,
    }
}

fn watcher(validator: &SolanaValidator, db: &TestDb, config: SolanaWatchConfig) -> SolanaWatcher {
    init_logs();
    let store = DepositStore::new(
        Ledger::new(db.pool().clone()),
        SOL,
        config.watch.max_reorg_depth,
    );
    SolanaWatcher::new(validator.client().clone(), store, config)
}

async fn confirmed_slot(validator: &SolanaValidator) -> u64 {
    validator
        .client()
        .slot(CommitmentConfig::confirmed())
        .await
        .expect("slot")
}

fn pubkey(text: &str) -> Pubkey {
    text.parse().expect("pubkey")
}

/// A keypair from `seed` holding 20 SOL.
async fn funded_payer(validator: &SolanaValidator, seed: u8) -> Keypair {
    let payer = Keypair::from_seed([seed; 32]);
    validator
        .airdrop(&payer.pubkey(), 20 * LAMPORTS)
        .await
        .expect("airdrop");
    payer
}

/// Creates `mint` (6 decimals) with `payer` as its authority, and mints
/// 1,000 tokens into `payer`'s associated token account.
async fn funded_mint(validator: &SolanaValidator, payer: &Keypair, mint: &Keypair) {
    validator.create_mint(payer, mint, 6).await.expect("mint");
    let (_, ok) = validator
        .send(
            &[
                create_associated_token_account(&payer.pubkey(), &payer.pubkey(), &mint.pubkey()),
                mint_to(
                    &mint.pubkey(),
                    &associated_token_address(&payer.pubkey(), &mint.pubkey()),
                    &payer.pubkey(),
                    1_000_000_000,
                ),
            ],
            &[payer],
        )
        .await
        .expect("mint to payer");
    assert!(ok);
}

/// Registers `mint` as the asset TUSDC and returns the watcher's token list.
async fn tusdc(db: &TestDb, mint: &Keypair) -> Vec<SplToken> {
    Ledger::new(db.pool().clone())
        .register_asset(&Asset {
            code: "TUSDC".into(),
            chain: SOL,
            decimals: 6,
            contract: Some(mint.pubkey().to_string()),
        })
        .await
        .expect("asset");
    vec![SplToken {
        mint: mint.pubkey().to_string(),
        asset: "TUSDC".into(),
    }]
}

/// `amount` of `mint` from `payer`'s associated token account to `to`'s,
/// which the same transaction creates.
fn pay_tokens(payer: &Keypair, mint: &Keypair, to: &Pubkey, amount: u64) -> Vec<Instruction> {
    vec![
        create_associated_token_account(&payer.pubkey(), to, &mint.pubkey()),
        transfer_checked(
            &associated_token_address(&payer.pubkey(), &mint.pubkey()),
            &mint.pubkey(),
            &associated_token_address(to, &mint.pubkey()),
            &payer.pubkey(),
            amount,
            6,
        ),
    ]
}

async fn sol_balance(db: &TestDb, address: &str, asset: &str) -> (String, String) {
    address_balance(db.pool(), SOL, address, asset).await
}

async fn wait_balance(
    db: &TestDb,
    address: &str,
    asset: &str,
    expected: (&str, &str),
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let now = sol_balance(db, address, asset).await;
        if (now.0.as_str(), now.1.as_str()) == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{asset} of {address}: {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sol_and_token_deposits_are_pending_at_confirmed_and_available_at_finalized() {
    let validator = SolanaValidator::shared()
        .await
        .expect("solana-test-validator");
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses_from(db.pool(), SOL, 2, 100).await;
    let (alice, bob) = (pubkey(&users[0].1), pubkey(&users[1].1));
    let payer = funded_payer(validator, 0x51).await;
    let mint = Keypair::from_seed([0x52; 32]);
    let rogue = Keypair::from_seed([0x53; 32]);
    for m in [&mint, &rogue] {
        funded_mint(validator, &payer, m).await;
    }
    let tokens = tusdc(&db, &mint).await;
    let start = confirmed_slot(validator).await + 1;
    let running = Running::spawn(watcher(validator, &db, config(start, tokens)));

    let (_, ok) = validator
        .send(
            &[system_transfer(&payer.pubkey(), &alice, 1_500_000_000)],
            &[&payer],
        )
        .await
        .expect("sol");
    assert!(ok);
    let pay = |m: &Keypair, to: &Pubkey, amount: u64| pay_tokens(&payer, m, to, amount);
    // The deposit owner's token account is created in the same transaction.
    let (token_sig, ok) = validator
        .send(&pay(&mint, &alice, 2_000_000), &[&payer])
        .await
        .expect("token");
    assert!(ok);
    // Not deposits: a mint that is not allow-listed, and failed transactions.
    let (_, ok) = validator
        .send(&pay(&rogue, &alice, 3_000_000), &[&payer])
        .await
        .expect("rogue");
    assert!(ok);
    let (_, ok) = validator
        .send(&pay(&mint, &bob, 5_000_000_000), &[&payer])
        .await
        .expect("overdrawn token transfer");
    assert!(!ok, "a token transfer beyond the balance fails");
    let (_, ok) = validator
        .send(
            &[system_transfer(&payer.pubkey(), &bob, 1_000 * LAMPORTS)],
            &[&payer],
        )
        .await
        .expect("overdrawn sol transfer");
    assert!(!ok, "a SOL transfer beyond the balance fails");

    for (asset, expected, limit) in [
        ("SOL", ("0", "1500000000"), 30),
        ("TUSDC", ("0", "2000000"), 30),
        ("SOL", ("1500000000", "0"), 90),
        ("TUSDC", ("2000000", "0"), 90),
    ] {
        let limit = Duration::from_secs(limit);
        wait_balance(&db, &users[0].1, asset, expected, limit).await;
    }
    // The failed and rogue ones landed before the credits: nothing for bob.
    assert_eq!(
        sol_balance(&db, &users[1].1, "SOL").await,
        ("0".into(), "0".into())
    );
    assert_eq!(
        sol_balance(&db, &users[1].1, "TUSDC").await,
        ("0".into(), "0".into())
    );
    running.stop().await;

    let live = live_deposits(db.pool()).await;
    let summary: Vec<(String, i64, String)> = live
        .iter()
        .map(|d| (d.3.clone(), d.1, d.5.clone()))
        .collect();
    // Positions are the credited account's index in the transaction: alice
    // after the payer, alice's token account after the payer.
    assert_eq!(
        summary,
        vec![
            ("SOL".into(), 1, "credited".into()),
            ("TUSDC".into(), 1, "credited".into())
        ],
        "{live:?}"
    );
    assert_eq!(live[1].0, token_sig);
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}

#[tokio::test]
async fn restarting_mid_catch_up_loses_and_duplicates_nothing() {
    let validator = SolanaValidator::shared()
        .await
        .expect("solana-test-validator");
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses_from(db.pool(), SOL, 4, 200).await;
    let payer = funded_payer(validator, 0x61).await;
    let start = confirmed_slot(validator).await + 1;
    for i in 0..16u64 {
        let to = pubkey(&users[(i % 4) as usize].1);
        let (_, ok) = validator
            .send(
                &[system_transfer(&payer.pubkey(), &to, 1_000_000 + i)],
                &[&payer],
            )
            .await
            .expect("sol");
        assert!(ok);
    }
    let end = confirmed_slot(validator).await;
    // One 3-slot batch per commit (none fetched ahead to be merged), so
    // the catch-up takes several commits to be killed after.
    let mut config = config(start, Vec::new());
    config.watch.batch_blocks = 3;
    config.watch.fetch_concurrency = 1;
    config.watch.fetch_ahead = 1;
    let mut kills = 0;
    loop {
        let watcher = watcher(validator, &db, config.clone());
        let mut progress = watcher.progress();
        let task = tokio::spawn(watcher.run(CancellationToken::new()));
        let done = tokio::time::timeout(Duration::from_secs(20), progress.changed())
            .await
            .is_err();
        task.abort();
        let _ = task.await;
        let at = cursor(db.pool(), SOL).await.map_or(0, |c| c.0);
        if done || at >= end as i64 {
            break;
        }
        kills += 1;
    }
    assert!(kills >= 3, "killed {kills} times");
    let running = Running::spawn(watcher(validator, &db, config));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let credited: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deposits WHERE status = 'credited'")
                .fetch_one(db.pool())
                .await
                .expect("count");
        if credited == 16 {
            break;
        }
        assert!(Instant::now() < deadline, "only {credited} of 16 credited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await;
    let expected: u64 = (0..16).map(|i| 1_000_000 + i).sum();
    assert_live_deposits_and_sum(
        db.pool(),
        16,
        "every transfer once",
        "asset = 'SOL' AND purpose = 'available'",
        expected,
    )
    .await;
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}

#[tokio::test]
async fn only_what_arrived_is_credited_not_an_account_handed_over() {
    let validator = SolanaValidator::shared()
        .await
        .expect("solana-test-validator");
    let db = TestDb::new().await.expect("database");
    let users = users_with_addresses_from(db.pool(), SOL, 1, 300).await;
    let deposit = pubkey(&users[0].1);
    let attacker = funded_payer(validator, 0x71).await;
    let mint = Keypair::from_seed([0x72; 32]);
    let handed = Keypair::from_seed([0x73; 32]);
    let closed = Keypair::from_seed([0x74; 32]);
    funded_mint(validator, &attacker, &mint).await;
    let attacker_ata = associated_token_address(&attacker.pubkey(), &mint.pubkey());
    let rent = validator
        .rent_exempt(TOKEN_ACCOUNT_SPACE)
        .await
        .expect("rent");
    // A plain token account of the attacker's to close into the deposit
    // address later.
    let closed_account = create_token_account(
        &attacker.pubkey(),
        &closed.pubkey(),
        &mint.pubkey(),
        &attacker.pubkey(),
        rent,
    );
    let (_, ok) = validator
        .send(&closed_account, &[&attacker, &closed])
        .await
        .expect("setup");
    assert!(ok);
    let tokens = tusdc(&db, &mint).await;
    let start = confirmed_slot(validator).await + 1;
    let running = Running::spawn(watcher(validator, &db, config(start, tokens)));

    // ONE transaction: create X owned by the attacker, move 100 tokens in
    // and back out five times, then hand X to the deposit address.
    let x = handed.pubkey();
    let mut attack = create_token_account(
        &attacker.pubkey(),
        &x,
        &mint.pubkey(),
        &attacker.pubkey(),
        rent,
    )
    .to_vec();
    for _ in 0..5 {
        attack.push(transfer_checked(
            &attacker_ata,
            &mint.pubkey(),
            &x,
            &attacker.pubkey(),
            100,
            6,
        ));
        attack.push(transfer_checked(
            &x,
            &mint.pubkey(),
            &attacker_ata,
            &attacker.pubkey(),
            100,
            6,
        ));
    }
    attack.push(set_account_owner(&x, &attacker.pubkey(), &deposit));
    let (_, ok) = validator
        .send(&attack, &[&attacker, &handed])
        .await
        .expect("handover");
    assert!(ok, "the handover transaction succeeds on chain");
    // Beside it, a real transfer into the deposit address's token account.
    let (paid, ok) = validator
        .send(
            &pay_tokens(&attacker, &mint, &deposit, 2_000_000),
            &[&attacker],
        )
        .await
        .expect("token");
    assert!(ok);
    // Lamports without a System transfer: a token account closed into it.
    let (closure, ok) = validator
        .send(
            &[close_account(
                &closed.pubkey(),
                &deposit,
                &attacker.pubkey(),
            )],
            &[&attacker],
        )
        .await
        .expect("close");
    assert!(ok);

    let rent_text = rent.to_string();
    for (asset, expected) in [
        ("TUSDC", ("2000000", "0")),
        ("SOL", (rent_text.as_str(), "0")),
    ] {
        wait_balance(&db, &users[0].1, asset, expected, Duration::from_secs(90)).await;
    }
    running.stop().await;
    let live = live_deposits(db.pool()).await;
    let summary: Vec<(String, String, String)> = live
        .iter()
        .map(|d| (d.0.clone(), d.3.clone(), d.4.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (paid, "TUSDC".into(), "2000000".into()),
            (closure, "SOL".into(), rent_text.clone()),
        ],
        "the handed-over account credits nothing"
    );
    assert_one_entry_per_deposit_and_kind(db.pool()).await;
}

// The cases one validator can produce; its forks are in `solana_fork`.
suite!(SharedValidator => restart_mid_catch_up);
