//! Property tests: no node reply, however broken, panics a decoder; a
//! `getBlock` body that is not a JSON-RPC answer is an error. The client
//! runs against a fake node serving a `getBlock` reply in agave's
//! `jsonParsed` shape (`tests/fixtures/solana/`), arbitrary bytes,
//! arbitrary JSON, and that reply with fields replaced.
//!
//! Only public calls and `decode_block` are used, so the decoding behind
//! them can change freely.

use std::sync::LazyLock;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::test_support::{
    Edit, EveryCall, FakeNode, Reply, apply, arbitrary_json, check_calls, edited_replies, garbage,
    not_config, runtime,
};

const SLOT: u64 = 11;
/// The wallet the fixture pays, and the mint it pays in.
const WALLET: &str = "8cCnPgHWg7JR4Dzw7mjmdDREhETtgoVr3ku91CY9A2YG";
const MINT: &str = "8NTerVULshaEquKTVpNQ2EExD3XNk1VgE6r679nbV4tV";

static GET_BLOCK: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!(
        "../../tests/fixtures/solana/getBlock-jsonParsed.json"
    ))
    .expect("fixture")
});

/// Keys of arbitrary JSON: the fields `getBlock` decoding reads.
const KEYS: &[&str] = &[
    "jsonrpc",
    "id",
    "result",
    "error",
    "code",
    "message",
    "blockhash",
    "previousBlockhash",
    "blockTime",
    "transactions",
    "meta",
    "transaction",
    "err",
    "preBalances",
    "postBalances",
    "innerInstructions",
    "preTokenBalances",
    "postTokenBalances",
    "accountIndex",
    "mint",
    "owner",
    "programId",
    "uiTokenAmount",
    "amount",
    "accountKeys",
    "pubkey",
    "signer",
    "instructions",
    "index",
    "program",
    "parsed",
    "type",
    "info",
    "account",
    "wallet",
    "signatures",
];

/// What the edits aim at: each method's reply; `getBlock` is the
/// `jsonParsed` block (listed thrice: most edits go there), `getBlockHash`
/// the hash-only one.
const TARGETS: &[&str] = &[
    "getBlock",
    "getBlock",
    "getBlock",
    "getBlocks",
    "getBlockHash",
    "getSlot",
    "getGenesisHash",
];

fn wallet(owner: &str) -> bool {
    owner == WALLET
}

fn mints() -> Vec<String> {
    vec![MINT.to_owned()]
}

/// The reply to one call as a node would give it, and the edit target.
fn recorded_reply(call: &Value) -> (&'static str, Value) {
    let method = call["method"].as_str().unwrap_or_default();
    let block = &GET_BLOCK["result"];
    let (target, mut reply) = match method {
        "getBlock" if call["params"][1]["encoding"] == "jsonParsed" => {
            ("getBlock", GET_BLOCK.clone())
        }
        "getBlock" => (
            "getBlockHash",
            json!({"jsonrpc": "2.0", "result": {
                "blockHeight": block["blockHeight"], "blockTime": block["blockTime"],
                "blockhash": block["blockhash"], "parentSlot": block["parentSlot"],
                "previousBlockhash": block["previousBlockhash"],
            }}),
        ),
        "getBlocks" => ("getBlocks", json!({"jsonrpc": "2.0", "result": [SLOT]})),
        "getSlot" => ("getSlot", json!({"jsonrpc": "2.0", "result": SLOT})),
        "getGenesisHash" => (
            "getGenesisHash",
            json!({"jsonrpc": "2.0", "result": "4uhcVJyU9pJkvQyS88uRDiswHXSCkY3zQawwpjk2NsNY"}),
        ),
        _ => (
            "",
            json!({"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}}),
        ),
    };
    reply["id"] = call["id"].clone();
    (target, reply)
}

/// Answers like a node would, damaged by `edits`.
fn recorded_node(edits: Vec<Edit>) -> impl FnMut(&Value) -> Reply + Send + 'static {
    move |call| {
        let (target, mut reply) = recorded_reply(call);
        apply(&edits, target, &mut reply);
        Reply::json(&reply)
    }
}

/// Lists the fixture's slot, and answers every other call with `result` in
/// a well-formed envelope.
fn result_node(result: Value) -> impl FnMut(&Value) -> Reply + Send + 'static {
    move |call| {
        if call["method"] == "getBlocks" {
            return Reply::json(&recorded_reply(call).1);
        }
        Reply::json(&json!({"jsonrpc": "2.0", "id": call["id"], "result": result}))
    }
}

