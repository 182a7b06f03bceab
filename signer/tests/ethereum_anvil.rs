//! Transactions signed by `signer` land on a real node: anvil accepts the
//! raw bytes, mines them with status 1 under the hash the signer returned,
//! and moves exactly the value signed, from the key that signed.

use alloy_sol_types::{SolCall, sol};
use chains::devnet::{Anvil, TestToken};
use chains_core::Chain;
use serde_json::{Value, json};
use signer::ethereum::{Address, B256, Payment, SignedTransaction, U256, UnsignedTransaction};
use signer::{BitcoinNetwork, DepositKeys, HdSeed, INSECURE_DEVNET_MNEMONIC, KeyId, SeedPhrase};

sol! {
    function balanceOf(address owner) external view returns (uint256);
}

const GWEI: u128 = 1_000_000_000;
const ETHER: u128 = 1_000_000_000_000_000_000;

fn keys() -> DepositKeys {
    let seed =
        HdSeed::from_phrase(&SeedPhrase::from_words(INSECURE_DEVNET_MNEMONIC), "").expect("seed");
    DepositKeys::new(seed, BitcoinNetwork::Regtest).expect("keys")
}

fn ethereum_address(keys: &DepositKeys, key: KeyId) -> Address {
    keys.key_address(Chain::Ethereum, key)
        .expect("address")
        .address
        .parse()
        .expect("an Ethereum address")
}

fn quantity(value: &Value) -> U256 {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("not a quantity: {value}"))
}

async fn balance(node: &Anvil, address: Address) -> U256 {
    quantity(
        &node
            .request("eth_getBalance", json!([address, "latest"]))
            .await
            .expect("eth_getBalance"),
    )
}

async fn nonce(node: &Anvil, address: Address) -> u64 {
    let count = quantity(
        &node
            .request("eth_getTransactionCount", json!([address, "latest"]))
            .await
            .expect("eth_getTransactionCount"),
    );
    u64::try_from(count).expect("a u64 nonce")
}

async fn token_balance(node: &Anvil, token: &TestToken, owner: Address) -> U256 {
    let data = format!("0x{}", hex::encode(balanceOfCall { owner }.abi_encode()));
    let answer = node
        .request(
            "eth_call",
            json!([{ "to": token.address, "data": data }, "latest"]),
        )
        .await
        .expect("eth_call balanceOf");
    quantity(&answer)
}

async fn set_balance(node: &Anvil, address: Address, wei: U256) {
    node.request("anvil_setBalance", json!([address, wei]))
        .await
        .expect("anvil_setBalance");
}

/// The chain id and EIP-1559 fees as the pipeline will pick them: a tip of
/// 1 gwei and a max fee of twice the latest base fee plus the tip.
async fn unsigned(
    node: &Anvil,
    nonce: u64,
    gas_limit: u64,
    payment: Payment,
) -> UnsignedTransaction {
    let chain_id = quantity(
        &node
            .request("eth_chainId", json!([]))
            .await
            .expect("chain id"),
    );
    let block = node
        .request("eth_getBlockByNumber", json!(["latest", false]))
        .await
        .expect("latest block");
    let base_fee = u128::try_from(quantity(&block["baseFeePerGas"])).expect("base fee");
    let tip = GWEI;
    UnsignedTransaction {
        chain_id: u64::try_from(chain_id).expect("chain id"),
        nonce,
        max_fee_per_gas: 2 * base_fee + tip,
        max_priority_fee_per_gas: tip,
        gas_limit,
        payment,
    }
}

/// Sends the raw bytes and checks the node hashes them as the signer did.
async fn submit(node: &Anvil, signed: &SignedTransaction) -> B256 {
    let raw = format!("0x{}", hex::encode(&signed.raw));
    let answer = node
        .request("eth_sendRawTransaction", json!([raw]))
        .await
        .expect("eth_sendRawTransaction");
    let hash: B256 = serde_json::from_value(answer).expect("a transaction hash");
    assert_eq!(
        hash, signed.hash,
        "the node hashes the bytes as the signer did"
    );
    hash
}

