-- A posting's entry and account are checked once per statement, in the one
-- pass over the statement's legs that also verifies their claimed asset and
-- owner and finds legs joining older entries. Before, two foreign-key
-- triggers per posting each ran a lookup that also locked the row; with the
-- second query of 0009's pass, that was about a fifth of the database's time
-- for a deposit batch.
--
-- What the foreign keys also guaranteed is kept: entries are append-only
-- (0002) and accounts now are too, so neither can vanish from under a
-- posting, and a statement naming a missing one is refused with the
-- constraint name the foreign key had.

ALTER TABLE postings
    DROP CONSTRAINT postings_entry_id_fkey,
    DROP CONSTRAINT postings_account_id_fkey;

CREATE TRIGGER accounts_append_only BEFORE UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

CREATE OR REPLACE FUNCTION postings_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    legs RECORD;
    bad RECORD;
    missing BIGINT;
BEGIN
    SELECT min(i.account_id) FILTER (WHERE a.id IS NULL) AS no_account,
           min(i.entry_id) FILTER (WHERE e.id IS NULL) AS no_entry,
           min(i.account_id) FILTER (
               WHERE i.asset <> a.asset OR i.owner_id IS DISTINCT FROM a.owner_id
           ) AS misclaimed,
           -- Legs joining an entry this transaction did not create (an
           -- earlier transaction's, or one made in a savepoint, whose row
           -- carries the savepoint's xid) have no deferred entry check of
           -- their own here: they are queued for the set-based one. Entries
           -- are append-only, so an old entry's xmin cannot be made this
           -- transaction's.
           array_agg(DISTINCT i.entry_id) FILTER (
               WHERE e.xmin <> pg_current_xact_id()::xid
           ) AS older_entries
    INTO legs
    FROM inserted i
    LEFT JOIN accounts a ON a.id = i.account_id
    LEFT JOIN entries e ON e.id = i.entry_id;
    IF legs.no_account IS NOT NULL THEN
        RAISE EXCEPTION 'account % does not exist', legs.no_account
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'postings_account_id_fkey';
    END IF;
    IF legs.no_entry IS NOT NULL THEN
        RAISE EXCEPTION 'entry % does not exist', legs.no_entry
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'postings_entry_id_fkey';
    END IF;
    IF legs.misclaimed IS NOT NULL THEN
        SELECT i.account_id, i.asset, i.owner_id INTO bad
        FROM inserted i JOIN accounts a ON a.id = i.account_id
        WHERE i.account_id = legs.misclaimed
          AND (i.asset <> a.asset OR i.owner_id IS DISTINCT FROM a.owner_id)
        LIMIT 1;
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

    IF legs.older_entries IS NOT NULL THEN
        INSERT INTO ledger_unchecked (entry_ids) VALUES (legs.older_entries);
    END IF;
    RETURN NULL;
END $$;
