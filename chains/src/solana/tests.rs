//! Decoding and the deposit rule on hand-written `getBlock` answers.

use super::*;

const MINT: &str = "Mint111111111111111111111111111111111111111";
const OWNER: &str = "Owner11111111111111111111111111111111111111";
const SYSTEM: &str = "11111111111111111111111111111111";

fn token_balance(index: u32, owner: &str, amount: u64) -> String {
    format!(
        r#"{{"accountIndex":{index},"mint":"{MINT}","owner":"{owner}","programId":"{TOKEN_PROGRAM}",
           "uiTokenAmount":{{"amount":"{amount}","decimals":6,"uiAmountString":"0"}}}}"#
    )
}

/// A block with a SOL transfer, an SPL `transferChecked` into a token
/// account created in the same transaction, and a failed transfer.
fn block_json(err: &str) -> String {
    let created = token_balance(2, OWNER, 2_000_000);
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"blockhash":"B","previousBlockhash":"A","blockTime":1700000000,"parentSlot":9,
        "transactions":[
         {{"meta":{{"err":null,"preBalances":[100,0,1],"postBalances":[90,5,1],"innerInstructions":[],"postTokenBalances":[]}},
           "transaction":{{"signatures":["S1"],"message":{{"accountKeys":[{{"pubkey":"Payer","signer":true}},{{"pubkey":"{OWNER}","signer":false}},{{"pubkey":"{SYSTEM}","signer":false}}],
           "instructions":[{{"program":"system","programId":"{SYSTEM}",
             "parsed":{{"type":"transfer","info":{{"source":"Payer","destination":"{OWNER}","lamports":5}}}}}},
             {{"programId":"MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr","program":"spl-memo","parsed":"hello"}}]}}}}}},
         {{"meta":{{"err":null,"preBalances":[100,50,0,1],"postBalances":[80,50,20,1],"preTokenBalances":[],"postTokenBalances":[{created}]}},
           "transaction":{{"signatures":["S2"],"message":{{"accountKeys":[{{"pubkey":"Payer","signer":true}},{{"pubkey":"PayerAta"}},{{"pubkey":"OwnerAta"}},{{"pubkey":"{OWNER}"}}],
           "instructions":[{{"program":"spl-associated-token-account","programId":"{ASSOCIATED_TOKEN_PROGRAM}","parsed":{{"type":"createIdempotent","info":{{"account":"OwnerAta","wallet":"{OWNER}","mint":"{MINT}"}}}}}},
             {{"program":"spl-token","programId":"{TOKEN_PROGRAM}","parsed":{{"type":"transferChecked",
             "info":{{"source":"PayerAta","destination":"OwnerAta","mint":"{MINT}","tokenAmount":{{"amount":"2000000","decimals":6}}}}}}}}]}}}}}},
         {{"meta":{{"err":{err},"preBalances":[100,0],"postBalances":[95,7]}},
           "transaction":{{"signatures":["S3"],"message":{{"accountKeys":[{{"pubkey":"Payer","signer":true}},{{"pubkey":"{OWNER}"}}],
           "instructions":[{{"program":"system","programId":"{SYSTEM}",
             "parsed":{{"type":"transfer","info":{{"source":"Payer","destination":"{OWNER}","lamports":7}}}}}}]}}}}}}
        ]}}}}"#
    )
}

/// A block holding one successful transaction with these parts.
fn one_tx(keys: &str, balances: (&str, &str), tokens: (&str, &str), instructions: &str) -> String {
    format!(
        r#"{{"result":{{"blockhash":"B","previousBlockhash":"A","blockTime":null,"transactions":[
         {{"meta":{{"err":null,"preBalances":{},"postBalances":{},"preTokenBalances":{},"postTokenBalances":{},"innerInstructions":[]}},
           "transaction":{{"signatures":["S"],"message":{{"accountKeys":{keys},"instructions":{instructions}}}}}}}]}}}}"#,
        balances.0, balances.1, tokens.0, tokens.1
    )
}

