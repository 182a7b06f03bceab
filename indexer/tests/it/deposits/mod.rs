//! Deposit watchers against real nodes, checked through the ledger, and the
//! watch loop's cases (`cases`) on every chain, the scripted one included.

#[macro_use]
mod cases;
mod bitcoin;
mod ethereum;
mod scripted;
mod solana;
mod solana_harness;
mod support;

pub use support::*;
