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

/// The deposit fetch sees successful value transfers and allow-listed token
/// events to wanted addresses, and nothing else.
#[tokio::test]
async fn block_fetch_reports_only_successful_wanted_transfers() {
    use chains::devnet::TestToken;

    let node = Anvil::spawn().await.expect("start anvil");
    let client = node.client();
    let watched = Address::repeat_byte(0x42);
    let unwatched = Address::repeat_byte(0x43);
    let wanted = move |a: &Address| *a == watched;
    // The test's blocks must start after the mints'.
    let token = node
        .deploy_minted_token(6, U256::from(1_000_000))
        .await
        .expect("deploy token");
    let rogue = node
        .deploy_minted_token(6, U256::from(1_000_000))
        .await
        .expect("deploy rogue token");
    let from = Anvil::DEV_ACCOUNT;
    let start = client.head().await.expect("head").height + 1;

    node.request("evm_setAutomine", serde_json::json!([false]))
        .await
        .expect("automine off");
    let eth = node
        .send(from, watched, U256::from(5), &[], None)
        .await
        .expect("eth");
    node.send(from, unwatched, U256::from(6), &[], None)
        .await
        .expect("eth elsewhere");
    let tok = node
        .send(
            from,
            token.address,
            U256::ZERO,
            &TestToken::transfer(watched, U256::from(7)),
            None,
        )
        .await
        .expect("token");
    node.send(
        from,
        rogue.address,
        U256::ZERO,
        &TestToken::transfer(watched, U256::from(8)),
        None,
    )
    .await
    .expect("rogue token");
    let reverted = node
        .send(
            from,
            token.address,
            U256::ZERO,
            &TestToken::transfer_then_revert(watched, U256::from(9)),
            Some(200_000),
        )
        .await
        .expect("reverting token");
    node.mine(1).await.expect("mine");
    assert!(!node.succeeded(reverted).await.expect("receipt"));

    // A reverting call to the watched address itself: value sent, status 0.
    node.request(
        "anvil_setCode",
        serde_json::json!([watched, "0x60006000fd"]),
    )
    .await
    .expect("set code");
    let failed_eth = node
        .send(from, watched, U256::from(10), &[], Some(100_000))
        .await
        .expect("eth to reverting code");
    node.mine(1).await.expect("mine");
    assert!(!node.succeeded(failed_eth).await.expect("receipt"));

    let blocks = client
        .blocks(start..=start + 1, &[token.address], &wanted)
        .await
        .expect("fetch");
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[1].parent_hash, blocks[0].hash);
    let transfers: Vec<_> = blocks[0]
        .transfers
        .iter()
        .map(|t| (t.tx_hash, t.token, t.to, t.amount))
        .collect();
    assert_eq!(
        transfers,
        vec![
            (eth, None, watched, U256::from(5)),
            (tok, Some(token.address), watched, U256::from(7)),
        ]
    );
    assert!(blocks[0].transfers[1].log_index.is_some());
    assert!(blocks[1].transfers.is_empty(), "{:?}", blocks[1].transfers);

    let hashes = client
        .block_hashes(&[start, start + 1, start + 100])
        .await
        .expect("hashes");
    assert_eq!(
        hashes,
        vec![Some(blocks[0].hash), Some(blocks[1].hash), None]
    );
    let beyond = client.blocks(start + 1..=start + 2, &[], &wanted).await;
    assert!(
        matches!(beyond, Err(chains::Error::Inconsistent { .. })),
        "{beyond:?}"
    );
}
