-- The double-entry ledger. Every invariant below is enforced here, in the
-- database, not only by the Rust that writes to it.
--
-- Sign convention: a posting's amount is added to its account's balance.
-- User accounts (liabilities to users) hold non-negative balances; system
-- accounts (custody, external, fees, suspense) may go negative.

CREATE TABLE assets (
    code       TEXT PRIMARY KEY CONSTRAINT assets_code_format CHECK (code ~ '^[A-Z0-9]{2,16}$'),
    chain      TEXT NOT NULL CHECK (chain IN ('bitcoin', 'ethereum', 'solana')),
    decimals   SMALLINT NOT NULL CHECK (decimals BETWEEN 0 AND 38),
    -- ERC-20 contract or SPL mint; NULL for the chain's native asset.
    contract   TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT assets_chain_contract_unique UNIQUE NULLS NOT DISTINCT (chain, contract)
);

-- The chains' native assets; tokens are registered from configuration.
INSERT INTO assets (code, chain, decimals) VALUES ('BTC', 'bitcoin', 8), ('ETH', 'ethereum', 18), ('SOL', 'solana', 9);

CREATE TYPE account_purpose AS ENUM (
    'available', 'pending', 'held',                 -- per user and asset
    'custody', 'external', 'fees', 'suspense'       -- system, per asset
);

CREATE TABLE accounts (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    asset      TEXT NOT NULL REFERENCES assets (code),
    purpose    account_purpose NOT NULL,
    owner_id   UUID,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT accounts_owner_matches_purpose
        CHECK ((owner_id IS NOT NULL) = (purpose IN ('available', 'pending', 'held'))),
    CONSTRAINT accounts_unique UNIQUE NULLS NOT DISTINCT (owner_id, asset, purpose)
);

