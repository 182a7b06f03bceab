//! Property tests: no node reply, however broken, panics a decoder. The
//! client runs against a fake node serving Bitcoin Core's replies
//! (`tests/fixtures/bitcoin-core/`), arbitrary bytes, arbitrary JSON, and
//! those replies with fields replaced; raw block hex is decoded from
//! arbitrary text and from the genesis block with bytes damaged.

use std::sync::LazyLock;

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

use super::*;
use crate::test_support::{
    self, Edit, EveryCall, FakeNode, Reply, apply, arbitrary_bytes_fail_every_call,
    arbitrary_json_answers, check, edited_replies, runtime,
};

/// Each method's recorded reply: `{"status", "body"}`.
static REPLIES: LazyLock<Vec<(&str, Value)>> = LazyLock::new(|| {
    let parse = |text: &str| serde_json::from_str::<Value>(text).expect("fixture");
    vec![
        (
            "getblockcount",
            parse(include_str!(
                "../../tests/fixtures/bitcoin-core/getblockcount.json"
            )),
        ),
        (
            "getblockhash",
            parse(include_str!(
                "../../tests/fixtures/bitcoin-core/getblockhash.json"
            )),
        ),
        (
            "getbestblockhash",
            parse(include_str!(
                "../../tests/fixtures/bitcoin-core/getbestblockhash.json"
            )),
        ),
        (
            "getblock",
            parse(include_str!(
                "../../tests/fixtures/bitcoin-core/getblock-0.json"
            )),
        ),
        (
            "getrawmempool",
            parse(include_str!(
                "../../tests/fixtures/bitcoin-core/getrawmempool.json"
            )),
        ),
        (
            "getrawtransaction",
            parse(include_str!(
                "../../tests/fixtures/bitcoin-core/getrawtransaction.json"
            )),
        ),
        (
            "sendrawtransaction",
            parse(include_str!(
                "../../tests/fixtures/bitcoin-core/sendrawtransaction.json"
            )),
        ),
        (
            "getblockchaininfo",
            json!({"status": 200, "body": {"result": {
                "chain": "regtest", "blocks": 0, "headers": 0,
                "bestblockhash": GENESIS, "difficulty": 4.656542373906925e-10,
                "time": 1296688602, "mediantime": 1296688602,
                "verificationprogress": 1, "initialblockdownload": true,
                "chainwork": "0000000000000000000000000000000000000000000000000000000000000002",
                "size_on_disk": 293, "pruned": false, "warnings": ""
            }, "error": null, "id": null}}),
        ),
    ]
});

const GENESIS: &str = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206";

/// The methods whose replies the edits aim at.
const TARGETS: &[&str] = &[
    "getblockcount",
    "getblockhash",
    "getbestblockhash",
    "getblock",
    "getrawmempool",
    "getrawtransaction",
    "sendrawtransaction",
    "getblockchaininfo",
];

/// Keys of arbitrary JSON: the JSON-RPC envelope's and `getblockchaininfo`'s.
const KEYS: &[&str] = &["result", "error", "id", "code", "message", "chain"];

fn recorded(method: &str) -> Option<&'static Value> {
    REPLIES.iter().find(|(m, _)| *m == method).map(|(_, r)| r)
}

fn genesis_hex() -> &'static str {
    recorded("getblock").expect("getblock")["body"]["result"]
        .as_str()
        .expect("hex")
}

fn coinbase() -> Transaction {
    let hex = recorded("getrawtransaction").expect("getrawtransaction")["body"]["result"]
        .as_str()
        .expect("hex");
    deserialize_hex(hex).expect("coinbase")
}

/// Answers like Bitcoin Core did, damaged by `edits`.
fn recorded_node(edits: Vec<Edit>) -> impl FnMut(&Value) -> Reply + Send + 'static {
    move |request| {
        let method = request["method"].as_str().unwrap_or_default();
        let Some(reply) = recorded(method) else {
            return Reply {
                status: 401,
                body: Vec::new(),
            };
        };
        let mut body = reply["body"].clone();
        body["id"] = request["id"].clone();
        apply(&edits, method, &mut body);
        Reply {
            status: reply["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500),
            body: body.to_string().into_bytes(),
        }
    }
}

