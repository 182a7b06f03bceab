//! Ledger events: the relay that publishes the outbox to Kafka.
//!
//! Entries are immutable, so an event is built from the entry and its
//! postings at publish time. A batch is claimed with `FOR UPDATE SKIP
//! LOCKED` (several relays may run), published, and marked only once Kafka
//! acknowledged every message: delivery is at least once, in outbox order
//! per partition, keyed by entry id so consumers can deduplicate.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::ledger::{AccountPurpose, EntryKind};
use crate::metrics::{EVENTS_PUBLISH_ERRORS, EVENTS_PUBLISHED};
use crate::{Error, Result};

/// One ledger entry as published.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LedgerEvent {
    pub entry_id: i64,
    pub kind: EntryKind,
    pub reference: String,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub postings: Vec<EventPosting>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventPosting {
    pub account_id: i64,
    pub asset: String,
    pub owner_id: Option<Uuid>,
    pub purpose: AccountPurpose,
    /// Signed base units.
    pub amount: String,
}

type EventRow = (
    i64,
    EntryKind,
    String,
    serde_json::Value,
    DateTime<Utc>,
    i64,
    String,
    Option<Uuid>,
    AccountPurpose,
    String,
);

pub struct EventRelay {
    pool: PgPool,
    producer: FutureProducer,
    topic: String,
    batch: i64,
}

impl std::fmt::Debug for EventRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRelay")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl EventRelay {
    pub fn new(pool: PgPool, brokers: &str, topic: &str) -> Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| Error::Events(format!("Kafka producer: {e}")))?;
        Ok(Self {
            pool,
            producer,
            topic: topic.to_owned(),
            batch: 200,
        })
    }

    /// Publishes one batch; returns how many events went out.
    pub async fn publish_batch(&self) -> Result<usize> {
        let mut tx = self.pool.begin().await?;
        let claimed: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, entry_id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.batch)
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let entry_ids: Vec<i64> = claimed.iter().map(|(_, entry)| *entry).collect();
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT e.id, e.kind, e.reference, e.metadata, e.created_at, p.account_id, p.asset, p.owner_id, a.purpose, p.amount::text
             FROM entries e JOIN postings p ON p.entry_id = e.id JOIN accounts a ON a.id = p.account_id
             WHERE e.id = ANY($1) ORDER BY e.id, p.id",
        )
        .bind(&entry_ids)
        .fetch_all(&mut *tx)
        .await?;
        let events = group(rows);
        let payloads: Vec<(String, String)> = events
            .iter()
            .map(|event| {
                serde_json::to_string(event)
                    .map(|json| (event.entry_id.to_string(), json))
                    .map_err(|e| Error::Corrupt(format!("event {}: {e}", event.entry_id)))
            })
            .collect::<Result<_>>()?;
        let deliveries = payloads.iter().map(|(key, payload)| {
            self.producer.send(
                FutureRecord::to(&self.topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
        });
        for outcome in futures::future::join_all(deliveries).await {
            outcome.map_err(|(err, _)| Error::Events(format!("Kafka delivery: {err}")))?;
        }
        let ids: Vec<i64> = claimed.iter().map(|(id, _)| *id).collect();
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!(EVENTS_PUBLISHED).increment(ids.len() as u64);
        Ok(ids.len())
    }

    /// Publishes until `cancel` fires; failures are logged, counted and retried.
    pub async fn run(self, cancel: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let pause = tokio::select! {
                outcome = self.publish_batch() => match outcome {
                    Ok(0) => {
                        failures = 0;
                        Duration::from_millis(200)
                    }
                    Ok(_) => {
                        failures = 0;
                        Duration::ZERO
                    }
                    Err(err) => {
                        failures = failures.saturating_add(1);
                        metrics::counter!(EVENTS_PUBLISH_ERRORS).increment(1);
                        let pause = Duration::from_millis(250u64.saturating_mul(1 << failures.min(7)));
                        tracing::warn!(error = %err, retry_in_ms = pause.as_millis() as u64, "publishing ledger events failed");
                        pause
                    }
                },
                () = cancel.cancelled() => return,
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => return,
            }
        }
    }
}

fn group(rows: Vec<EventRow>) -> Vec<LedgerEvent> {
    let mut events: Vec<LedgerEvent> = Vec::new();
    for (
        entry_id,
        kind,
        reference,
        metadata,
        created_at,
        account_id,
        asset,
        owner_id,
        purpose,
        amount,
    ) in rows
    {
        if events.last().is_none_or(|e| e.entry_id != entry_id) {
            events.push(LedgerEvent {
                entry_id,
                kind,
                reference,
                metadata,
                created_at,
                postings: Vec::new(),
            });
        }
        if let Some(event) = events.last_mut() {
            event.postings.push(EventPosting {
                account_id,
                asset,
                owner_id,
                purpose,
                amount,
            });
        }
    }
    events
}
