-- Wallets and deposit addresses. Each chain hands out HD children from one
-- counter, so every deposit address is a distinct key; an address enters the
-- watched set in the same transaction that issues it, so a deposit to it
-- can never be missed.

CREATE TABLE wallets (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users (id),
    chain      TEXT NOT NULL CHECK (chain IN ('bitcoin', 'ethereum', 'solana')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT wallets_one_per_chain UNIQUE (user_id, chain)
);

CREATE TABLE address_counters (
    chain      TEXT PRIMARY KEY CHECK (chain IN ('bitcoin', 'ethereum', 'solana')),
    next_index BIGINT NOT NULL CHECK (next_index >= 0)
);
INSERT INTO address_counters (chain, next_index) VALUES ('bitcoin', 0), ('ethereum', 0), ('solana', 0);

CREATE TABLE deposit_addresses (
    chain            TEXT NOT NULL,
    address          TEXT NOT NULL,
    wallet_id        UUID NOT NULL REFERENCES wallets (id),
    derivation_index BIGINT NOT NULL CHECK (derivation_index >= 0),
    derivation_path  TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, address),
    CONSTRAINT deposit_addresses_index_unique UNIQUE (chain, derivation_index)
);
CREATE INDEX deposit_addresses_wallet ON deposit_addresses (wallet_id, created_at);

-- What the chain watchers match transfers against.
CREATE TABLE watched_addresses (
    chain    TEXT NOT NULL,
    address  TEXT NOT NULL,
    user_id  UUID NOT NULL REFERENCES users (id),
    added_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, address)
);