fn credits_of(body: &str, mints: &[String]) -> Credits {
    let block = decode_block(10, body.as_bytes()).expect("decodes");
    let wanted = |owner: &str| owner == OWNER;
    let mut found = Credits::default();
    for tx in &block.transactions {
        credits(tx, mints, &wanted, &mut found).expect("readable");
    }
    found
}

fn transfers_of(body: &str, mints: &[String]) -> Vec<(String, u32, Option<String>, u64)> {
    credits_of(body, mints)
        .transfers
        .into_iter()
        .map(|t| (t.signature, t.position, t.mint, t.amount))
        .collect()
}

#[test]
fn successful_sol_and_allow_listed_token_transfers_are_found() {
    let body = block_json(r#"{"InstructionError":[0,{"Custom":1}]}"#);
    assert_eq!(
        transfers_of(&body, &[MINT.to_owned()]),
        vec![
            ("S1".into(), 1, None, 5),
            ("S2".into(), 2, Some(MINT.into()), 2_000_000),
        ],
        "the failed S3 is not a deposit"
    );
    assert_eq!(
        transfers_of(&body, &[]),
        vec![("S1".into(), 1, None, 5)],
        "a mint off the allow-list is not a deposit"
    );
}

#[test]
fn a_token_account_handed_to_a_wanted_owner_credits_nothing() {
    // The attacker's account X moves tokens in and out, then is handed
    // to OWNER with SetAuthority: X ends empty, OWNER received nothing.
    let keys = r#"[{"pubkey":"Attacker","signer":true},{"pubkey":"X"},{"pubkey":"AttackerAta"}]"#;
    let handed = one_tx(
        keys,
        ("[100,2,2]", "[95,2,2]"),
        (
            &format!("[{}]", token_balance(1, "Attacker", 0)),
            &format!("[{}]", token_balance(1, OWNER, 0)),
        ),
        r#"[{"program":"spl-token","programId":"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA","parsed":{"type":"transfer","info":{"source":"AttackerAta","destination":"X","amount":"100"}}},
            {"program":"spl-token","programId":"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA","parsed":{"type":"setAuthority","info":{"account":"X","authorityType":"accountOwner","newAuthority":"Owner11111111111111111111111111111111111111"}}}]"#,
    );
    let found = credits_of(&handed, &[MINT.to_owned()]);
    assert!(found.transfers.is_empty(), "{:?}", found.transfers);
    assert_eq!(found.owner_changes.len(), 1);
    assert_eq!(
        found.owner_changes[0].previous_owner.as_deref(),
        Some("Attacker")
    );

    // Handed over holding tokens: still an account given, not a deposit.
    let full = handed.replace(&token_balance(1, OWNER, 0), &token_balance(1, OWNER, 500));
    let found = credits_of(&full, &[MINT.to_owned()]);
    assert!(found.transfers.is_empty(), "{:?}", found.transfers);

    // Created in the transaction for the attacker, then handed over.
    let created_for_attacker = one_tx(
        keys,
        ("[100,0,2]", "[90,2,2]"),
        ("[]", &format!("[{}]", token_balance(1, OWNER, 300))),
        r#"[{"program":"spl-token","programId":"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA","parsed":{"type":"initializeAccount3","info":{"account":"X","mint":"Mint111111111111111111111111111111111111111","owner":"Attacker"}}}]"#,
    );
    let found = credits_of(&created_for_attacker, &[MINT.to_owned()]);
    assert!(found.transfers.is_empty(), "{:?}", found.transfers);
    assert_eq!(found.owner_changes[0].previous_owner, None);

    // Created already owned by OWNER: what it holds arrived.
    let created_for_owner =
        created_for_attacker.replace(r#""owner":"Attacker""#, &format!(r#""owner":"{OWNER}""#));
    assert_eq!(
        transfers_of(&created_for_owner, &[MINT.to_owned()]),
        vec![("S".into(), 1, Some(MINT.into()), 300)]
    );
}

#[test]
fn a_token_deposit_is_the_net_increase_over_the_transaction() {
    let keys = r#"[{"pubkey":"Payer","signer":true},{"pubkey":"OwnerAta"},{"pubkey":"PayerAta"}]"#;
    let body = one_tx(
        keys,
        ("[100,2,2]", "[95,2,2]"),
        (
            &format!("[{}]", token_balance(1, OWNER, 1_000)),
            &format!("[{}]", token_balance(1, OWNER, 1_250)),
        ),
        "[]",
    );
    assert_eq!(
        transfers_of(&body, &[MINT.to_owned()]),
        vec![("S".into(), 1, Some(MINT.into()), 250)]
    );
    let shrank = body.replace(
        &token_balance(1, OWNER, 1_250),
        &token_balance(1, OWNER, 900),
    );
    assert_eq!(transfers_of(&shrank, &[MINT.to_owned()]), vec![]);
}

#[test]
fn lamports_count_however_they_arrived_but_not_for_a_signer() {
    // No system transfer at all: a closed account's rent went to OWNER.
    let keys = format!(
        r#"[{{"pubkey":"Payer","signer":true}},{{"pubkey":"Closed"}},{{"pubkey":"{OWNER}"}}]"#
    );
    let body = one_tx(
        &keys,
        ("[100,2039280,7]", "[95,0,2039287]"),
        ("[]", "[]"),
        "[]",
    );
    assert_eq!(
        transfers_of(&body, &[]),
        vec![("S".into(), 2, None, 2_039_280)]
    );
    let signed = body.replace(
        &format!(r#"{{"pubkey":"{OWNER}"}}"#),
        &format!(r#"{{"pubkey":"{OWNER}","signer":true}}"#),
    );
    assert_eq!(
        transfers_of(&signed, &[]),
        vec![],
        "Coffer's own transaction"
    );
}

#[test]
fn errors_and_malformed_answers_are_told_apart() {
    let skipped =
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32007,"message":"Slot 10 was skipped"}}"#;
    assert_eq!(
        decode_block(10, skipped.as_bytes()).err().map(|e| e.kind()),
        Some("inconsistent")
    );
    let pruned = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"Block 10 cleaned up, does not exist on node. First available block: 20"}}"#;
    assert_eq!(
        decode_block(10, pruned.as_bytes()).err().map(|e| e.kind()),
        Some("history_unavailable")
    );
    let failing = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Internal error"}}"#;
    assert_eq!(
        decode_block(10, failing.as_bytes()).err().map(|e| e.kind()),
        Some("transport")
    );
    for garbage in ["", "{", r#"{"result":{"blockhash":5}}"#, "<html>502</html>"] {
        let err = decode_block(10, garbage.as_bytes()).err();
        assert_eq!(
            err.as_ref().map(Error::kind),
            Some("malformed"),
            "{garbage}: {err:?}"
        );
    }
}

#[test]
fn unreadable_account_keys_or_balances_are_malformed_not_skipped() {
    let wanted = |owner: &str| owner == OWNER;
    let body = block_json("null").replace(
        r#"[{"pubkey":"Payer","signer":true},{"pubkey":"PayerAta"},{"pubkey":"OwnerAta"},{"pubkey":"Owner11111111111111111111111111111111111111"}]"#,
        r#"[{"pubkey":7}]"#,
    );
    let block = decode_block(10, body.as_bytes()).expect("the block itself decodes");
    let err = credits(
        &block.transactions[1],
        &[MINT.to_owned()],
        &wanted,
        &mut Credits::default(),
    )
    .err();
    assert_eq!(err.as_ref().map(Error::kind), Some("malformed"), "{err:?}");

    let short = block_json("null").replace("[90,5,1]", "[90,5]");
    let block = decode_block(10, short.as_bytes()).expect("the block itself decodes");
    let err = credits(
        &block.transactions[0],
        &[],
        &wanted,
        &mut Credits::default(),
    )
    .err();
    assert_eq!(err.as_ref().map(Error::kind), Some("malformed"), "{err:?}");
}
