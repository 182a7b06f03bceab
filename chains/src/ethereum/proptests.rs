//! Property tests: no node reply, however broken, panics a decoder; what is
//! not a JSON-RPC reply is an error. The client runs against a fake node
//! serving the replies anvil gave (`tests/fixtures/ethereum/`), arbitrary
//! bytes, arbitrary JSON, and the recorded replies with fields replaced.

use std::sync::LazyLock;

use alloy::primitives::address;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::test_support::{
    self, Edit, EveryCall, FakeNode, Reply, apply, arbitrary_bytes_fail_every_call,
    arbitrary_json_answers, check, edited_replies, edits, not_config, runtime,
};

/// The ERC-20 contract of the recording, and the account it pays.
const TOKEN: Address = address!("e7f1725e7734ce288f8367e1bb143e90bb3f0512");
const WALLET: Address = address!("70997970c51812dc3a010c7d01b50e0d17dc79c8");

fn recorded(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture")
}

static FULL_BLOCK: LazyLock<Value> = LazyLock::new(|| {
    recorded(include_str!(
        "../../tests/fixtures/ethereum/eth_getBlockByNumber-full.json"
    ))
});
static BLOCK_HEADER: LazyLock<Value> = LazyLock::new(|| {
    recorded(include_str!(
        "../../tests/fixtures/ethereum/eth_getBlockByNumber-hashes.json"
    ))
});
static LOGS: LazyLock<Value> = LazyLock::new(|| {
    recorded(include_str!(
        "../../tests/fixtures/ethereum/eth_getLogs.json"
    ))
});
static RECEIPTS: LazyLock<Value> = LazyLock::new(|| {
    recorded(include_str!(
        "../../tests/fixtures/ethereum/eth_getBlockReceipts.json"
    ))
});
static FEE_HISTORY: LazyLock<Value> = LazyLock::new(|| {
    recorded(include_str!(
        "../../tests/fixtures/ethereum/eth_feeHistory-anvil.json"
    ))
});

/// The first recorded receipt's transaction, which `eth_getTransactionReceipt`
/// answers with that receipt.
fn receipt_hash() -> B256 {
    serde_json::from_value(RECEIPTS["result"][0]["transactionHash"].clone()).unwrap_or_default()
}

/// Keys of arbitrary JSON: the fields the decoders (ours and alloy's for
/// the head) read.
const KEYS: &[&str] = &[
    "jsonrpc",
    "id",
    "result",
    "error",
    "code",
    "message",
    "number",
    "hash",
    "parentHash",
    "timestamp",
    "transactions",
    "from",
    "to",
    "value",
    "transactionHash",
    "status",
    "address",
    "topics",
    "data",
    "blockHash",
    "blockNumber",
    "logIndex",
    "removed",
    "baseFeePerGas",
    "gasLimit",
    "gasUsed",
    "logsBloom",
    "miner",
    "nonce",
    "extraData",
    "reward",
    "effectiveGasPrice",
];

/// What the edits aim at: one method's reply, or a batch's array.
const TARGETS: &[&str] = &[
    "eth_getBlockByNumber",
    "eth_getLogs",
    "eth_getBlockReceipts",
    "eth_getTransactionReceipt",
    "eth_feeHistory",
    "batch",
];

/// The recorded reply to one call, with its id and `edits` applied.
fn recorded_reply(call: &Value, edits: &[Edit]) -> Value {
    let method = call["method"].as_str().unwrap_or_default();
    let mut reply = match (method, &call["params"][1]) {
        ("eth_getBlockByNumber", Value::Bool(true)) => FULL_BLOCK.clone(),
        ("eth_getBlockByNumber", _) => BLOCK_HEADER.clone(),
        ("eth_getLogs", _) => LOGS.clone(),
        ("eth_getBlockReceipts", _) => RECEIPTS.clone(),
        ("eth_getTransactionReceipt", _) => {
            json!({"jsonrpc": "2.0", "result": RECEIPTS["result"][0]})
        }
        ("eth_feeHistory", _) => FEE_HISTORY.clone(),
        _ => json!({"jsonrpc": "2.0", "error": {"code": -32601, "message": "no such method"}}),
    };
    reply["id"] = call["id"].clone();
    apply(edits, method, &mut reply);
    reply
}

