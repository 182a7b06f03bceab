-- Transfers to deposit addresses that the ledger refuses to credit (a
-- zero-value output or token transfer, say). They are kept apart from
-- `deposits`, whose rows always carry ledger entries, so a refused transfer
-- is recorded once, with the reason, and its batch still commits: one bad
-- item never blocks the deposits beside it.
CREATE TABLE refused_deposits (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain        TEXT NOT NULL CHECK (chain IN ('bitcoin', 'ethereum', 'solana')),
    tx_id        TEXT NOT NULL,
    position     BIGINT NOT NULL,
    block_height BIGINT NOT NULL CHECK (block_height >= 0),
    block_hash   TEXT NOT NULL,
    address      TEXT NOT NULL,
    user_id      UUID NOT NULL,
    asset        TEXT NOT NULL,
    amount       NUMERIC(78, 0) NOT NULL CHECK (amount >= 0),
    reason       TEXT NOT NULL,
    seen_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set when a reorg takes the block away; the row stays as history.
    orphaned_at  TIMESTAMPTZ
);
CREATE UNIQUE INDEX refused_deposits_canonical ON refused_deposits (chain, tx_id, position) WHERE orphaned_at IS NULL;
CREATE INDEX refused_deposits_live_by_height ON refused_deposits (chain, block_height) WHERE orphaned_at IS NULL;