/// Waits for the signed transaction's block and returns its receipt after
/// checking it is from its signer, with status 1.
async fn landed(node: &Anvil, signed: &SignedTransaction) -> Value {
    node.mined(signed.hash).await.expect("mined");
    let receipt = node
        .request("eth_getTransactionReceipt", json!([signed.hash]))
        .await
        .expect("receipt");
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    let from: Address = serde_json::from_value(receipt["from"].clone()).expect("from");
    assert_eq!(from, signed.from);
    receipt
}

async fn send_raw(node: &Anvil, signed: &SignedTransaction) -> Value {
    submit(node, signed).await;
    landed(node, signed).await
}

/// What the receipt says the sender paid for gas.
fn gas_cost(receipt: &Value) -> U256 {
    quantity(&receipt["gasUsed"]) * quantity(&receipt["effectiveGasPrice"])
}

#[tokio::test]
async fn the_hot_wallet_pays_ether() {
    let node = Anvil::spawn().await.expect("start anvil");
    let keys = keys();
    let hot = ethereum_address(&keys, KeyId::HotWallet);
    let funded = U256::from(10 * ETHER);
    set_balance(&node, hot, funded).await;
    let recipient = Address::repeat_byte(0x5a);
    assert_eq!(balance(&node, recipient).await, U256::ZERO);
    assert_eq!(nonce(&node, hot).await, 0);

    let value = U256::from(ETHER / 4 + 1);
    let tx = unsigned(
        &node,
        0,
        21_000,
        Payment::Ether {
            to: recipient,
            value,
        },
    )
    .await;
    let signed = keys.sign_ethereum(KeyId::HotWallet, &tx).expect("signs");
    assert_eq!(signed.from, hot);
    let receipt = send_raw(&node, &signed).await;

    assert_eq!(balance(&node, recipient).await, value, "exactly the value");
    assert_eq!(
        balance(&node, hot).await,
        funded - value - gas_cost(&receipt),
        "the hot wallet paid the value and the gas, nothing else"
    );
    assert_eq!(nonce(&node, hot).await, 1);

    // A reserved nonce that is not needed any more is filled with a
    // zero-value transfer to the hot wallet itself.
    let before = balance(&node, hot).await;
    let fill = unsigned(
        &node,
        1,
        21_000,
        Payment::Ether {
            to: hot,
            value: U256::ZERO,
        },
    )
    .await;
    let signed = keys.sign_ethereum(KeyId::HotWallet, &fill).expect("signs");
    let receipt = send_raw(&node, &signed).await;
    assert_eq!(balance(&node, hot).await, before - gas_cost(&receipt));
    assert_eq!(nonce(&node, hot).await, 2);
}

/// A stuck transaction is replaced by the same payment at the same nonce
/// with both fee fields raised by 10 %: only one of them is mined, and the
/// recipient is paid once.
#[tokio::test]
async fn a_replacement_at_the_same_nonce_pays_once() {
    let node = Anvil::spawn().await.expect("start anvil");
    let keys = keys();
    let hot = ethereum_address(&keys, KeyId::HotWallet);
    set_balance(&node, hot, U256::from(ETHER)).await;
    let recipient = Address::repeat_byte(0x7c);
    let value = U256::from(ETHER / 10);
    node.request("evm_setAutomine", json!([false]))
        .await
        .expect("automine off");

    let first = unsigned(
        &node,
        0,
        21_000,
        Payment::Ether {
            to: recipient,
            value,
        },
    )
    .await;
    let bump = |fee: u128| fee + fee.div_ceil(10);
    let replacement = UnsignedTransaction {
        max_fee_per_gas: bump(first.max_fee_per_gas),
        max_priority_fee_per_gas: bump(first.max_priority_fee_per_gas),
        ..first
    };
    let first = keys.sign_ethereum(KeyId::HotWallet, &first).expect("signs");
    let replacement = keys
        .sign_ethereum(KeyId::HotWallet, &replacement)
        .expect("signs");
    assert_ne!(first.hash, replacement.hash);
    submit(&node, &first).await;
    submit(&node, &replacement).await;
    node.mine(1).await.expect("anvil_mine");

    landed(&node, &replacement).await;
    let dropped = node
        .request("eth_getTransactionReceipt", json!([first.hash]))
        .await
        .expect("receipt lookup");
    assert!(
        dropped.is_null(),
        "the replaced attempt never lands: {dropped}"
    );
    node.mine(3).await.expect("anvil_mine");
    assert_eq!(balance(&node, recipient).await, value, "paid once");
    assert_eq!(nonce(&node, hot).await, 1);
}

