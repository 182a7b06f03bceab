use std::time::Duration;

use indexer::devnet::KafkaBroker;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn produced_message_is_consumed() {
    let broker = KafkaBroker::spawn().await.expect("start Kafka");
    let topic = "coffer.devnet.smoke";

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("message.timeout.ms", "60000")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let delivery = producer
        .send(
            FutureRecord::to(topic)
                .key("entry-1")
                .payload(r#"{"kind":"smoke"}"#),
            Duration::from_secs(60),
        )
        .await
        .map_err(|(err, _)| err)
        .expect("delivery");
    assert_eq!((delivery.partition, delivery.offset), (0, 0));

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "coffer-devnet-smoke")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("a message within 60 s")
        .expect("consume");
    assert_eq!(message.key(), Some(&b"entry-1"[..]));
    assert_eq!(message.payload(), Some(&br#"{"kind":"smoke"}"#[..]));
    assert_eq!(message.offset(), 0);
}
