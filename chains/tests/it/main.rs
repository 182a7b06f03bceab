//! Integration tests against real local nodes spawned by `chains::devnet`.

mod bitcoin;
mod bitcoin_core;
mod ethereum;
mod ethereum_send;
mod solana;
