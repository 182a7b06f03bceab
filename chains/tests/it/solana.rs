use chains::HeadSource;
use chains::devnet::SolanaValidator;
use solana_commitment_config::CommitmentConfig;
use solana_pubkey::Pubkey;

#[tokio::test]
async fn airdrop_shows_up_in_the_balance() {
    let validator = SolanaValidator::shared()
        .await
        .expect("start solana-test-validator");
    let client = validator.client();
    let recipient = Pubkey::new_from_array(*b"coffer-devnet-airdrop-test-key-1");
    let lamports = 2_500_000_000;

    validator
        .airdrop(&recipient, lamports)
        .await
        .expect("airdrop");

    let balance = client
        .rpc()
        .get_balance_with_commitment(&recipient, CommitmentConfig::confirmed())
        .await
        .expect("getBalance")
        .value;
    assert_eq!(balance, lamports);
    let head = client.head().await.expect("head");
    assert!(head.height > 0);
}