-- Maintained balances, for user accounts only. System accounts are hot (every
-- deposit touches custody) and keep no row: their balance is the sum of their
-- postings, so concurrent writers never queue on one row lock.
CREATE TABLE balances (
    account_id BIGINT PRIMARY KEY REFERENCES accounts (id),
    owner_id   UUID NOT NULL,
    asset      TEXT NOT NULL,
    purpose    account_purpose NOT NULL,
    balance    NUMERIC(78, 0) NOT NULL DEFAULT 0 CONSTRAINT balances_non_negative CHECK (balance >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX balances_owner ON balances (owner_id, asset);

CREATE TYPE entry_kind AS ENUM (
    'deposit_pending', 'deposit_credit', 'deposit_reversal',
    'withdrawal_hold', 'withdrawal_settle', 'withdrawal_release',
    'transfer', 'trade', 'fee', 'adjustment'
);

CREATE TABLE entries (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       entry_kind NOT NULL,
    reference  TEXT NOT NULL CONSTRAINT entries_reference_unique UNIQUE
                    CHECK (length(reference) BETWEEN 1 AND 200),
    metadata   JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE postings (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id   BIGINT NOT NULL REFERENCES entries (id),
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    -- Copied from the account by the insert trigger, never trusted from the writer.
    asset      TEXT NOT NULL,
    owner_id   UUID,
    amount     NUMERIC(78, 0) NOT NULL CONSTRAINT postings_non_zero CHECK (amount <> 0)
);
CREATE INDEX postings_entry ON postings (entry_id);
-- System-account postings by account (their balance is a sum); user
-- postings are reached through their owner, which saves an index insert per
-- user leg on the hot path.
CREATE INDEX postings_system_account ON postings (account_id, entry_id) WHERE owner_id IS NULL;
CREATE INDEX postings_owner ON postings (owner_id, entry_id) WHERE owner_id IS NOT NULL;

-- Stamps asset and owner from the account and moves the maintained balance.
-- The balances CHECK turns an overdraft into an error that aborts the
-- transaction; the row lock taken here serializes spenders of one account.
CREATE FUNCTION postings_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    account accounts%ROWTYPE;
BEGIN
    -- User accounts, the common case, need one statement: the balance row
    -- carries the account's asset and owner.
    UPDATE balances SET balance = balance + NEW.amount, updated_at = now()
    WHERE account_id = NEW.account_id
    RETURNING asset, owner_id INTO NEW.asset, NEW.owner_id;
    IF FOUND THEN
        RETURN NEW;
    END IF;
    SELECT * INTO account FROM accounts WHERE id = NEW.account_id;
    IF account.owner_id IS NOT NULL THEN
        RAISE EXCEPTION 'user account % has no balance row', NEW.account_id;
    END IF;
    NEW.asset := account.asset;
    NEW.owner_id := NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER postings_apply BEFORE INSERT ON postings
    FOR EACH ROW EXECUTE FUNCTION postings_apply();

-- At commit, every entry touched must have two or more postings summing to
-- zero per asset.
CREATE FUNCTION entries_check_balanced(entry BIGINT) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    legs BIGINT;
    unbalanced TEXT;
BEGIN
    SELECT coalesce(sum(n), 0), min(asset) FILTER (WHERE total <> 0) INTO legs, unbalanced
    FROM (SELECT asset, count(*) AS n, sum(amount) AS total FROM postings WHERE entry_id = entry GROUP BY asset) per_asset;
    IF legs < 2 THEN
        RAISE EXCEPTION 'ledger entry % has % posting(s); at least two are required', entry, legs
            USING ERRCODE = 'check_violation', CONSTRAINT = 'entries_balanced';
    END IF;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'ledger entry % does not balance in %', entry, unbalanced
            USING ERRCODE = 'check_violation', CONSTRAINT = 'entries_balanced';
    END IF;
END $$;

-- A posting's check is skipped when this same transaction also inserted a
-- later posting of the entry: that posting's own deferred check runs with
-- every leg visible. Matching on xmin makes the skip impossible to forge.
CREATE FUNCTION postings_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM postings
        WHERE entry_id = NEW.entry_id AND id > NEW.id AND xmin = pg_current_xact_id()::xid
    ) THEN
        PERFORM entries_check_balanced(NEW.entry_id);
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION postings_check_balanced();

-- An entry with postings is checked through them; this catches one without any.
CREATE FUNCTION entries_check_has_postings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM postings WHERE entry_id = NEW.id) THEN
        RAISE EXCEPTION 'ledger entry % has 0 posting(s); at least two are required', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'entries_balanced';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION entries_check_has_postings();

-- Append-only: corrections are new reversing entries.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- Balances move only through postings.
CREATE FUNCTION balances_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND pg_trigger_depth() > 1 THEN
        RETURN NEW;
    END IF;
    -- A new row starts at zero and describes its own user account exactly:
    -- postings take their asset and owner from it.
    IF TG_OP = 'INSERT' AND NEW.balance = 0 AND EXISTS (
        SELECT 1 FROM accounts
        WHERE id = NEW.account_id AND owner_id = NEW.owner_id AND asset = NEW.asset AND purpose = NEW.purpose
    ) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'balances change only through postings: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER balances_guard BEFORE INSERT OR UPDATE OR DELETE ON balances
    FOR EACH ROW EXECUTE FUNCTION balances_guard();
CREATE TRIGGER balances_no_truncate BEFORE TRUNCATE ON balances
    FOR EACH STATEMENT EXECUTE FUNCTION balances_guard();

-- Holds: available -> held, then settled (held -> destination) or released
-- (held -> available), each exactly once.
CREATE TYPE hold_status AS ENUM ('held', 'settled', 'released');

CREATE TABLE holds (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id       UUID NOT NULL,
    asset          TEXT NOT NULL REFERENCES assets (code),
    amount         NUMERIC(78, 0) NOT NULL CHECK (amount > 0),
    status         hold_status NOT NULL DEFAULT 'held',
    place_entry_id BIGINT NOT NULL REFERENCES entries (id),
    final_entry_id BIGINT REFERENCES entries (id),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    finalized_at   TIMESTAMPTZ,
    CONSTRAINT holds_final_entry CHECK ((status = 'held') = (final_entry_id IS NULL))
);
CREATE INDEX holds_owner ON holds (owner_id, id);

-- Client idempotency keys: the first request with a key stores its hash and
-- response in the same transaction as its effect.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    operation    TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    response     JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Posts an entry under an idempotency key in one round trip (the hot path
-- for deposits and transfers). Outcome `posted` returns the new entry,
-- `replayed` the response stored for the same request, `conflict` means
-- the key was used for a different request. Legs must come in account-id
-- order; the triggers above enforce every ledger rule as for any insert.
CREATE FUNCTION ledger_post(
    p_scope TEXT, p_key TEXT, p_hash BYTEA,
    p_kind entry_kind, p_reference TEXT, p_metadata JSONB,
    p_accounts BIGINT[], p_amounts TEXT[]
) RETURNS TABLE (outcome TEXT, response JSONB) LANGUAGE plpgsql AS $$
DECLARE
    entry_id BIGINT := nextval(pg_get_serial_sequence('entries', 'id'));
    posted JSONB;
    stored_hash BYTEA;
    stored JSONB;
BEGIN
    -- The response is known before the entry exists (its id comes from the
    -- sequence, its timestamp is the transaction's), so the claim stores it
    -- at once and the key row is written once.
    posted := jsonb_build_object('id', entry_id, 'kind', p_kind, 'reference', p_reference, 'created_at', now());
    INSERT INTO idempotency_keys (scope, key, operation, request_hash, response)
    VALUES (p_scope, p_key, 'post', p_hash, posted) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT k.request_hash, k.response INTO stored_hash, stored
        FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
        RETURN QUERY SELECT CASE WHEN stored_hash = p_hash THEN 'replayed' ELSE 'conflict' END, stored;
        RETURN;
    END IF;
    INSERT INTO entries (id, kind, reference, metadata) OVERRIDING SYSTEM VALUE
    VALUES (entry_id, p_kind, p_reference, p_metadata);
    INSERT INTO postings (entry_id, account_id, amount)
    SELECT entry_id, leg.account_id, leg.amount::numeric
    FROM unnest(p_accounts, p_amounts) WITH ORDINALITY AS leg(account_id, amount, position)
    ORDER BY leg.position;
    RETURN QUERY SELECT 'posted', posted;
END $$;
