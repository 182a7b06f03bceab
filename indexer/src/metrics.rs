//! Metrics the indexer records. Described once here; recorded by name.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const CHAIN_TIP_HEIGHT: &str = "coffer_chain_tip_height";
pub const CHAIN_INDEXED_HEIGHT: &str = "coffer_chain_indexed_height";
pub const CHAIN_FINALIZED_HEIGHT: &str = "coffer_chain_finalized_height";
pub const REORGS: &str = "coffer_reorgs_total";
pub const REORG_DEPTH: &str = "coffer_reorg_depth_blocks";
pub const WATCHER_HALTED: &str = "coffer_watcher_halted";
pub const DEPOSITS: &str = "coffer_deposits_total";
pub const DEPOSIT_REVERSALS_OF_CREDITS: &str = "coffer_deposit_credit_reversals_total";
pub const DEPOSIT_DETECTION_LATENCY: &str = "coffer_deposit_detection_seconds";
pub const DEPOSITS_UNASSIGNED: &str = "coffer_deposits_unassigned_total";
pub const DEPOSITS_REFUSED: &str = "coffer_deposits_refused_total";
pub const DEPOSIT_OWNER_HANDOVERS: &str = "coffer_deposit_owner_handovers_total";
pub const DEPOSITS_OWN_TRANSFERS_SKIPPED: &str = "coffer_deposits_own_transfers_skipped_total";
pub const CUSTODY_OUTPUTS: &str = "coffer_custody_outputs_total";
pub const ADDRESS_GAP: &str = "coffer_deposit_address_gap";
pub const ADDRESS_GAP_EXCEEDED: &str = "coffer_deposit_address_gap_exceeded";
pub const CHAIN_UP: &str = "coffer_chain_up";
pub const CHAIN_RPC_ERRORS: &str = "coffer_chain_rpc_errors_total";
pub const EVENTS_PUBLISHED: &str = "coffer_events_published_total";
pub const EVENTS_PUBLISH_ERRORS: &str = "coffer_events_publish_errors_total";
pub const WITHDRAWAL_TRANSITIONS: &str = "coffer_withdrawal_transitions_total";
pub const WITHDRAWALS_REFUSED: &str = "coffer_withdrawals_refused_total";
pub const WITHDRAWAL_NONCE_FILLERS: &str = "coffer_withdrawal_nonce_fillers_total";
pub const WITHDRAWAL_REPLACEMENTS: &str = "coffer_withdrawal_replacements_total";
pub const WITHDRAWAL_REORGED: &str = "coffer_withdrawal_reorged_total";
pub const WITHDRAWAL_SENDS: &str = "coffer_withdrawal_sends_total";
pub const WITHDRAWALS_BY_STATUS: &str = "coffer_withdrawals";
pub const WITHDRAWALS_STUCK: &str = "coffer_withdrawals_stuck";
pub const WITHDRAWALS_WAITING: &str = "coffer_withdrawals_waiting";
pub const WITHDRAWAL_TO_BROADCAST: &str = "coffer_withdrawal_request_to_broadcast_seconds";
pub const WITHDRAWAL_TO_COMPLETION: &str = "coffer_withdrawal_request_to_completion_seconds";
pub const HOT_WALLET_BALANCE: &str = "coffer_hot_wallet_balance";
pub const SWEEPS: &str = "coffer_sweeps_total";
pub const PAYOUT_LOOP_ERRORS: &str = "coffer_payout_loop_errors_total";
pub const PAYOUT_STEP_DURATION: &str = "coffer_payout_step_seconds";

