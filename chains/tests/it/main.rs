//! Integration tests against real local nodes spawned by `chains::devnet`.

mod bitcoin;
mod ethereum;
mod solana;
