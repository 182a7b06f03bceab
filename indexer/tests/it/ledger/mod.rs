//! The ledger on a real PostgreSQL, a fresh database per test.

mod concurrency;
mod guards;
mod model;
mod operations;
mod settlement;
