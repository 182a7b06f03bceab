-- Everything Coffer sends goes through the withdrawal pipeline: a user's
-- withdrawal, and Coffer's own transfers (sweeps of deposit addresses
-- into the hot wallet, gas top-ups that let a deposit address pay for
-- its token sweep, zero-value fillers of nonces a cancelled withdrawal
-- left reserved). They share the rows, the nonce allocator, the
-- signed-bytes-before-sending rule and the send, replace and confirm
-- machinery; only a withdrawal has a user, a hold and an idempotency key.
--
-- Also here: the network-fee account every landed transaction's gas is
-- booked to, and what the send loop needs to record about an attempt.

CREATE TYPE payout_kind AS ENUM (
    'withdrawal',  -- a user's, held in the ledger
    'sweep',       -- a deposit address's balance into the hot wallet
    'gas_top_up',  -- hot wallet -> deposit address, gas for a token sweep
    'filler'       -- zero-value self-transfer using a nonce nobody else will
);

ALTER TABLE withdrawals
    ADD COLUMN kind payout_kind NOT NULL DEFAULT 'withdrawal',
    -- The deposit key that signs (sweeps); NULL: the chain's hot wallet.
    ADD COLUMN from_key_index BIGINT CHECK (from_key_index >= 0),
    -- Why an approved withdrawal is not moving (the hot wallet cannot
    -- cover it, the fee cap is below the base fee); NULL once it moves.
    ADD COLUMN waiting_reason TEXT CHECK (length(waiting_reason) <= 1000),
    -- Rejections by the node of the current attempt's bytes in a row; the
    -- loop gives up (manual) after a few.
    ADD COLUMN send_rejections INTEGER NOT NULL DEFAULT 0 CHECK (send_rejections >= 0),
    ALTER COLUMN user_id DROP NOT NULL,
    ALTER COLUMN hold_id DROP NOT NULL,
    ALTER COLUMN idempotency_scope DROP NOT NULL,
    ALTER COLUMN idempotency_key DROP NOT NULL,
    ALTER COLUMN request_hash DROP NOT NULL,
    ALTER COLUMN requested_by DROP NOT NULL,
    -- A withdrawal has all of what a user's request brings; Coffer's own
    -- transfers have none of it.
    ADD CONSTRAINT withdrawals_user_fields CHECK (
        CASE WHEN kind = 'withdrawal'
            THEN user_id IS NOT NULL AND hold_id IS NOT NULL AND idempotency_scope IS NOT NULL
                 AND idempotency_key IS NOT NULL AND request_hash IS NOT NULL AND requested_by IS NOT NULL
            ELSE user_id IS NULL AND hold_id IS NULL AND idempotency_scope IS NULL
                 AND idempotency_key IS NULL AND request_hash IS NULL AND requested_by IS NULL
                 AND approved_by IS NULL AND closed_by IS NULL AND fee = 0
        END
    ),
    -- Only sweeps sign with a deposit key; fillers pay nothing.
    ADD CONSTRAINT withdrawals_sweep_key CHECK ((kind = 'sweep') = (from_key_index IS NOT NULL)),
    ADD CONSTRAINT withdrawals_filler_amount CHECK (kind <> 'filler' OR amount = 0),
    DROP CONSTRAINT withdrawals_amount_check,
    ADD CONSTRAINT withdrawals_amount_positive CHECK (amount > 0 OR kind = 'filler');

-- The send loop's working set, by chain.
CREATE INDEX withdrawals_in_flight ON withdrawals (chain, id)
    WHERE status IN ('reserved', 'signed', 'broadcast', 'confirming');

-- A cancelled withdrawal, or one that failed before anything was signed
-- (the chain refuses the transfer), hands its reserved nonce to a filler
-- row, which then carries the reservation; it keeps reserved_at as
-- history without a reservation of its own.
DROP TRIGGER withdrawals_ethereum_nonce_reserved ON withdrawals;
CREATE CONSTRAINT TRIGGER withdrawals_ethereum_nonce_reserved
    AFTER INSERT OR UPDATE OF status, reserved_at ON withdrawals
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.chain = 'ethereum' AND NEW.reserved_at IS NOT NULL AND NEW.status <> 'cancelled'
                       AND NOT (NEW.status = 'failed' AND NEW.current_attempt_id IS NULL))
    EXECUTE FUNCTION withdrawals_check_nonce_reserved();

ALTER TABLE withdrawal_attempts
    -- The chain's height when a node first accepted the attempt: a
    -- replacement is due once it stays unmined for a configured number
    -- of blocks after that.
    ADD COLUMN first_broadcast_height BIGINT CHECK (first_broadcast_height >= 0),
    -- Whether the landed transaction succeeded (Ethereum: receipt status 1).
    ADD COLUMN landed_success BOOLEAN,
    ADD CONSTRAINT withdrawal_attempts_landed_outcome CHECK ((landed_block_hash IS NULL) = (landed_success IS NULL)),
    ADD CONSTRAINT withdrawal_attempts_first_send CHECK ((first_broadcast_height IS NULL) = (broadcast_at IS NULL));

-- Network fees Coffer paid for its transactions (gas), per native asset.
ALTER TYPE account_purpose ADD VALUE 'network_fees';
ALTER TYPE entry_kind ADD VALUE 'network_fee';