#[tokio::test]
async fn the_hot_wallet_pays_an_erc20_token() {
    let node = Anvil::spawn().await.expect("start anvil");
    let keys = keys();
    let hot = ethereum_address(&keys, KeyId::HotWallet);
    let token = node
        .deploy_minted_token(6, U256::from(1_000_000_000_000_u64))
        .await
        .expect("token");
    let held = U256::from(500_000_000_u64);
    let funding = node
        .send(
            Anvil::DEV_ACCOUNT,
            token.address,
            U256::ZERO,
            &TestToken::transfer(hot, held),
            None,
        )
        .await
        .expect("fund the hot wallet with tokens");
    node.mined(funding).await.expect("mined");
    let gas_money = U256::from(ETHER);
    set_balance(&node, hot, gas_money).await;
    let recipient = Address::repeat_byte(0x6b);
    assert_eq!(token_balance(&node, &token, hot).await, held);

    let amount = U256::from(123_456_789_u64);
    let tx = unsigned(
        &node,
        0,
        100_000,
        Payment::Erc20 {
            token: token.address,
            recipient,
            amount,
        },
    )
    .await;
    let signed = keys.sign_ethereum(KeyId::HotWallet, &tx).expect("signs");
    let receipt = send_raw(&node, &signed).await;

    assert_eq!(token_balance(&node, &token, recipient).await, amount);
    assert_eq!(token_balance(&node, &token, hot).await, held - amount);
    assert_eq!(
        balance(&node, hot).await,
        gas_money - gas_cost(&receipt),
        "no ether moved but the gas"
    );
    assert_eq!(balance(&node, recipient).await, U256::ZERO);
}

/// Sweeps sign with deposit keys: one deposit address sends its ether less
/// the most the sweep's gas can cost to the hot wallet.
#[tokio::test]
async fn a_deposit_address_sweeps_into_the_hot_wallet() {
    let node = Anvil::spawn().await.expect("start anvil");
    let keys = keys();
    let hot = ethereum_address(&keys, KeyId::HotWallet);
    let deposit = ethereum_address(&keys, KeyId::Deposit(5));
    assert_ne!(deposit, hot);
    let deposited = U256::from(2 * ETHER);
    set_balance(&node, deposit, deposited).await;

    let mut tx = unsigned(
        &node,
        0,
        21_000,
        Payment::Ether {
            to: hot,
            value: U256::ZERO,
        },
    )
    .await;
    let most_gas = U256::from(21_000_u64) * U256::from(tx.max_fee_per_gas);
    let swept = deposited - most_gas;
    tx.payment = Payment::Ether {
        to: hot,
        value: swept,
    };
    let signed = keys.sign_ethereum(KeyId::Deposit(5), &tx).expect("signs");
    assert_eq!(signed.from, deposit);
    let receipt = send_raw(&node, &signed).await;

    assert_eq!(balance(&node, hot).await, swept);
    assert_eq!(
        balance(&node, deposit).await,
        deposited - swept - gas_cost(&receipt)
    );
}