/// Answers every call with `result` in a well-formed envelope.
fn result_node(result: Value) -> impl FnMut(&Value) -> Reply + Send + 'static {
    move |request| Reply::json(&json!({"result": result, "error": null, "id": request["id"]}))
}

fn client(node: &FakeNode) -> BitcoinClient {
    BitcoinClient::new(node.url(), BitcoinAuth::None, Duration::from_secs(5)).expect("client")
}

/// Sends the recorded coinbase.
impl EveryCall for BitcoinClient {
    async fn every_call(&self) -> Vec<Result<()>> {
        let client = self;
        let tx = &coinbase();
        let hash: BlockHash = GENESIS.parse().expect("hash");
        vec![
            client.block_count().await.map(drop),
            client.block_hash(0).await.map(drop),
            client.best_block_hash().await.map(drop),
            client.block(hash).await.map(drop),
            client.blocks(0..=1).await.map(drop),
            client.raw_mempool().await.map(drop),
            client.raw_transaction(tx.compute_txid()).await.map(drop),
            client.send_raw_transaction(tx).await.map(drop),
            client.network_name().await.map(drop),
            client.head().await.map(drop),
        ]
    }
}

/// A panic in `bitcoincore-rpc` or a decoder runs on the blocking pool,
/// where tokio catches it and the client reports the task failed.
fn not_a_panic(result: &Result<()>) -> std::result::Result<(), TestCaseError> {
    if let Err(err) = result {
        let text = err.to_string();
        prop_assert!(!text.contains("rpc task failed"), "{text}");
        prop_assert_ne!(err.kind(), "config");
    }
    Ok(())
}

#[test]
fn recorded_replies_decode() {
    let node = FakeNode::start();
    node.answer(recorded_node(Vec::new()));
    let client = client(&node);
    let results = runtime().block_on(client.every_call());
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| Some(r.as_ref().err()?.to_string()))
        .collect();
    assert_eq!(failed, Vec::<String>::new());
}

#[test]
fn arbitrary_bytes_from_the_node_are_errors() {
    arbitrary_bytes_fail_every_call(client, &[200, 401, 500, 503], not_a_panic);
}

#[test]
fn arbitrary_json_from_the_node_never_panics() {
    arbitrary_json_answers(client, KEYS, result_node, not_a_panic);
}

#[test]
fn recorded_replies_with_fields_replaced_never_panic() {
    edited_replies(client, TARGETS, KEYS, recorded_node, not_a_panic);
}

/// Raw block hex: arbitrary text, hex of arbitrary bytes, and the genesis
/// block with bytes overwritten, cut off or inserted.
fn block_hex() -> impl Strategy<Value = String> {
    let genesis = || {
        let block: Block = deserialize_hex(genesis_hex()).expect("genesis");
        bitcoin::consensus::encode::serialize(&block)
    };
    let to_hex = |bytes: Vec<u8>| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    prop_oneof![
        ".{0,300}",
        "[0-9a-fA-F \n]{0,400}",
        test_support::bytes().prop_map(to_hex),
        prop::collection::vec((any::<Index>(), any::<u8>()), 1..6).prop_map(move |changes| {
            let mut bytes = genesis();
            for (at, byte) in changes {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            to_hex(bytes)
        }),
        any::<Index>().prop_map(move |at| {
            let mut bytes = genesis();
            bytes.truncate(at.index(bytes.len()));
            to_hex(bytes)
        }),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..10)).prop_map(move |(at, extra)| {
            let mut bytes = genesis();
            let i = at.index(bytes.len());
            bytes.splice(i..i, extra);
            to_hex(bytes)
        }),
    ]
}

#[test]
fn raw_block_hex_decodes_exactly_or_is_malformed() {
    assert!(decode_block_hex(genesis_hex()).is_ok());
    check(block_hex(), |hex| {
        match decode_block_hex(&hex) {
            // Consensus encoding is canonical: what decodes re-encodes to
            // the same bytes.
            Ok(block) => {
                prop_assert_eq!(serialize_hex(&block), hex.trim().to_ascii_lowercase());
            }
            Err(err) => prop_assert_eq!(err.kind(), "malformed"),
        }
        Ok(())
    });
}