/// Answers like anvil did, damaged by `edits`.
fn recorded_node(edits: Vec<Edit>) -> impl FnMut(&Value) -> Reply + Send + 'static {
    move |request| {
        let reply = match request {
            Value::Array(calls) => {
                let mut batch = Value::Array(
                    calls
                        .iter()
                        .map(|call| recorded_reply(call, &edits))
                        .collect(),
                );
                apply(&edits, "batch", &mut batch);
                batch
            }
            call => recorded_reply(call, &edits),
        };
        Reply::json(&reply)
    }
}

/// Answers every call with `result`: well-formed JSON-RPC carrying
/// arbitrary JSON to the decoders.
fn result_node(result: Value) -> impl FnMut(&Value) -> Reply + Send + 'static {
    move |request| {
        let answer = |call: &Value| json!({"jsonrpc": "2.0", "id": call["id"], "result": result});
        let reply = match request {
            Value::Array(calls) => calls.iter().map(answer).collect(),
            call => answer(call),
        };
        Reply::json(&reply)
    }
}

fn client(node: &FakeNode) -> EthereumClient {
    EthereumClient::new(node.url(), Duration::from_secs(5)).expect("client")
}

fn wallet(address: &Address) -> bool {
    *address == WALLET
}

/// Transfers found must be to wanted addresses.
impl EveryCall for EthereumClient {
    async fn every_call(&self) -> Vec<Result<()>> {
        let client = self;
        let only_wanted = |blocks: Vec<Block>| {
            let strays = blocks
                .iter()
                .flat_map(|b| &b.transfers)
                .filter(|t| t.to != WALLET)
                .count();
            assert_eq!(strays, 0, "transfers to addresses nobody asked for");
        };
        vec![
            client
                .blocks(1..=1, &[TOKEN], &wallet)
                .await
                .map(only_wanted),
            client.blocks(1..=2, &[], &|_| true).await.map(drop),
            client.block_hashes(&[1, 2]).await.map(drop),
            client.head().await.map(drop),
            client.finalized().await.map(drop),
            client.pending_nonce(WALLET).await.map(drop),
            client
                .balance(WALLET, BlockNumberOrTag::Latest)
                .await
                .map(drop),
            client
                .token_balance(TOKEN, WALLET, BlockNumberOrTag::Latest)
                .await
                .map(drop),
            client.fee_suggestion(3, 50.0).await.map(drop),
            client
                .estimate_gas(WALLET, TOKEN, U256::ZERO, &[1, 2])
                .await
                .map(drop),
            client.send_raw_transaction(&[2, 1]).await.map(drop),
            client.receipts(&[receipt_hash()]).await.map(drop),
        ]
    }
}

#[test]
fn recorded_replies_decode_to_both_deposits() {
    let node = FakeNode::start();
    node.answer(recorded_node(Vec::new()));
    let client = client(&node);
    let rt = runtime();
    let blocks = rt
        .block_on(client.blocks(1..=1, &[TOKEN], &wallet))
        .expect("blocks");
    let hash: B256 = FULL_BLOCK["result"]["hash"]
        .as_str()
        .expect("hash")
        .parse()
        .expect("hash");
    assert_eq!(blocks.len(), 1);
    assert_eq!((blocks[0].number, blocks[0].hash), (1, hash));
    let found: Vec<_> = blocks[0]
        .transfers
        .iter()
        .map(|t| (t.token, t.to, t.amount, t.log_index))
        .collect();
    assert_eq!(
        found,
        vec![
            (None, WALLET, U256::from(5), None),
            (Some(TOKEN), WALLET, U256::from(7), Some(0)),
        ]
    );
    assert_eq!(
        rt.block_on(client.block_hashes(&[1])).expect("hashes"),
        vec![Some(hash)]
    );
    assert_eq!(rt.block_on(client.head()).expect("head").height, 1);
    let receipts = rt
        .block_on(client.receipts(&[receipt_hash()]))
        .expect("receipts");
    assert!(receipts[0].is_some_and(|r| r.status && r.block_number == 1));
    let fees = rt
        .block_on(client.fee_suggestion(3, 50.0))
        .expect("fee history");
    assert!(fees.base_fee_per_gas > 0 && fees.priority_fee_per_gas > 0);
}

