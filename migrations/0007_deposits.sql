-- Deposits found by the chain watchers, and where each watcher stands.
--
-- A watcher commits a batch of blocks as one transaction: their hashes, the
-- deposits in them, the ledger entries for those deposits and its cursor.
-- A crash at any instant therefore leaves either all of a batch or none.

-- The last block each deposit watcher indexed. The row lock serializes
-- writers: a second watcher of the same chain blocks instead of racing.
CREATE TABLE chain_cursors (
    chain      TEXT PRIMARY KEY CHECK (chain IN ('bitcoin', 'ethereum', 'solana')),
    height     BIGINT NOT NULL CHECK (height >= 0),
    block_hash TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Recently indexed blocks: the parent-hash check and the walk back to the
-- common ancestor of a reorg read them. Pruned below the reorg window.
CREATE TABLE indexed_blocks (
    chain       TEXT NOT NULL,
    height      BIGINT NOT NULL CHECK (height >= 0),
    block_hash  TEXT NOT NULL,
    -- NULL for the block a new watcher starts after.
    parent_hash TEXT,
    PRIMARY KEY (chain, height)
);

-- pending: in an indexed block, not yet final; credited: final, available
-- to the user; orphaned: its block left the canonical chain (its entries
-- were reversed).
CREATE TYPE deposit_status AS ENUM ('pending', 'credited', 'orphaned');

CREATE TABLE deposits (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain             TEXT NOT NULL CHECK (chain IN ('bitcoin', 'ethereum', 'solana')),
    tx_id             TEXT NOT NULL,
    -- Output index (Bitcoin), log index (ERC-20), instruction index
    -- (Solana), or -1 for a transaction's own native value (Ethereum).
    position          BIGINT NOT NULL CHECK (position >= -1),
    block_height      BIGINT NOT NULL CHECK (block_height >= 0),
    block_hash        TEXT NOT NULL,
    block_time        TIMESTAMPTZ,
    address           TEXT NOT NULL,
    user_id           UUID NOT NULL,
    asset             TEXT NOT NULL REFERENCES assets (code),
    amount            NUMERIC(78, 0) NOT NULL CHECK (amount > 0),
    status            deposit_status NOT NULL,
    pending_entry_id  BIGINT REFERENCES entries (id),
    credit_entry_id   BIGINT REFERENCES entries (id),
    reversal_entry_id BIGINT REFERENCES entries (id),
    seen_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    credited_at       TIMESTAMPTZ,
    orphaned_at       TIMESTAMPTZ,
    CONSTRAINT deposits_credit_recorded CHECK ((status = 'credited') = (credit_entry_id IS NOT NULL AND reversal_entry_id IS NULL)),
    CONSTRAINT deposits_orphan_recorded CHECK ((status = 'orphaned') = (reversal_entry_id IS NOT NULL))
);
-- Invariant: a transfer on the canonical chain is one deposit, credited at
-- most once. Orphaned rows stay as history; the same transfer mined again
-- on the new branch is a new row.
CREATE UNIQUE INDEX deposits_canonical ON deposits (chain, tx_id, position) WHERE status <> 'orphaned';
CREATE INDEX deposits_pending ON deposits (chain, block_height) WHERE status = 'pending';
CREATE INDEX deposits_live_by_height ON deposits (chain, block_height) WHERE status <> 'orphaned';
CREATE INDEX deposits_user ON deposits (user_id, id);
