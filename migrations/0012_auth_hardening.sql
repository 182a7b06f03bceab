-- Ending a user's sessions (password change, disabling) must hold against
-- every concurrent login and refresh.
--
-- session_epoch: bumped by each such change. A login checks, under the user
-- row's lock, that the epoch it verified the password under is still the
-- current one, so a login that raced a password change starts no session.
--
-- sessions_valid_after: Unix seconds; access tokens whose `iat` is earlier
-- are refused. Each change sets it past both the current second and its
-- previous value, so it only grows and every token issued before the change
-- falls below it.
ALTER TABLE users
    ADD COLUMN session_epoch        BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN sessions_valid_after BIGINT NOT NULL DEFAULT 0;

-- Disabling cancels the user's open offers in the same transaction.
CREATE INDEX offers_open_by_maker ON offers (maker_id) WHERE status = 'open';
