-- Withdrawals: the chain-independent pipeline's rows, and Ethereum's nonce
-- reservations.
--
-- Design, in short:
-- * One row per withdrawal, one status column, every transition one
--   transaction that locks the row and checks the status it leaves. The
--   CHECKs below make an impossible combination unwritable (a signed
--   withdrawal without an attempt, an approval by the requester, a
--   rejection that was approved), whatever the code does.
-- * The ledger hold (amount + withdrawal fee, available -> held) is placed
--   in the same transaction that inserts the row, so a row always has its
--   hold and a hold made for a withdrawal always has its row.
-- * Every signed attempt is kept (withdrawal_attempts), its raw bytes and
--   hash committed before any network call: a retry after a crash or a
--   timeout rebroadcasts the same bytes instead of paying again. A
--   replacement is a new attempt under the same reservation; at most one
--   attempt of a withdrawal can land.
-- * The chain resource an attempt consumes is reserved under a unique
--   constraint before signing, in a table per kind of resource, because
--   each chain's double-spend guard is a different key: Ethereum's
--   (chain, from_address, nonce) here; Bitcoin's (txid, vout) of the
--   UTXOs it spends, in its own table when Bitcoin lands. Solana's recent
--   blockhash is not scarce and needs no reservation: it is part of the
--   signed attempt, and valid_until_height records the height after which
--   that attempt can never land (the proof a withdrawal may fail).
-- * A nonce once reserved is never given back: a withdrawal cancelled
--   after reserving keeps its row, marked for a zero-value self-transfer
--   filler, so no gap ever blocks the sender's later nonces.

CREATE TYPE withdrawal_status AS ENUM (
    'requested',   -- held, awaiting approval (or about to be auto-approved)
    'approved',    -- automatically under the asset's threshold, or by an operator
    'reserved',    -- the chain resource (Ethereum: a nonce) is reserved
    'signed',      -- an attempt's raw bytes are committed; nothing sent yet
    'broadcast',   -- sent at least once; replacements share the reservation
    'confirming',  -- an attempt landed; waiting for finality
    'completed',   -- final on chain; hold settled
    'failed',      -- the chain proves no attempt can ever land; hold released
    'manual',      -- outcome unknown; never rebuilt automatically (alert)
    'rejected',    -- refused by an approver; hold released
    'cancelled'    -- withdrawn before signing; hold released
);

-- Lets a withdrawal name its asset and chain together, so the two never
-- disagree.
ALTER TABLE assets ADD CONSTRAINT assets_code_chain_unique UNIQUE (code, chain);

