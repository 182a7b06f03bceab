-- The custody UTXO set: every output paying one of Coffer's Bitcoin
-- scripts (an issued deposit address on BIP84's external chain, or change
-- on its internal chain), and the input that spent it. The Bitcoin watcher
-- writes it in the same transaction as the block that created or spent the
-- output, and a reorg removes what its unwound blocks did, so the set always
-- mirrors the indexed chain. It is a mirror of the chain, not the ledger:
-- rows are deleted when their block is unwound; the ledger keeps history.
CREATE TABLE bitcoin_utxos (
    txid TEXT NOT NULL CHECK (txid ~ '^[0-9a-f]{64}$'),
    vout INTEGER NOT NULL CHECK (vout >= 0),
    value_sat BIGINT NOT NULL CHECK (value_sat > 0),
    address TEXT NOT NULL,
    keychain TEXT NOT NULL CHECK (keychain IN ('external', 'internal')),
    derivation_index BIGINT NOT NULL CHECK (derivation_index BETWEEN 0 AND 2147483647),
    block_height BIGINT NOT NULL CHECK (block_height >= 0),
    block_hash TEXT NOT NULL,
    -- Credited to a user as a deposit; false for change and any other
    -- output of a transaction that spends custody coins (Coffer's own).
    deposit BOOLEAN NOT NULL,
    spent_txid TEXT CHECK (spent_txid ~ '^[0-9a-f]{64}$'),
    spent_vin INTEGER CHECK (spent_vin >= 0),
    spent_height BIGINT,
    spent_block_hash TEXT,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (txid, vout),
    CONSTRAINT bitcoin_utxos_spend_recorded CHECK (
        (spent_txid IS NULL) = (spent_vin IS NULL)
        AND (spent_txid IS NULL) = (spent_height IS NULL)
        AND (spent_txid IS NULL) = (spent_block_hash IS NULL)
    ),
    CONSTRAINT bitcoin_utxos_spent_after_created CHECK (spent_height >= block_height),
    CONSTRAINT bitcoin_utxos_change_is_no_deposit CHECK (keychain = 'external' OR NOT deposit)
);

-- Coin selection reads the unspent set; a reorg reads both heights.
CREATE INDEX bitcoin_utxos_unspent ON bitcoin_utxos (block_height) WHERE spent_txid IS NULL;
CREATE INDEX bitcoin_utxos_by_block ON bitcoin_utxos (block_height);
CREATE INDEX bitcoin_utxos_by_spend ON bitcoin_utxos (spent_height) WHERE spent_txid IS NOT NULL;
-- The watcher watches change addresses past the highest one used.
CREATE INDEX bitcoin_utxos_change_index ON bitcoin_utxos (derivation_index) WHERE keychain = 'internal';
