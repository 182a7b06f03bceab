//! Deposit watchers against real nodes, checked through the ledger, and the
//! watch loop's cases (`indexer::devnet::cases`) on every chain, the
//! scripted one included.

mod bitcoin;
mod ethereum;
mod scripted;
mod solana;

pub use indexer::devnet::deposits::*;
pub use indexer::suite;
