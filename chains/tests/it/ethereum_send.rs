//! The withdrawal calls against a real anvil: broadcast outcomes as anvil
//! words them, receipts, fees, balances and nonces.

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::BlockNumberOrTag;
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256, TxKind, U256, keccak256};
use alloy::providers::Provider;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use chains::devnet::{Anvil, TestToken};
use chains::ethereum::{EthereumClient, SendOutcome};

const GWEI: u128 = 1_000_000_000;

/// Signs EIP-1559 transfers for one key, the way the signer crate does.
struct Sender {
    key: PrivateKeySigner,
    chain_id: u64,
}

impl Sender {
    async fn new(byte: u8, client: &EthereumClient) -> Self {
        let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(byte)).expect("key");
        let chain_id = client.chain_id().await.expect("chain id");
        Self { key, chain_id }
    }

    fn address(&self) -> Address {
        self.key.address()
    }

    /// A plain transfer of `value` wei at `nonce`, `tip` and `max_fee`.
    fn transfer(&self, to: Address, value: u64, nonce: u64, tip: u128, max_fee: u128) -> Vec<u8> {
        let tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            to: TxKind::Call(to),
            value: U256::from(value),
            ..TxEip1559::default()
        };
        let signature = self.key.sign_hash_sync(&tx.signature_hash()).expect("sign");
        TxEnvelope::from(tx.into_signed(signature)).encoded_2718()
    }
}

#[tokio::test]
async fn broadcast_outcomes_receipts_and_fees_on_anvil() {
    let node = Anvil::spawn().await.expect("start anvil");
    let client = node.client();
    let sender = Sender::new(0x11, client).await;
    let from = sender.address();
    let to = Address::repeat_byte(0x42);
    let ten_eth = U256::from(10u64).pow(U256::from(18)) * U256::from(10);
    node.set_balance(from, ten_eth).await.expect("fund sender");

    assert_eq!(client.pending_nonce(from).await.expect("nonce"), 0);
    assert_eq!(
        client
            .balance(from, BlockNumberOrTag::Latest)
            .await
            .expect("balance"),
        ten_eth
    );
    assert_eq!(
        client
            .estimate_gas(from, to, U256::from(1), &[])
            .await
            .expect("estimate"),
        chains::ethereum::GasEstimate::Gas(21_000)
    );
    // A contract that reverts on any call (`PUSH0 PUSH0 REVERT`): the
    // node answers that the call fails.
    let refuser = Address::repeat_byte(0x5f);
    node.request("anvil_setCode", serde_json::json!([refuser, "0x5f5ffd"]))
        .await
        .expect("code");
    let refused = client
        .estimate_gas(from, refuser, U256::ZERO, &[])
        .await
        .expect("estimate");
    assert!(
        matches!(refused, chains::ethereum::GasEstimate::Fails(_)),
        "{refused:?}"
    );
    let fees = client.fee_suggestion(10, 50.0).await.expect("fee history");
    assert!(fees.base_fee_per_gas > 0, "{fees:?}");
    assert_eq!(fees.priority_fee_per_gas, 0, "no block paid a tip yet");
    let max_fee = 2 * fees.base_fee_per_gas + GWEI;

    node.set_automine(false).await.expect("automine off");
    let first = sender.transfer(to, 1_000, 0, GWEI, max_fee);
    let hash = keccak256(&first);
    assert_eq!(
        client.send_raw_transaction(&first).await.expect("send"),
        SendOutcome::Accepted(hash)
    );
    assert!(node.mempool_contains(hash).await.expect("pool"));
    assert_eq!(client.pending_nonce(from).await.expect("nonce"), 1);
    assert_eq!(
        client
            .nonce_at(from, BlockNumberOrTag::Latest)
            .await
            .expect("nonce"),
        0
    );
    assert_eq!(
        client.send_raw_transaction(&first).await.expect("resend"),
        SendOutcome::AlreadyKnown,
        "the same bytes again"
    );
    let replacement = sender.transfer(to, 2_000, 0, GWEI, max_fee);
    assert_eq!(
        client
            .send_raw_transaction(&replacement)
            .await
            .expect("replace"),
        SendOutcome::Underpriced,
        "a replacement without a fee bump"
    );
    let poor = Sender::new(0x22, client).await;
    node.set_balance(poor.address(), U256::from(256))
        .await
        .expect("fund poorly");
    assert_eq!(
        client
            .send_raw_transaction(&poor.transfer(to, 1, 0, GWEI, max_fee))
            .await
            .expect("send"),
        SendOutcome::InsufficientFunds
    );
    let below_base = sender.transfer(to, 1, 1, 1, 2);
    assert_eq!(
        client
            .send_raw_transaction(&below_base)
            .await
            .expect("send"),
        SendOutcome::Underpriced,
        "a max fee below the base fee"
    );
    assert!(matches!(
        client.send_raw_transaction(&[0x02, 0xde, 0xad]).await,
        Ok(SendOutcome::Rejected(_))
    ));

    node.mine(1).await.expect("mine");
    assert!(!node.mempool_contains(hash).await.expect("pool"));
    assert_eq!(
        client.send_raw_transaction(&first).await.expect("resend"),
        SendOutcome::NonceTooLow,
        "the same bytes after they were mined"
    );
    let unknown = B256::repeat_byte(0x99);
    let receipts = client.receipts(&[hash, unknown]).await.expect("receipts");
    let receipt = receipts[0].expect("mined");
    assert_eq!(receipts[1], None, "an unknown hash has no receipt");
    assert_eq!(receipts.len(), 2);
    assert!(receipt.status);
    assert_eq!((receipt.hash, receipt.gas_used), (hash, 21_000));
    assert!(receipt.effective_gas_price > GWEI && receipt.effective_gas_price <= max_fee);
    assert_eq!(
        client
            .block_hash_at(receipt.block_number)
            .await
            .expect("block hash"),
        Some(receipt.block_hash)
    );
    assert_eq!(
        client
            .block_hash_at(receipt.block_number + 100)
            .await
            .expect("above the tip"),
        None
    );
    let spent = U256::from(1_000) + U256::from(21_000 * receipt.effective_gas_price);
    assert_eq!(
        client
            .balance(from, BlockNumberOrTag::Latest)
            .await
            .expect("balance"),
        ten_eth - spent
    );
    assert_eq!(
        client
            .fee_suggestion(10, 50.0)
            .await
            .expect("fee history")
            .priority_fee_per_gas,
        GWEI,
        "the one block that paid a tip paid 1 gwei"
    );

    // A pending transaction dropped from the pool.
    let second = sender.transfer(to, 1, 1, GWEI, max_fee);
    let Ok(SendOutcome::Accepted(second_hash)) = client.send_raw_transaction(&second).await else {
        panic!("the second transfer is accepted");
    };
    assert!(node.mempool_contains(second_hash).await.expect("pool"));
    node.drop_transaction(second_hash)
        .await
        .expect("drop from the pool");
    assert!(!node.mempool_contains(second_hash).await.expect("pool"));
    assert_eq!(client.pending_nonce(from).await.expect("nonce"), 1);

    // The next block's base fee, as set.
    node.set_next_base_fee(7 * GWEI).await.expect("base fee");
    node.mine(1).await.expect("mine");
    let block = client
        .provider()
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .expect("block")
        .expect("latest");
    assert_eq!(block.header.base_fee_per_gas, Some(7_000_000_000));

    // A reorg keeps the height and changes the tip's hash.
    let height = block.header.number;
    node.reorg(1, &[]).await.expect("anvil_reorg");
    let after = client.block_hash_at(height).await.expect("hash");
    assert!(after.is_some_and(|h| h != block.header.hash), "{after:?}");

    // ERC-20 balances by `balanceOf`.
    node.set_automine(true).await.expect("automine on");
    let token = node
        .deploy_minted_token(6, U256::from(1_000_000))
        .await
        .expect("token");
    let paid = node
        .send(
            Anvil::DEV_ACCOUNT,
            token.address,
            U256::ZERO,
            &TestToken::transfer(from, U256::from(77)),
            None,
        )
        .await
        .expect("token transfer");
    node.mined(paid).await.expect("mined");
    assert_eq!(
        client
            .token_balance(token.address, from, BlockNumberOrTag::Latest)
            .await
            .expect("token balance"),
        U256::from(77)
    );
    let not_a_token = client
        .token_balance(to, from, BlockNumberOrTag::Latest)
        .await
        .expect_err("no contract there");
    assert_eq!(not_a_token.kind(), "malformed", "{not_a_token}");
}

