-- Entries are written by one statement in Rust (indexer/src/ledger/posting.rs)
-- for API posts, holds, offers and deposit batches alike; a post takes its
-- idempotency claim as a step of that statement, which keeps it one round
-- trip. `ledger_post` (0002_ledger.sql), the post path's own insert and
-- claim, has no caller left: removed rather than left to mislead.
DROP FUNCTION ledger_post(TEXT, TEXT, BYTEA, entry_kind, TEXT, JSONB, BIGINT[], TEXT[]);
