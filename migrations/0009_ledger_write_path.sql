-- The ledger's write path, tuned for both kinds of writer: single entries
-- posted by many concurrent API calls, and deposit batches of hundreds of
-- entries in one statement. The rules are those of 0002 and 0008.
--
-- 1. Each entry is checked at commit by its own deferred trigger again.
--    The statement-level queue of 0008 made every transaction insert and
--    delete rows of one shared table; under concurrent single-entry posts
--    that churn cost more than the per-row checks it replaced.
-- 2. Balances move once per posting statement instead of once per posting:
--    a batch's legs become one update per account, after its rows are
--    locked in account order (so writers queue rather than deadlock).
--    Overdrafts are judged on the statement's net effect per account; no
--    reader can see a statement half done.
-- 3. Postings carry their account's asset and owner. Writers may name
--    them (the batch writers do, from the accounts they resolved); a
--    statement in which a posting's claim differs from its account is
--    refused. A posting that names no asset is stamped from its account.

DROP TRIGGER entries_queue_check ON entries;
DROP TRIGGER postings_queue_check ON postings;
DROP FUNCTION ledger_queue_entries();
DROP TRIGGER postings_apply ON postings;
DROP FUNCTION postings_apply();

CREATE FUNCTION entries_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    legs BIGINT;
    unbalanced TEXT;
BEGIN
    SELECT coalesce(sum(n), 0), min(asset) FILTER (WHERE total <> 0) INTO legs, unbalanced
    FROM (SELECT asset, count(*) AS n, sum(amount) AS total FROM postings WHERE entry_id = NEW.id GROUP BY asset) per_asset;
    IF legs < 2 THEN
        RAISE EXCEPTION 'ledger entry % has % posting(s); at least two are required', NEW.id, legs
            USING ERRCODE = 'check_violation', CONSTRAINT = 'entries_balanced';
    END IF;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'ledger entry % does not balance in %', NEW.id, unbalanced
            USING ERRCODE = 'check_violation', CONSTRAINT = 'entries_balanced';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION entries_check_balanced();

CREATE FUNCTION postings_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT asset, owner_id INTO NEW.asset, NEW.owner_id FROM accounts WHERE id = NEW.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', NEW.account_id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'postings_account_id_fkey';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER postings_stamp BEFORE INSERT ON postings
    FOR EACH ROW WHEN (NEW.asset IS NULL) EXECUTE FUNCTION postings_stamp();

-- Runs after the statement's foreign-key checks, so every account and
-- entry exists.
CREATE FUNCTION postings_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
    missing BIGINT;
BEGIN
    SELECT i.account_id, i.asset, i.owner_id INTO bad
    FROM inserted i JOIN accounts a ON a.id = i.account_id
    WHERE i.asset <> a.asset OR i.owner_id IS DISTINCT FROM a.owner_id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting to account % names asset % and owner %, which are not the account''s',
            bad.account_id, bad.asset, coalesce(bad.owner_id::text, 'none')
            USING ERRCODE = 'check_violation', CONSTRAINT = 'postings_match_account';
    END IF;

    PERFORM 1 FROM balances
    WHERE account_id IN (SELECT account_id FROM inserted WHERE owner_id IS NOT NULL)
    ORDER BY account_id FOR UPDATE;
    WITH deltas AS (
        SELECT account_id, sum(amount) AS delta FROM inserted WHERE owner_id IS NOT NULL GROUP BY account_id
    ), moved AS (
        UPDATE balances b SET balance = b.balance + d.delta, updated_at = now()
        FROM deltas d WHERE b.account_id = d.account_id
        RETURNING b.account_id
    )
    SELECT min(account_id) INTO missing FROM deltas WHERE account_id NOT IN (SELECT account_id FROM moved);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'user account % has no balance row', missing;
    END IF;

    -- Legs joining an entry this transaction did not create (an earlier
    -- transaction's, or one made in a savepoint, whose row carries the
    -- savepoint's xid) have no deferred entry check of their own here:
    -- they are queued for the set-based one. Entries are append-only, so
    -- an old entry's xmin cannot be made this transaction's.
    INSERT INTO ledger_unchecked (entry_ids)
    SELECT array_agg(DISTINCT i.entry_id)
    FROM inserted i JOIN entries e ON e.id = i.entry_id
    WHERE e.xmin <> pg_current_xact_id()::xid
    HAVING count(*) > 0;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_apply AFTER INSERT ON postings
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION postings_apply();