/// One JSON-RPC batch of sends and of estimates: every call gets its own
/// answer, in order, and one refusal never stands for the others.
#[tokio::test]
async fn batched_sends_and_estimates_answer_each_call_on_anvil() {
    use chains::ethereum::{GasCall, GasEstimate};

    let node = Anvil::spawn().await.expect("start anvil");
    let client = node.client();
    let sender = Sender::new(0x33, client).await;
    let from = sender.address();
    let to = Address::repeat_byte(0x43);
    node.set_balance(from, U256::from(10u64).pow(U256::from(18)))
        .await
        .expect("fund sender");
    let refuser = Address::repeat_byte(0x5e);
    node.request("anvil_setCode", serde_json::json!([refuser, "0x5f5ffd"]))
        .await
        .expect("code");
    let call = |to: Address| GasCall {
        from,
        to,
        value: U256::ZERO,
        data: Vec::new(),
    };
    let estimates = client
        .estimate_gas_many(&[call(to), call(refuser), call(to)])
        .await
        .expect("estimates");
    assert_eq!(estimates.len(), 3);
    assert_eq!(estimates[0], GasEstimate::Gas(21_000));
    assert!(
        matches!(estimates[1], GasEstimate::Fails(_)),
        "{estimates:?}"
    );
    assert_eq!(estimates[2], GasEstimate::Gas(21_000));
    assert!(
        client
            .estimate_gas_many(&[])
            .await
            .expect("none")
            .is_empty()
    );

    let fees = client.fee_suggestion(10, 50.0).await.expect("fee history");
    let max_fee = 2 * fees.base_fee_per_gas + GWEI;
    node.set_automine(false).await.expect("automine off");
    let first = sender.transfer(to, 1, 0, GWEI, max_fee);
    let second = sender.transfer(to, 2, 1, GWEI, max_fee);
    let garbage = [0x02, 0xde, 0xad];
    let outcomes = client
        .send_raw_transactions(&[&first, &garbage, &second, &first])
        .await
        .expect("batch");
    let outcomes: Vec<SendOutcome> = outcomes.into_iter().map(|o| o.expect("answered")).collect();
    assert_eq!(outcomes[0], SendOutcome::Accepted(keccak256(&first)));
    assert!(
        matches!(outcomes[1], SendOutcome::Rejected(_)),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], SendOutcome::Accepted(keccak256(&second)));
    assert_eq!(
        outcomes[3],
        SendOutcome::AlreadyKnown,
        "the same bytes twice in one batch"
    );
    assert!(
        client
            .send_raw_transactions(&[])
            .await
            .expect("none")
            .is_empty()
    );
    node.mine(1).await.expect("mine");
    assert_eq!(client.pending_nonce(from).await.expect("nonce"), 2);
}
