//! Ledger events: outbox rows commit with their entries, and the relay
//! delivers them to a real Kafka broker.

use std::collections::HashSet;
use std::time::Duration;

use indexer::devnet::{KafkaBroker, TestDb};
use indexer::events::EventRelay;
use indexer::ledger::IdempotencyKey;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use uuid::Uuid;

use crate::support::{fund, ledger_with_assets, transfer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_entry_and_only_those_has_one_event() {
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    fund(&ledger, alice, "BTC", 10).await;
    ledger
        .post(
            &IdempotencyKey::new("ev", "t1"),
            &transfer(alice, bob, "BTC", 4, "t1"),
        )
        .await
        .expect("transfer");
    let refused = ledger
        .post(
            &IdempotencyKey::new("ev", "t2"),
            &transfer(alice, bob, "BTC", 40, "t2"),
        )
        .await;
    assert!(refused.is_err());
    let (entries, events, orphans): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM entries), (SELECT count(*) FROM outbox),
                (SELECT count(*) FROM entries e LEFT JOIN outbox o ON o.entry_id = e.id WHERE o.id IS NULL)",
    )
    .fetch_one(db.pool())
    .await
    .expect("counts");
    assert_eq!((entries, events, orphans), (2, 2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_each_entry_to_kafka_once() {
    let broker = KafkaBroker::spawn().await.expect("start Kafka");
    let db = TestDb::new().await.expect("database");
    let ledger = ledger_with_assets(db.pool()).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    fund(&ledger, alice, "ETH", 100).await;
    for i in 0..5 {
        let reference = format!("ev-{i}");
        ledger
            .post(
                &IdempotencyKey::new("ev", reference.clone()),
                &transfer(alice, bob, "ETH", 1, &reference),
            )
            .await
            .expect("transfer");
    }
    let topic = "coffer.ledger.entries.test";
    let relay =
        EventRelay::new(db.pool().clone(), broker.bootstrap_servers(), topic).expect("relay");
    assert_eq!(relay.publish_batch().await.expect("publish"), 6);
    assert_eq!(relay.publish_batch().await.expect("nothing left"), 0);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "coffer-events-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("a message within 60 s")
            .expect("consume");
        let event: serde_json::Value =
            serde_json::from_slice(message.payload().expect("payload")).expect("json");
        let key = std::str::from_utf8(message.key().expect("key"))
            .expect("utf-8")
            .to_owned();
        assert_eq!(key, event["entry_id"].to_string(), "keyed by entry id");
        seen.push(event);
    }
    let references: HashSet<&str> = seen
        .iter()
        .filter_map(|e| e["reference"].as_str())
        .collect();
    assert_eq!(references.len(), 6, "each entry once");
    let last = &seen[5];
    assert_eq!(last["kind"], "transfer");
    assert_eq!(last["reference"], "ev-4");
    let amounts: Vec<&str> = last["postings"]
        .as_array()
        .expect("postings")
        .iter()
        .filter_map(|p| p["amount"].as_str())
        .collect();
    assert_eq!(amounts.len(), 2);
    assert!(
        amounts.contains(&"-1") && amounts.contains(&"1"),
        "{amounts:?}"
    );
    let ids: Vec<i64> = seen.iter().filter_map(|e| e["entry_id"].as_i64()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "outbox order: {ids:?}");
}