fn client(node: &FakeNode) -> SolanaClient {
    SolanaClient::new(node.url(), Duration::from_secs(5)).expect("client")
}

/// What `blocks` finds must be for the wallet asked about.
impl EveryCall for SolanaClient {
    async fn every_call(&self) -> Vec<Result<()>> {
        let client = self;
        let only_wanted = |blocks: Vec<Block>| {
            let strays = blocks
                .iter()
                .flat_map(|b| &b.transfers)
                .filter(|t| t.owner != WALLET)
                .count();
            assert_eq!(strays, 0, "transfers to owners nobody asked for");
        };
        vec![
            client
                .blocks(SLOT..=SLOT, &mints(), &wallet)
                .await
                .map(only_wanted),
            client.blocks(0..=SLOT, &[], &|_| true).await.map(drop),
            client
                .block_hashes(&[SLOT], CommitmentConfig::finalized())
                .await
                .map(drop),
            client.confirmed_head().await.map(drop),
            client.block_at_or_below(SLOT).await.map(drop),
            client.head().await.map(drop),
            client.genesis_hash().await.map(drop),
        ]
    }
}

#[test]
fn the_fixture_decodes_to_its_two_deposits() {
    let node = FakeNode::start();
    node.answer(recorded_node(Vec::new()));
    let client = client(&node);
    let rt = runtime();
    let blocks = rt
        .block_on(client.blocks(SLOT..=SLOT, &mints(), &wallet))
        .expect("blocks");
    assert_eq!(blocks.len(), 1);
    assert_eq!(
        blocks[0].blockhash,
        GET_BLOCK["result"]["blockhash"].as_str().expect("hash")
    );
    let found: Vec<_> = blocks[0]
        .transfers
        .iter()
        .map(|t| (t.owner.as_str(), t.mint.as_deref(), t.amount))
        .collect();
    assert_eq!(
        found,
        vec![(WALLET, None, 5), (WALLET, Some(MINT), 2_000_000)]
    );
    for result in rt.block_on(client.every_call()) {
        result.expect("every call decodes the fixture's answers");
    }
}

#[test]
fn arbitrary_bytes_as_a_block_are_errors() {
    check_calls(
        client,
        (garbage(&[200, 500, 503]), any::<bool>()),
        |node, (reply, listed)| {
            let err = decode_block(SLOT, &reply.body).err();
            prop_assert_eq!(err.as_ref().map(Error::kind), Some("malformed"));
            node.answer(move |call| {
                if listed && call["method"] == "getBlocks" {
                    return Reply::json(&recorded_reply(call).1);
                }
                reply.clone()
            });
            Ok(())
        },
        |result| {
            prop_assert!(result.is_err());
            Ok(())
        },
    );
}

#[test]
fn arbitrary_json_from_the_node_never_panics() {
    check_calls(
        client,
        arbitrary_json(KEYS),
        |node, (value, as_result)| {
            let _ = decode_block(SLOT, value.to_string().as_bytes());
            node.answer_json(value, as_result, result_node);
            Ok(())
        },
        not_config,
    );
}

#[test]
fn the_fixture_with_fields_replaced_never_panics() {
    edited_replies(client, TARGETS, KEYS, recorded_node, not_config);
}
