-- The ledger's commit-time checks and the outbox trigger, per statement
-- instead of per row. A deposit batch posts hundreds of entries in one
-- statement; per-row triggers made that several trigger calls per posting.
-- The rules are unchanged: at commit, every entry written or given postings
-- in the transaction has two or more postings summing to zero per asset,
-- and every entry has its outbox row.

DROP TRIGGER postings_balanced ON postings;
DROP TRIGGER entries_balanced ON entries;
DROP FUNCTION postings_check_balanced();
DROP FUNCTION entries_check_has_postings();
DROP FUNCTION entries_check_balanced(BIGINT);

-- Entries each statement touched, queued for the check at commit. A row
-- never outlives its transaction (the check deletes it), so the table is
-- unlogged: after a crash it is empty either way.
CREATE UNLOGGED TABLE ledger_unchecked (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_ids BIGINT[] NOT NULL
);

CREATE FUNCTION ledger_queue_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'entries' THEN
        INSERT INTO ledger_unchecked (entry_ids) SELECT array_agg(id) FROM inserted HAVING count(*) > 0;
    ELSE
        INSERT INTO ledger_unchecked (entry_ids) SELECT array_agg(DISTINCT entry_id) FROM inserted HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_queue_check AFTER INSERT ON entries
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION ledger_queue_entries();
CREATE TRIGGER postings_queue_check AFTER INSERT ON postings
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION ledger_queue_entries();

-- Runs at commit with every leg visible. It checks the ids the queued row
-- was inserted with (NEW), so deleting queue rows cannot skip a check.
CREATE FUNCTION ledger_check_queued() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
BEGIN
    SELECT e.id, coalesce(sum(p.n), 0) AS legs, min(p.asset) FILTER (WHERE p.total <> 0) AS unbalanced
    INTO bad
    FROM unnest(NEW.entry_ids) AS e(id)
    LEFT JOIN LATERAL (
        SELECT asset, count(*) AS n, sum(amount) AS total FROM postings WHERE entry_id = e.id GROUP BY asset
    ) p ON true
    GROUP BY e.id
    HAVING coalesce(sum(p.n), 0) < 2 OR bool_or(p.total <> 0)
    ORDER BY e.id
    LIMIT 1;
    IF FOUND THEN
        IF bad.legs < 2 THEN
            RAISE EXCEPTION 'ledger entry % has % posting(s); at least two are required', bad.id, bad.legs
                USING ERRCODE = 'check_violation', CONSTRAINT = 'entries_balanced';
        END IF;
        RAISE EXCEPTION 'ledger entry % does not balance in %', bad.id, bad.unbalanced
            USING ERRCODE = 'check_violation', CONSTRAINT = 'entries_balanced';
    END IF;
    DELETE FROM ledger_unchecked WHERE id = NEW.id;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_unchecked_balanced AFTER INSERT ON ledger_unchecked
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_queued();

-- One outbox insert per statement, in entry order as before.
DROP TRIGGER entries_outbox ON entries;
DROP FUNCTION entries_outbox();
CREATE FUNCTION entries_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (entry_id) SELECT id FROM inserted ORDER BY id;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_outbox AFTER INSERT ON entries
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION entries_outbox();