CREATE TABLE withdrawals (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id            UUID NOT NULL REFERENCES users (id),
    asset              TEXT NOT NULL,
    chain              TEXT NOT NULL CHECK (chain IN ('bitcoin', 'ethereum', 'solana')),
    -- What the destination receives, and the withdrawal fee charged on top;
    -- the hold is their sum.
    amount             NUMERIC(78, 0) NOT NULL CHECK (amount > 0),
    fee                NUMERIC(78, 0) NOT NULL CHECK (fee >= 0),
    destination        TEXT NOT NULL CHECK (length(destination) BETWEEN 1 AND 200),
    status             withdrawal_status NOT NULL DEFAULT 'requested',
    hold_id            BIGINT NOT NULL CONSTRAINT withdrawals_hold_unique UNIQUE REFERENCES holds (id),
    -- The caller's key: the same key and request return this row, another
    -- request under the key is refused (request_hash tells them apart).
    idempotency_scope  TEXT NOT NULL CHECK (length(idempotency_scope) BETWEEN 1 AND 200),
    idempotency_key    TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    request_hash       BYTEA NOT NULL CHECK (length(request_hash) = 32),
    -- Who asked (the user, or a service acting for them) and who approved
    -- (NULL with approved_at set: approved automatically).
    requested_by       UUID NOT NULL REFERENCES users (id),
    approved_by        UUID REFERENCES users (id),
    -- Who rejected or cancelled it.
    closed_by          UUID REFERENCES users (id),
    reason             TEXT CHECK (length(reason) <= 1000),
    -- The address that pays, set when the chain resource is reserved.
    from_address       TEXT,
    -- The attempt the pipeline follows now (the latest replacement).
    current_attempt_id BIGINT,
    requested_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_at        TIMESTAMPTZ,
    reserved_at        TIMESTAMPTZ,
    signed_at          TIMESTAMPTZ,
    finished_at        TIMESTAMPTZ,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT withdrawals_asset_on_chain FOREIGN KEY (asset, chain) REFERENCES assets (code, chain),
    CONSTRAINT withdrawals_idempotency_unique UNIQUE (idempotency_scope, idempotency_key),
    -- For the composite keys below: a row of another table names a
    -- withdrawal together with its chain.
    CONSTRAINT withdrawals_id_chain_unique UNIQUE (id, chain),
    CONSTRAINT withdrawals_not_self_approved CHECK (approved_by IS NULL OR (approved_by <> requested_by AND approved_by <> user_id)),
    CONSTRAINT withdrawals_approved_before_reserving CHECK (status IN ('requested', 'rejected', 'cancelled') OR approved_at IS NOT NULL),
    CONSTRAINT withdrawals_approver_needs_approval CHECK (approved_by IS NULL OR approved_at IS NOT NULL),
    CONSTRAINT withdrawals_rejected_unapproved CHECK (status <> 'rejected' OR (approved_at IS NULL AND closed_by IS NOT NULL)),
    CONSTRAINT withdrawals_closer_recorded CHECK (closed_by IS NULL OR status IN ('rejected', 'cancelled')),
    CONSTRAINT withdrawals_reason_recorded CHECK (status NOT IN ('rejected', 'failed', 'manual') OR reason IS NOT NULL),
    CONSTRAINT withdrawals_reserved_has_payer CHECK ((from_address IS NOT NULL) = (reserved_at IS NOT NULL)),
    CONSTRAINT withdrawals_reserved_before_signing CHECK (status NOT IN ('reserved', 'signed', 'broadcast', 'confirming', 'completed') OR reserved_at IS NOT NULL),
    -- A signed withdrawal has an attempt; one before signing has none.
    -- Failed and manual ones may have either (a build can fail before it signs).
    CONSTRAINT withdrawals_signed_has_attempt CHECK (
        status IN ('failed', 'manual')
        OR (current_attempt_id IS NOT NULL) = (status IN ('signed', 'broadcast', 'confirming', 'completed'))
    ),
    CONSTRAINT withdrawals_signed_at_recorded CHECK ((signed_at IS NOT NULL) = (current_attempt_id IS NOT NULL)),
    CONSTRAINT withdrawals_finished_recorded CHECK ((finished_at IS NOT NULL) = (status IN ('completed', 'failed', 'rejected', 'cancelled')))
);
-- Workers claim the oldest approved withdrawal of their chain.
CREATE INDEX withdrawals_claimable ON withdrawals (chain, id) WHERE status = 'approved';
CREATE INDEX withdrawals_by_user ON withdrawals (user_id, id DESC);
CREATE INDEX withdrawals_by_status ON withdrawals (status, id DESC);
-- The daily limit sums a user's recent withdrawals of one asset.
CREATE INDEX withdrawals_daily ON withdrawals (user_id, asset, requested_at);

-- What a reserved nonce is for: the withdrawal's attempts, or (after the
-- withdrawal was cancelled) a zero-value self-transfer that fills it.
CREATE TYPE nonce_reservation_purpose AS ENUM ('withdrawal', 'filler');

-- Ethereum nonces, one row per nonce ever reserved. The unique key is the
-- guard: two reservers computing the same next nonce cannot both commit
-- it. The next nonce is the larger of the node's pending nonce and the
-- highest reserved plus one, computed in the reserving transaction, so no
-- process caches a counter that could drift from the chain (alloy's
-- cached nonce manager never resynchronizes). Rows are never deleted.
CREATE TABLE eth_nonce_reservations (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain         TEXT NOT NULL CHECK (chain = 'ethereum'),
    -- Lowercase hex, so one address has one spelling.
    from_address  TEXT NOT NULL CHECK (from_address ~ '^0x[0-9a-f]{40}$'),
    nonce         BIGINT NOT NULL CHECK (nonce >= 0),
    withdrawal_id BIGINT NOT NULL,
    purpose       nonce_reservation_purpose NOT NULL DEFAULT 'withdrawal',
    -- Why the nonce needs a filler (set with purpose = 'filler').
    filler_reason TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT eth_nonce_reservations_unique UNIQUE (chain, from_address, nonce),
    -- One nonce per withdrawal: every attempt of it shares this one.
    CONSTRAINT eth_nonce_reservations_withdrawal_unique UNIQUE (withdrawal_id),
    CONSTRAINT eth_nonce_reservations_id_withdrawal_unique UNIQUE (id, withdrawal_id),
    CONSTRAINT eth_nonce_reservations_withdrawal_fkey FOREIGN KEY (withdrawal_id, chain) REFERENCES withdrawals (id, chain),
    CONSTRAINT eth_nonce_reservations_filler_reason CHECK ((purpose = 'filler') = (filler_reason IS NOT NULL))
);
CREATE INDEX eth_nonce_reservations_fillers ON eth_nonce_reservations (chain, from_address, nonce) WHERE purpose = 'filler';

