//! Deposit watchers against real nodes, checked through the ledger.

mod bitcoin;
mod ethereum;
mod solana;
mod support;

pub use support::*;
