-- The latest head each chain watcher observed from its node. Ops and the
-- confirmation policy read it; the watcher upserts it when the tip moves.
CREATE TABLE chain_heads (
    chain       TEXT PRIMARY KEY CHECK (chain IN ('bitcoin', 'ethereum', 'solana')),
    height      BIGINT NOT NULL CHECK (height >= 0),
    block_hash  TEXT,
    observed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