/// Registers descriptions with the installed recorder.
pub fn describe() {
    describe_gauge!(
        CHAIN_TIP_HEIGHT,
        Unit::Count,
        "Latest block height (Solana: confirmed slot) reported by the chain's node."
    );
    describe_gauge!(
        CHAIN_INDEXED_HEIGHT,
        Unit::Count,
        "Height (Solana: slot) of the last block the deposit watcher committed."
    );
    describe_gauge!(
        CHAIN_FINALIZED_HEIGHT,
        Unit::Count,
        "Height at or below which deposits are final and credited."
    );
    describe_counter!(REORGS, Unit::Count, "Reorgs the deposit watcher unwound.");
    describe_histogram!(REORG_DEPTH, Unit::Count, "Blocks unwound per reorg.");
    describe_gauge!(
        WATCHER_HALTED,
        "1 when a reorg deeper than max_reorg_depth halted the chain's deposit watcher (alert on it)."
    );
    describe_counter!(
        DEPOSITS,
        Unit::Count,
        "Deposit transitions by status: pending (seen), credited (final), orphaned (reorged away)."
    );
    describe_counter!(
        DEPOSIT_REVERSALS_OF_CREDITS,
        Unit::Count,
        "Credited deposits a reorg took back (each also logged at error level)."
    );
    describe_histogram!(
        DEPOSIT_DETECTION_LATENCY,
        Unit::Seconds,
        "Block timestamp to the deposit's row being committed."
    );
    describe_counter!(
        DEPOSITS_UNASSIGNED,
        Unit::Count,
        "Payments to derived deposit addresses that were never issued (not credited; alert)."
    );
    describe_counter!(
        DEPOSITS_REFUSED,
        Unit::Count,
        "Transfers to deposit addresses the ledger refused (a zero amount, say): recorded with the reason in refused_deposits, never credited, never blocking their batch."
    );
    describe_counter!(
        DEPOSIT_OWNER_HANDOVERS,
        Unit::Count,
        "Token accounts handed to a deposit address rather than paid into it (not credited)."
    );
    describe_counter!(
        DEPOSITS_OWN_TRANSFERS_SKIPPED,
        Unit::Count,
        "Transfers into deposit addresses from Coffer's own addresses (another deposit address, the hot wallet): top-ups and sweeps, never credited."
    );
    describe_counter!(
        CUSTODY_OUTPUTS,
        Unit::Count,
        "Bitcoin custody UTXO set changes: outputs recorded by kind (deposit, change, own) and custody outputs spent (kind=spent)."
    );
    describe_gauge!(
        ADDRESS_GAP,
        Unit::Count,
        "Issued deposit addresses after the last one that received a deposit."
    );
    describe_gauge!(
        ADDRESS_GAP_EXCEEDED,
        "1 when issued addresses run past the gap limit without a deposit (alert)."
    );
    describe_gauge!(
        CHAIN_UP,
        "1 while the last call to the chain's node succeeded, 0 while it fails."
    );
    describe_counter!(
        CHAIN_RPC_ERRORS,
        Unit::Count,
        "Failed watcher steps by kind: transport, malformed, inconsistent (node moved mid-fetch) or database."
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
    describe_counter!(
        WITHDRAWAL_TRANSITIONS,
        Unit::Count,
        "Committed withdrawal transitions by the status entered (requested, approved, reserved, signed, ...)."
    );
    describe_counter!(
        WITHDRAWALS_REFUSED,
        Unit::Count,
        "Withdrawal requests refused, by reason: insufficient_funds, daily_limit or invalid."
    );
    describe_counter!(
        WITHDRAWAL_NONCE_FILLERS,
        Unit::Count,
        "Reserved nonces left by cancelled withdrawals, each to be used by a zero-value self-transfer."
    );
    describe_counter!(
        WITHDRAWAL_REPLACEMENTS,
        Unit::Count,
        "Replacement attempts signed (same nonce, higher fees) for transactions not mined in time, by chain."
    );
    describe_counter!(
        WITHDRAWAL_REORGED,
        Unit::Count,
        "Landed transactions whose block left the canonical chain (sent back to broadcast, still held), by chain."
    );
    describe_counter!(
        WITHDRAWAL_SENDS,
        Unit::Count,
        "Sends of signed bytes to the node by chain and outcome: accepted, already_known, nonce_too_low, underpriced, insufficient_funds, rejected, transport."
    );
    describe_gauge!(
        WITHDRAWALS_BY_STATUS,
        Unit::Count,
        "Rows of the payout pipeline by chain, kind (withdrawal, sweep, gas_top_up, filler) and status, as of the last count."
    );
    describe_gauge!(
        WITHDRAWALS_STUCK,
        Unit::Count,
        "Payouts signed longer than the configured stuck_after_secs ago and not yet mined, by chain."
    );
    describe_gauge!(
        WITHDRAWALS_WAITING,
        Unit::Count,
        "Approved withdrawals waiting for the hot wallet (its balance cannot cover them yet) or for fees under the cap, by chain."
    );
    describe_histogram!(
        WITHDRAWAL_TO_BROADCAST,
        Unit::Seconds,
        "Time from a withdrawal's request to its first accepted send, by chain."
    );
    describe_histogram!(
        WITHDRAWAL_TO_COMPLETION,
        Unit::Seconds,
        "Time from a withdrawal's request to its completion, by chain."
    );
    describe_gauge!(
        HOT_WALLET_BALANCE,
        Unit::Count,
        "The hot wallet's on-chain balance in base units, by chain and asset, at the payout loop's last look."
    );
    describe_counter!(
        SWEEPS,
        Unit::Count,
        "Sweeps of deposit addresses into the hot wallet (and gas top-ups for token sweeps) created, by chain, asset and kind."
    );
    describe_counter!(
        PAYOUT_LOOP_ERRORS,
        Unit::Count,
        "Failed steps of a payout loop (node or database errors; retried next round), by chain and step."
    );
    describe_histogram!(
        PAYOUT_STEP_DURATION,
        Unit::Seconds,
        "Time one payout round spent in each step (look, plan, sign, track, replace, send), by chain and step; a growing plan or send step means a backlog."
    );
}
