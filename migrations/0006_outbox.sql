-- Ledger events. A trigger adds an outbox row for every entry in the
-- entry's own transaction, so an entry and its event always commit together
-- (whichever code path, or SQL, wrote the entry). The relay publishes
-- unpublished rows to Kafka and marks them; delivery is at least once, and
-- consumers deduplicate by entry id.

CREATE TABLE outbox (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id     BIGINT NOT NULL UNIQUE REFERENCES entries (id),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE FUNCTION entries_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (entry_id) VALUES (NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER entries_outbox AFTER INSERT ON entries
    FOR EACH ROW EXECUTE FUNCTION entries_outbox();
