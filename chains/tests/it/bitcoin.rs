use bitcoin::hashes::Hash;
use chains::HeadSource;
use chains::bitcoin::MempoolVerdict;
use chains::devnet::Btcd;

#[tokio::test]
async fn mined_blocks_read_back_and_decode_from_raw_hex() {
    let node = Btcd::spawn().await.expect("start btcd");
    let client = node.client();
    assert_eq!(client.head().await.expect("head").height, 0);

    let mined = node.generate(5).await.expect("generate");
    assert_eq!(mined.len(), 5);

    let head = client.head().await.expect("head");
    assert_eq!(head.height, 5);
    assert_eq!(head.hash.as_deref(), Some(mined[4].to_string().as_str()));
    assert_eq!(client.best_block_hash().await.expect("best hash"), mined[4]);

    let miner_script = Btcd::mining_address().script_pubkey();
    let mut parent = client.block_hash(0).await.expect("genesis hash");
    for (offset, hash) in mined.iter().enumerate() {
        let height = offset as u64 + 1;
        assert_eq!(client.block_hash(height).await.expect("block hash"), *hash);
        let block = client.block(*hash).await.expect("raw block");
        assert_eq!(
            block.block_hash(),
            *hash,
            "decoded block hashes to what the node reported"
        );
        assert_eq!(
            block.header.prev_blockhash, parent,
            "block {height} links to its parent"
        );
        assert!(block.check_merkle_root(), "merkle root of block {height}");
        let coinbase = &block.txdata[0];
        assert!(coinbase.is_coinbase());
        assert!(
            coinbase
                .output
                .iter()
                .any(|out| out.script_pubkey == miner_script && out.value.to_sat() > 0),
            "coinbase of block {height} pays the mining key"
        );
        parent = *hash;
    }
    assert_ne!(parent.to_byte_array(), [0; 32]);
}

#[tokio::test]
async fn mempool_verdicts_and_fee_estimates_come_from_the_node() {
    let node = Btcd::spawn().await.expect("start btcd");
    // Segwit activates at 432 on btcd's regtest; coinbases mature at 100.
    node.generate(432).await.expect("generate");
    let client = node.client();
    // A fresh btcd has no estimate: it lacks estimatesmartfee and answers
    // estimatefee with an error until it has watched enough blocks.
    assert_eq!(client.fee_rate_estimate(6).await.expect("estimate"), None);

    let (first, value) = node.coinbase_output(1).await.expect("coinbase");
    let pay = |to_sat: u64| {
        Btcd::sign_payment(
            first,
            value,
            &[(Btcd::mining_address(), bitcoin::Amount::from_sat(to_sat))],
        )
        .expect("sign")
    };
    let tx = pay(1_000_000);
    assert_eq!(
        client.test_mempool_accept(&tx).await.expect("verdict"),
        MempoolVerdict::Allowed
    );
    client.send_raw_transaction(&tx).await.expect("send");
    // Spending the same coin again conflicts with the one in the mempool.
    match client
        .test_mempool_accept(&pay(2_000_000))
        .await
        .expect("verdict")
    {
        MempoolVerdict::Rejected(reason) => assert!(!reason.is_empty()),
        MempoolVerdict::Allowed => panic!("a double spend was allowed"),
    }
    let (immature, value) = node.coinbase_output(400).await.expect("coinbase");
    let early = Btcd::sign_payment(
        immature,
        value,
        &[(Btcd::mining_address(), bitcoin::Amount::from_sat(1_000))],
    )
    .expect("sign");
    assert!(matches!(
        client.test_mempool_accept(&early).await.expect("verdict"),
        MempoolVerdict::Rejected(_)
    ));
}
