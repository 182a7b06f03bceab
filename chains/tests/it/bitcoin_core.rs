//! `BitcoinClient` against replies in Bitcoin Core's shape
//! (`tests/fixtures/bitcoin-core/`), served by a minimal HTTP server: the
//! devnet runs btcd, these keep compatibility with Core checked.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use bitcoin::hashes::Hash;
use chains::HeadSource;
use chains::bitcoin::{BitcoinAuth, BitcoinClient};
use chains::devnet::http::read_request;

const GENESIS: &str = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206";
const GENESIS_COINBASE: &str = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b";

fn fixture(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/bitcoin-core/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Serves `replies` (method -> fixture name) until the test process ends.
fn serve(replies: &[(&str, &str)]) -> String {
    let replies: HashMap<String, serde_json::Value> = replies
        .iter()
        .map(|(method, name)| ((*method).to_owned(), fixture(name)))
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let replies = replies.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, &replies);
            });
        }
    });
    url
}

fn handle(stream: TcpStream, replies: &HashMap<String, serde_json::Value>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(body) = read_request(&mut reader)? {
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let method = request["method"].as_str().unwrap_or_default();
        let reply = replies
            .get(method)
            .cloned()
            .unwrap_or_else(|| fixture("unauthorized"));
        let status = reply["status"].as_u64().unwrap_or(500);
        let text = match (&reply["body"], &reply["text"]) {
            (serde_json::Value::Null, serde_json::Value::String(text)) => text.clone(),
            (serde_json::Value::Null, _) => String::new(),
            (body, _) => {
                let mut body = body.clone();
                body["id"] = request["id"].clone();
                body.to_string()
            }
        };
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        write!(
            writer,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
        writer.flush()?;
    }
    Ok(())
}

fn client(url: &str) -> BitcoinClient {
    BitcoinClient::new(
        url,
        BitcoinAuth::UserPass {
            user: "coffer".into(),
            password: "secret".into(),
        },
        Duration::from_secs(5),
    )
    .expect("client")
}

#[tokio::test]
async fn every_call_decodes_core_replies() {
    let url = serve(&[
        ("getblockcount", "getblockcount"),
        ("getblockhash", "getblockhash"),
        ("getbestblockhash", "getbestblockhash"),
        ("getblock", "getblock-0"),
        ("getrawmempool", "getrawmempool"),
        ("getrawtransaction", "getrawtransaction"),
        ("sendrawtransaction", "sendrawtransaction"),
    ]);
    let client = client(&url);
    assert_eq!(client.block_count().await.expect("getblockcount"), 0);
    let hash = client.block_hash(0).await.expect("getblockhash");
    assert_eq!(hash.to_string(), GENESIS);
    assert_eq!(
        client.best_block_hash().await.expect("getbestblockhash"),
        hash
    );
    let head = client.head().await.expect("head");
    assert_eq!((head.height, head.hash.as_deref()), (0, Some(GENESIS)));
    let block = client.block(hash).await.expect("getblock");
    assert_eq!(block.block_hash(), hash);
    assert_eq!(block.txdata.len(), 1);
    let blocks = client.blocks(0..=0).await.expect("blocks");
    assert_eq!(blocks, vec![(hash, block.clone())]);
    let mempool = client.raw_mempool().await.expect("getrawmempool");
    assert_eq!(mempool.len(), 1);
    assert_eq!(mempool[0].to_string(), GENESIS_COINBASE);
    let tx = client
        .raw_transaction(mempool[0])
        .await
        .expect("getrawtransaction");
    assert_eq!(tx.compute_txid(), mempool[0]);
    assert_eq!(
        client
            .send_raw_transaction(&tx)
            .await
            .expect("sendrawtransaction"),
        mempool[0]
    );
}

#[tokio::test]
async fn core_errors_and_malformed_replies_are_clear_errors() {
    let url = serve(&[
        ("getblockcount", "getblockcount-wrong-type"),
        ("getblockhash", "getblockhash-out-of-range"),
        ("getblock", "getblock-truncated"),
        ("getrawtransaction", "getrawtransaction-unknown"),
        ("sendrawtransaction", "sendrawtransaction-decode-failed"),
    ]);
    let client = client(&url);
    let err = client
        .block_count()
        .await
        .expect_err("a string is not a height");
    assert_eq!(err.kind(), "malformed", "{err}");
    let err = client.block_hash(5).await.expect_err("out of range");
    assert!(
        err.to_string().contains("-8") && err.to_string().contains("out of range"),
        "{err}"
    );
    let err = client.blocks(5..=5).await.expect_err("past the tip");
    assert_eq!(err.kind(), "inconsistent", "{err}");
    let err = client
        .block(bitcoin::BlockHash::all_zeros())
        .await
        .expect_err("truncated hex");
    assert_eq!(err.kind(), "malformed", "{err}");
    let txid = GENESIS_COINBASE.parse().expect("txid");
    let err = client.raw_transaction(txid).await.expect_err("unknown tx");
    assert!(err.to_string().contains("-5"), "{err}");
    let tx = bitcoin::consensus::encode::deserialize_hex::<bitcoin::Transaction>(
        fixture("getrawtransaction")["body"]["result"]
            .as_str()
            .expect("hex"),
    )
    .expect("tx");
    let err = client
        .send_raw_transaction(&tx)
        .await
        .expect_err("rejected");
    assert!(
        err.to_string().contains("-22") && err.to_string().contains("sendrawtransaction"),
        "{err}"
    );
}

#[tokio::test]
async fn refused_credentials_and_a_full_work_queue_are_transport_errors() {
    let url = serve(&[
        ("getblockcount", "unauthorized"),
        ("getblockhash", "work-queue-exceeded"),
    ]);
    let client = client(&url);
    let err = client.block_count().await.expect_err("401");
    assert_eq!(err.kind(), "transport", "{err}");
    assert!(err.to_string().contains("401"), "{err}");
    let err = client.block_hash(1).await.expect_err("503");
    assert!(err.to_string().contains("503"), "{err}");
}
