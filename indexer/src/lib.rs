//! Coffer's PostgreSQL side: connecting with retry, applying the schema in
//! `migrations/`, the double-entry [`ledger`], and the per-chain [`deposits`]
//! watchers (matching, confirmation, reorg unwinding) and the tip followers
//! of chains without one yet, the latest head each watcher saw
//! ([`chain_heads`]), and the users and refresh-token store behind
//! authentication, and the chain-independent [`withdrawals`] pipeline. This crate never speaks gRPC or protobuf.
//!
//! Feature `devnet`: test helpers that create a fresh, migrated database per
//! test on the devnet PostgreSQL and spawn a real Kafka broker.

pub mod chain_heads;
pub mod db;
pub mod deposits;
mod error;
pub mod events;
pub mod ledger;
pub mod metrics;
pub mod payouts;
pub mod users;
pub mod wallets;
pub mod withdrawals;

#[cfg(feature = "devnet")]
pub mod devnet;

pub use error::{Error, Result};
