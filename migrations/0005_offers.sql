-- P2P trade offers. The maker's sell amount is held from creation; taking,
-- cancelling and expiring each finish the offer and its hold exactly once,
-- behind the offer's row lock.

CREATE TYPE offer_status AS ENUM ('open', 'filled', 'cancelled', 'expired');

CREATE TABLE offers (
    id             UUID PRIMARY KEY,
    maker_id       UUID NOT NULL REFERENCES users (id),
    sell_asset     TEXT NOT NULL REFERENCES assets (code),
    sell_amount    NUMERIC(78, 0) NOT NULL CHECK (sell_amount > 0),
    buy_asset      TEXT NOT NULL REFERENCES assets (code),
    buy_amount     NUMERIC(78, 0) NOT NULL CHECK (buy_amount > 0),
    hold_id        BIGINT NOT NULL REFERENCES holds (id),
    status         offer_status NOT NULL DEFAULT 'open',
    taker_id       UUID REFERENCES users (id),
    trade_entry_id BIGINT REFERENCES entries (id),
    expires_at     TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at    TIMESTAMPTZ,
    CONSTRAINT offers_two_assets CHECK (sell_asset <> buy_asset),
    CONSTRAINT offers_filled_has_taker CHECK ((status = 'filled') = (taker_id IS NOT NULL AND trade_entry_id IS NOT NULL))
);
CREATE INDEX offers_open ON offers (created_at DESC, id DESC) WHERE status = 'open';
CREATE INDEX offers_due ON offers (expires_at) WHERE status = 'open' AND expires_at IS NOT NULL;