/// The hardening issue's crash: a reply with a multi-byte character across
/// byte 200, which the old code sliced at 200 (`truncate(200)` on the
/// transport's text, `&text[..200]` on a result that failed to decode),
/// panicking the watcher task.
#[test]
fn a_multibyte_char_across_byte_200_of_a_reply_is_an_error_not_a_panic() {
    // Not JSON at all: alloy hands the text back as `DeserError`.
    let garbage = format!("{}é and the rest of an HTML error page", "x".repeat(199));
    assert!(!garbage.is_char_boundary(200));
    // JSON-RPC whose result is not a block: `decode` quotes the result.
    let result = json!({ "pad": format!("{}é", "x".repeat(191)) });
    assert!(!result.to_string().is_char_boundary(200));

    let serde_err = serde_json::from_str::<Value>("").expect_err("empty");
    let err = classify(
        "eth_getBlockByNumber",
        RpcError::DeserError {
            err: serde_err,
            text: garbage.clone(),
        },
    );
    assert_eq!(err.kind(), "malformed");
    assert!(
        err.to_string()
            .ends_with(&format!("response starts: {}", "x".repeat(199))),
        "{err}"
    );
    let raw = serde_json::value::RawValue::from_string(result.to_string()).expect("raw");
    let err = decode::<RpcBlock>("eth_getBlockByNumber", &raw).err();
    assert_eq!(err.as_ref().map(Error::kind), Some("malformed"), "{err:?}");

    // And through the client, as the watcher calls it.
    let node = FakeNode::start();
    let client = client(&node);
    let rt = runtime();
    node.answer(move |_| Reply::ok(garbage.clone()));
    let err = rt.block_on(client.blocks(1..=1, &[TOKEN], &wallet)).err();
    assert_eq!(err.as_ref().map(Error::kind), Some("malformed"), "{err:?}");
    let err = rt.block_on(client.head()).err();
    assert_eq!(err.as_ref().map(Error::kind), Some("malformed"), "{err:?}");
    node.answer(result_node(result));
    let err = rt.block_on(client.blocks(1..=1, &[TOKEN], &wallet)).err();
    assert_eq!(err.as_ref().map(Error::kind), Some("malformed"), "{err:?}");
}

#[test]
fn arbitrary_bytes_from_the_node_are_errors() {
    arbitrary_bytes_fail_every_call(client, &[200, 500, 502], |_| Ok(()));
}

#[test]
fn arbitrary_json_from_the_node_never_panics() {
    arbitrary_json_answers(client, KEYS, result_node, not_config);
}

#[test]
fn recorded_replies_with_fields_replaced_never_panic() {
    edited_replies(client, TARGETS, KEYS, recorded_node, not_config);
}

/// Edit targets of the decoder property: the recorded results, in order.
const RESULTS: &[&str] = &["block", "header", "logs", "receipts"];

/// The decoders themselves, on each kind of result, and the token
/// transfer reading of every log that decodes.
#[test]
fn decoders_answer_arbitrary_json_with_a_value_or_a_malformed_error() {
    let results = prop_oneof![
        test_support::json(KEYS),
        edits(RESULTS, KEYS).prop_map(|edits| {
            let mut results = json!([
                FULL_BLOCK["result"],
                BLOCK_HEADER["result"],
                LOGS["result"],
                RECEIPTS["result"],
            ]);
            for (i, target) in RESULTS.iter().enumerate() {
                apply(&edits, target, &mut results[i]);
            }
            results
        }),
    ];
    check(results, |value| {
        let candidates = match &value {
            Value::Array(items) => items.iter().chain([&value]).collect(),
            _ => vec![&value],
        };
        for candidate in candidates {
            let raw =
                serde_json::value::RawValue::from_string(candidate.to_string()).expect("raw json");
            let kinds = [
                decode::<RpcBlock>("eth_getBlockByNumber", &raw).err(),
                decode::<RpcHeader>("eth_getBlockByNumber", &raw).err(),
                decode::<Vec<RpcReceipt>>("eth_getBlockReceipts", &raw).err(),
                decode::<RpcLog>("eth_getLogs", &raw).err(),
            ];
            for err in kinds.into_iter().flatten() {
                prop_assert_eq!(err.kind(), "malformed");
            }
            if let Ok(logs) = decode::<Vec<RpcLog>>("eth_getLogs", &raw) {
                for log in &logs {
                    let _ = token_transfer(log, &[log.address, TOKEN]);
                }
            }
        }
        Ok(())
    });
}

#[test]
fn quoting_an_undecodable_reply_never_panics() {
    check(".{0,300}", |text| {
        let serde_err = serde_json::from_str::<Value>("").expect_err("empty");
        let err = classify(
            "eth_getLogs",
            RpcError::DeserError {
                err: serde_err,
                text: text.clone(),
            },
        );
        prop_assert_eq!(err.kind(), "malformed");
        prop_assert!(err.to_string().contains("response starts: "));
        Ok(())
    });
}
