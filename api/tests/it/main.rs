//! Integration tests of the `coffer` daemon: the binary's configuration
//! handling, and a real server on 127.0.0.1:0 against real PostgreSQL and
//! real local nodes.

mod auth;
mod config;
mod daemon;
mod dashboards;
mod deposits;
mod payouts;
mod settlement;
mod support;
mod wallets;
mod withdrawals;
