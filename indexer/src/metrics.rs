//! Metrics the indexer records. Described once here; recorded by name.

use metrics::{Unit, describe_counter, describe_gauge};

pub const CHAIN_TIP_HEIGHT: &str = "coffer_chain_tip_height";
pub const CHAIN_UP: &str = "coffer_chain_up";
pub const CHAIN_RPC_ERRORS: &str = "coffer_chain_rpc_errors_total";
pub const EVENTS_PUBLISHED: &str = "coffer_events_published_total";
pub const EVENTS_PUBLISH_ERRORS: &str = "coffer_events_publish_errors_total";

/// Registers descriptions with the installed recorder.
pub fn describe() {
    describe_gauge!(
        CHAIN_TIP_HEIGHT,
        Unit::Count,
        "Latest block height (Solana: confirmed slot) reported by the chain's node."
    );
    describe_gauge!(
        CHAIN_UP,
        "1 while the last call to the chain's node succeeded, 0 while it fails."
    );
    describe_counter!(
        CHAIN_RPC_ERRORS,
        Unit::Count,
        "Failed calls to a chain node, by kind: transport or malformed."
    );
    describe_counter!(
        EVENTS_PUBLISHED,
        Unit::Count,
        "Ledger events published to Kafka."
    );
    describe_counter!(
        EVENTS_PUBLISH_ERRORS,
        Unit::Count,
        "Failed attempts to publish a batch of ledger events (retried)."
    );
}
