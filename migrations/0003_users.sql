-- Users and refresh-token families. Access tokens are stateless JWTs; every
-- request still reads the user row, so disabling a user or changing a role
-- takes effect on the next request.

CREATE TYPE user_role AS ENUM ('user', 'service', 'operator', 'admin');

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    -- Normalized (trimmed, lowercased) before it gets here.
    email         TEXT NOT NULL CONSTRAINT users_email_unique UNIQUE CHECK (email = lower(email) AND email LIKE '%_@_%'),
    password_hash TEXT NOT NULL,
    role          user_role NOT NULL DEFAULT 'user',
    disabled_at   TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per refresh token ever issued; only its SHA-256 is stored. A
-- family is one login: each refresh rotates to a new token in the same
-- family, which keeps the login's absolute expiry. Presenting a token that
-- was already rotated revokes its whole family (RFC 9700 reuse detection).
CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY CHECK (length(token_hash) = 32),
    family_id  UUID NOT NULL,
    user_id    UUID NOT NULL REFERENCES users (id),
    issued_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    rotated_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id) WHERE revoked_at IS NULL;
