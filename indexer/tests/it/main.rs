//! Integration tests on a real PostgreSQL and a real Kafka broker.

mod db;
mod deposits;
mod events;
mod kafka;
mod ledger;
mod support;
mod users;
mod withdrawals;
