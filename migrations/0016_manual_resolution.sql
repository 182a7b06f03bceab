-- A manual withdrawal (its outcome unknown to the payout loop) is ended by
-- an admin in two steps: the admin records what they found (release: the
-- destination got nothing; settle: it was paid), and the payout loop
-- applies it while it holds the row, once the chain proves none of the
-- row's attempts can land (Ethereum: no receipt, and its nonce used at a
-- final height). If one of those attempts lands after all, the landing is
-- recorded instead and the request dropped, so an admin's release can
-- never refund a payment that went out.
CREATE TYPE manual_resolution AS ENUM ('release', 'settle');

ALTER TABLE withdrawals
    ADD COLUMN resolution manual_resolution,
    ADD COLUMN resolution_by UUID REFERENCES users (id),
    ADD COLUMN resolution_reason TEXT CHECK (length(resolution_reason) BETWEEN 1 AND 1000),
    ADD CONSTRAINT withdrawals_resolution_recorded CHECK (
        (resolution IS NULL) = (resolution_by IS NULL)
        AND (resolution IS NULL) = (resolution_reason IS NULL)
    ),
    -- Pending while manual; kept on the row it ended.
    ADD CONSTRAINT withdrawals_resolution_of_manual CHECK (
        resolution IS NULL
        OR (kind = 'withdrawal' AND status IN ('manual', 'failed', 'completed'))
    ),
    ADD CONSTRAINT withdrawals_not_self_resolved CHECK (
        resolution_by IS NULL OR (resolution_by <> requested_by AND resolution_by <> user_id)
    );
