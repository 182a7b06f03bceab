use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use chains::HeadSource;
use chains::devnet::Anvil;

#[tokio::test]
async fn sent_transaction_has_a_successful_receipt() {
    let node = Anvil::spawn().await.expect("start anvil");
    let client = node.client();
    let provider = client.provider();
    let before = client.head().await.expect("head");

    let recipient = Address::repeat_byte(0x42);
    let value = U256::from(1_234_567_890_000_000_000u128);
    let request = TransactionRequest::default()
        .from(Anvil::DEV_ACCOUNT)
        .to(recipient)
        .value(value);
    let pending = provider
        .send_transaction(request)
        .await
        .expect("eth_sendTransaction");
    let receipt = pending.get_receipt().await.expect("receipt");

    assert!(receipt.status(), "transaction succeeded");
    assert_eq!(receipt.to, Some(recipient));
    assert_eq!(
        provider.get_balance(recipient).await.expect("balance"),
        value
    );

    let mined_in = receipt.block_number.expect("mined");
    let head = client.head().await.expect("head");
    assert_eq!(head.height, before.height + 1);
    assert_eq!(mined_in, head.height);
    assert_eq!(head.hash, receipt.block_hash.map(|h| h.to_string()));

    node.mine(70).await.expect("anvil_mine");
    let latest = client.head().await.expect("head").height;
    assert_eq!(latest, mined_in + 70);
    let finalized = client
        .head_at(BlockNumberOrTag::Finalized)
        .await
        .expect("finalized tag")
        .expect("anvil serves finalized");
    assert!(
        finalized.height < latest,
        "finalized {} trails latest {latest}",
        finalized.height
    );
}
