//! Coffer's PostgreSQL side: connecting with retry, applying the schema in
//! `migrations/`, the double-entry [`ledger`], and the per-chain watch loops
//! that follow each node's tip and record it, and the users and
//! refresh-token store behind authentication. Deposit matching and the
//! withdrawal pipeline grow here. This crate never speaks gRPC or protobuf.
//!
//! Feature `devnet`: test helpers that create a fresh, migrated database per
//! test on the devnet PostgreSQL and spawn a real Kafka broker.

pub mod db;
mod error;
pub mod events;
pub mod ledger;
pub mod metrics;
pub mod users;
pub mod wallets;
pub mod watch;

#[cfg(feature = "devnet")]
pub mod devnet;

pub use error::{Error, Result};