-- Every signed attempt of a withdrawal, kept forever: its raw bytes (what
-- is rebroadcast, byte for byte), its hash, what it may pay in network
-- fees, and where it landed. An attempt is written before it is sent.
CREATE TABLE withdrawal_attempts (
    id                       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    withdrawal_id            BIGINT NOT NULL,
    chain                    TEXT NOT NULL,
    tx_hash                  TEXT NOT NULL CHECK (length(tx_hash) BETWEEN 1 AND 200),
    raw_tx                   BYTEA NOT NULL CHECK (length(raw_tx) > 0),
    -- Ethereum: the nonce every attempt of the withdrawal shares.
    nonce_reservation_id     BIGINT,
    -- The most this attempt can pay in network fees, in base units of the
    -- chain's native asset (Ethereum: gas_limit x max_fee_per_gas).
    fee_limit                NUMERIC(78, 0) NOT NULL CHECK (fee_limit >= 0),
    -- Ethereum's EIP-1559 fields, which a replacement must raise.
    max_fee_per_gas          NUMERIC(78, 0),
    max_priority_fee_per_gas NUMERIC(78, 0),
    gas_limit                BIGINT CHECK (gas_limit > 0),
    -- The height after which this attempt can never land (Solana: the
    -- recent blockhash's last valid block height); NULL where none exists.
    valid_until_height       BIGINT CHECK (valid_until_height >= 0),
    -- The network fee it paid, once landed.
    fee_paid                 NUMERIC(78, 0) CHECK (fee_paid >= 0),
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- First accepted by a node; NULL while only signed (or if the process
    -- died between sending and recording: then the chain tells).
    broadcast_at             TIMESTAMPTZ,
    -- The chain's height at the latest send, and how many sends: an
    -- attempt not seen within a configured number of blocks is sent again
    -- (the same bytes) or replaced, and one sent too often goes to manual.
    last_broadcast_height    BIGINT CHECK (last_broadcast_height >= 0),
    broadcast_count          INTEGER NOT NULL DEFAULT 0 CHECK (broadcast_count >= 0),
    landed_block_hash        TEXT,
    landed_block_height      BIGINT CHECK (landed_block_height >= 0),
    CONSTRAINT withdrawal_attempts_hash_unique UNIQUE (chain, tx_hash),
    CONSTRAINT withdrawal_attempts_id_withdrawal_unique UNIQUE (id, withdrawal_id),
    CONSTRAINT withdrawal_attempts_withdrawal_fkey FOREIGN KEY (withdrawal_id, chain) REFERENCES withdrawals (id, chain),
    -- The reservation must be this withdrawal's own.
    CONSTRAINT withdrawal_attempts_nonce_fkey FOREIGN KEY (nonce_reservation_id, withdrawal_id)
        REFERENCES eth_nonce_reservations (id, withdrawal_id),
    CONSTRAINT withdrawal_attempts_ethereum_fields CHECK (
        chain <> 'ethereum'
        OR (nonce_reservation_id IS NOT NULL AND max_fee_per_gas IS NOT NULL
            AND max_priority_fee_per_gas IS NOT NULL AND gas_limit IS NOT NULL
            AND max_priority_fee_per_gas <= max_fee_per_gas)
    ),
    CONSTRAINT withdrawal_attempts_landed_block CHECK ((landed_block_hash IS NULL) = (landed_block_height IS NULL)),
    CONSTRAINT withdrawal_attempts_sends_recorded CHECK ((broadcast_count > 0) = (broadcast_at IS NOT NULL))
);
-- Attempts share one nonce, so at most one of them can ever be in a block.
CREATE UNIQUE INDEX withdrawal_attempts_one_landed ON withdrawal_attempts (withdrawal_id) WHERE landed_block_hash IS NOT NULL;
CREATE INDEX withdrawal_attempts_by_withdrawal ON withdrawal_attempts (withdrawal_id, id);

-- The current attempt is one of the withdrawal's own.
ALTER TABLE withdrawals ADD CONSTRAINT withdrawals_current_attempt_fkey
    FOREIGN KEY (current_attempt_id, id) REFERENCES withdrawal_attempts (id, withdrawal_id);

-- An Ethereum withdrawal that reached reserved (and everything after it,
-- a cancellation included) has its nonce row: checked at commit, so the
-- reservation and the status change may come in either order.
CREATE FUNCTION withdrawals_check_nonce_reserved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM eth_nonce_reservations WHERE withdrawal_id = NEW.id) THEN
        RAISE EXCEPTION 'withdrawal % on ethereum is % without a reserved nonce', NEW.id, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'withdrawals_ethereum_nonce_reserved';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER withdrawals_ethereum_nonce_reserved
    AFTER INSERT OR UPDATE OF status, reserved_at ON withdrawals
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.chain = 'ethereum' AND NEW.reserved_at IS NOT NULL)
    EXECUTE FUNCTION withdrawals_check_nonce_reserved();
