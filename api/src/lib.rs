//! The `coffer` daemon: typed configuration, the gRPC surface (tonic, with
//! health and reflection), the Prometheus endpoint, and the wiring that runs
//! every enabled component until shutdown. Errors become `tonic::Status` only
//! here. This crate never writes SQL; it calls `indexer`'s API.
//!
//! No feature flags.

pub mod app;
pub mod auth;
pub mod config;
pub mod grpc;
pub mod limits;
pub mod metrics;
pub mod telemetry;

pub use app::App;
pub use config::Settings;
