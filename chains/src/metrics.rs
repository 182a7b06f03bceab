//! Metrics the node clients record. Names are described once, here.

use metrics::{Unit, describe_histogram};

/// Node round trip per RPC method (a batch counts once, under its main method).
pub const RPC_DURATION: &str = "coffer_chain_rpc_duration_seconds";

pub fn describe() {
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "Node RPC round trips by chain and method; a batched request counts once."
    );
}
