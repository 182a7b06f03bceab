-- The live schema: what every migration in this folder leaves, as
-- `pg_dump --schema-only` prints it (normalized). Generated, never
-- edited: `COFFER_WRITE_SCHEMA=1 cargo test -p indexer --all-features
-- --test it -- db::the_schema` rewrites it, and that test fails while
-- it differs from the migrations. Read it to see a table, trigger or
-- function as it is now; change it only with a new migration.

CREATE TYPE public.account_purpose AS ENUM (
    'available',
    'pending',
    'held',
    'custody',
    'external',
    'fees',
    'suspense',
    'network_fees'
);

CREATE TYPE public.deposit_status AS ENUM (
    'pending',
    'credited',
    'orphaned'
);

CREATE TYPE public.entry_kind AS ENUM (
    'deposit_pending',
    'deposit_credit',
    'deposit_reversal',
    'withdrawal_hold',
    'withdrawal_settle',
    'withdrawal_release',
    'transfer',
    'trade',
    'fee',
    'adjustment',
    'network_fee'
);

CREATE TYPE public.hold_status AS ENUM (
    'held',
    'settled',
    'released'
);

CREATE TYPE public.manual_resolution AS ENUM (
    'release',
    'settle'
);

CREATE TYPE public.nonce_reservation_purpose AS ENUM (
    'withdrawal',
    'filler'
);

CREATE TYPE public.offer_status AS ENUM (
    'open',
    'filled',
    'cancelled',
    'expired'
);

CREATE TYPE public.payout_kind AS ENUM (
    'withdrawal',
    'sweep',
    'gas_top_up',
    'filler'
);

CREATE TYPE public.user_role AS ENUM (
    'user',
    'service',
    'operator',
    'admin'
);

CREATE TYPE public.withdrawal_status AS ENUM (
    'requested',
    'approved',
    'reserved',
    'signed',
    'broadcast',
    'confirming',
    'completed',
    'failed',
    'manual',
    'rejected',
    'cancelled'
);

CREATE FUNCTION public.balances_guard() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION public.entries_check_balanced() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION public.entries_outbox() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO outbox (entry_id) SELECT id FROM inserted ORDER BY id;
    RETURN NULL;
END $$;

CREATE FUNCTION public.ledger_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE FUNCTION public.ledger_check_queued() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION public.postings_apply() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION public.postings_stamp() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    SELECT asset, owner_id INTO NEW.asset, NEW.owner_id FROM accounts WHERE id = NEW.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', NEW.account_id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'postings_account_id_fkey';
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION public.withdrawals_check_nonce_reserved() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM eth_nonce_reservations WHERE withdrawal_id = NEW.id) THEN
        RAISE EXCEPTION 'withdrawal % on ethereum is % without a reserved nonce', NEW.id, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'withdrawals_ethereum_nonce_reserved';
    END IF;
    RETURN NULL;
END
$$;

CREATE TABLE public.accounts (
    id bigint NOT NULL,
    asset text NOT NULL,
    purpose public.account_purpose NOT NULL,
    owner_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT accounts_owner_matches_purpose CHECK (((owner_id IS NOT NULL) = (purpose = ANY (ARRAY['available'::public.account_purpose, 'pending'::public.account_purpose, 'held'::public.account_purpose]))))
);

ALTER TABLE public.accounts ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.accounts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.address_counters (
    chain text NOT NULL,
    next_index bigint NOT NULL,
    CONSTRAINT address_counters_chain_check CHECK ((chain = ANY (ARRAY['bitcoin'::text, 'ethereum'::text, 'solana'::text]))),
    CONSTRAINT address_counters_next_index_check CHECK ((next_index >= 0))
);

CREATE TABLE public.assets (
    code text NOT NULL,
    chain text NOT NULL,
    decimals smallint NOT NULL,
    contract text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT assets_chain_check CHECK ((chain = ANY (ARRAY['bitcoin'::text, 'ethereum'::text, 'solana'::text]))),
    CONSTRAINT assets_code_format CHECK ((code ~ '^[A-Z0-9]{2,16}$'::text)),
    CONSTRAINT assets_decimals_check CHECK (((decimals >= 0) AND (decimals <= 38)))
);

CREATE TABLE public.balances (
    account_id bigint NOT NULL,
    owner_id uuid NOT NULL,
    asset text NOT NULL,
    purpose public.account_purpose NOT NULL,
    balance numeric(78,0) DEFAULT 0 NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT balances_non_negative CHECK ((balance >= (0)::numeric))
);

CREATE TABLE public.bitcoin_utxos (
    txid text NOT NULL,
    vout integer NOT NULL,
    value_sat bigint NOT NULL,
    address text NOT NULL,
    keychain text NOT NULL,
    derivation_index bigint NOT NULL,
    block_height bigint NOT NULL,
    block_hash text NOT NULL,
    deposit boolean NOT NULL,
    spent_txid text,
    spent_vin integer,
    spent_height bigint,
    spent_block_hash text,
    recorded_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT bitcoin_utxos_block_height_check CHECK ((block_height >= 0)),
    CONSTRAINT bitcoin_utxos_change_is_no_deposit CHECK (((keychain = 'external'::text) OR (NOT deposit))),
    CONSTRAINT bitcoin_utxos_derivation_index_check CHECK (((derivation_index >= 0) AND (derivation_index <= 2147483647))),
    CONSTRAINT bitcoin_utxos_keychain_check CHECK ((keychain = ANY (ARRAY['external'::text, 'internal'::text]))),
    CONSTRAINT bitcoin_utxos_spend_recorded CHECK ((((spent_txid IS NULL) = (spent_vin IS NULL)) AND ((spent_txid IS NULL) = (spent_height IS NULL)) AND ((spent_txid IS NULL) = (spent_block_hash IS NULL)))),
    CONSTRAINT bitcoin_utxos_spent_after_created CHECK ((spent_height >= block_height)),
    CONSTRAINT bitcoin_utxos_spent_txid_check CHECK ((spent_txid ~ '^[0-9a-f]{64}$'::text)),
    CONSTRAINT bitcoin_utxos_spent_vin_check CHECK ((spent_vin >= 0)),
    CONSTRAINT bitcoin_utxos_txid_check CHECK ((txid ~ '^[0-9a-f]{64}$'::text)),
    CONSTRAINT bitcoin_utxos_value_sat_check CHECK ((value_sat > 0)),
    CONSTRAINT bitcoin_utxos_vout_check CHECK ((vout >= 0))
);

CREATE TABLE public.chain_cursors (
    chain text NOT NULL,
    height bigint NOT NULL,
    block_hash text NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT chain_cursors_chain_check CHECK ((chain = ANY (ARRAY['bitcoin'::text, 'ethereum'::text, 'solana'::text]))),
    CONSTRAINT chain_cursors_height_check CHECK ((height >= 0))
);

CREATE TABLE public.chain_heads (
    chain text NOT NULL,
    height bigint NOT NULL,
    block_hash text,
    observed_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT chain_heads_chain_check CHECK ((chain = ANY (ARRAY['bitcoin'::text, 'ethereum'::text, 'solana'::text]))),
    CONSTRAINT chain_heads_height_check CHECK ((height >= 0))
);

CREATE TABLE public.deposit_addresses (
    chain text NOT NULL,
    address text NOT NULL,
    wallet_id uuid NOT NULL,
    derivation_index bigint NOT NULL,
    derivation_path text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT deposit_addresses_derivation_index_check CHECK ((derivation_index >= 0))
);

CREATE TABLE public.deposits (
    id bigint NOT NULL,
    chain text NOT NULL,
    tx_id text NOT NULL,
    "position" bigint NOT NULL,
    block_height bigint NOT NULL,
    block_hash text NOT NULL,
    block_time timestamp with time zone,
    address text NOT NULL,
    user_id uuid NOT NULL,
    asset text NOT NULL,
    amount numeric(78,0) NOT NULL,
    status public.deposit_status NOT NULL,
    pending_entry_id bigint,
    credit_entry_id bigint,
    reversal_entry_id bigint,
    seen_at timestamp with time zone DEFAULT now() NOT NULL,
    credited_at timestamp with time zone,
    orphaned_at timestamp with time zone,
    CONSTRAINT deposits_amount_check CHECK ((amount > (0)::numeric)),
    CONSTRAINT deposits_block_height_check CHECK ((block_height >= 0)),
    CONSTRAINT deposits_chain_check CHECK ((chain = ANY (ARRAY['bitcoin'::text, 'ethereum'::text, 'solana'::text]))),
    CONSTRAINT deposits_credit_recorded CHECK (((status = 'credited'::public.deposit_status) = ((credit_entry_id IS NOT NULL) AND (reversal_entry_id IS NULL)))),
    CONSTRAINT deposits_orphan_recorded CHECK (((status = 'orphaned'::public.deposit_status) = (reversal_entry_id IS NOT NULL))),
    CONSTRAINT deposits_position_check CHECK (("position" >= '-1'::integer))
);

ALTER TABLE public.deposits ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.deposits_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.entries (
    id bigint NOT NULL,
    kind public.entry_kind NOT NULL,
    reference text NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT entries_reference_check CHECK (((length(reference) >= 1) AND (length(reference) <= 200)))
);

ALTER TABLE public.entries ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.entries_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.eth_nonce_reservations (
    id bigint NOT NULL,
    chain text NOT NULL,
    from_address text NOT NULL,
    nonce bigint NOT NULL,
    withdrawal_id bigint NOT NULL,
    purpose public.nonce_reservation_purpose DEFAULT 'withdrawal'::public.nonce_reservation_purpose NOT NULL,
    filler_reason text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT eth_nonce_reservations_chain_check CHECK ((chain = 'ethereum'::text)),
    CONSTRAINT eth_nonce_reservations_filler_reason CHECK (((purpose = 'filler'::public.nonce_reservation_purpose) = (filler_reason IS NOT NULL))),
    CONSTRAINT eth_nonce_reservations_from_address_check CHECK ((from_address ~ '^0x[0-9a-f]{40}$'::text)),
    CONSTRAINT eth_nonce_reservations_nonce_check CHECK ((nonce >= 0))
);

ALTER TABLE public.eth_nonce_reservations ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.eth_nonce_reservations_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.holds (
    id bigint NOT NULL,
    owner_id uuid NOT NULL,
    asset text NOT NULL,
    amount numeric(78,0) NOT NULL,
    status public.hold_status DEFAULT 'held'::public.hold_status NOT NULL,
    place_entry_id bigint NOT NULL,
    final_entry_id bigint,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    finalized_at timestamp with time zone,
    CONSTRAINT holds_amount_check CHECK ((amount > (0)::numeric)),
    CONSTRAINT holds_final_entry CHECK (((status = 'held'::public.hold_status) = (final_entry_id IS NULL)))
);

ALTER TABLE public.holds ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.holds_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.idempotency_keys (
    scope text NOT NULL,
    key text NOT NULL,
    operation text NOT NULL,
    request_hash bytea NOT NULL,
    response jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT idempotency_keys_key_check CHECK (((length(key) >= 1) AND (length(key) <= 200)))
);

CREATE TABLE public.indexed_blocks (
    chain text NOT NULL,
    height bigint NOT NULL,
    block_hash text NOT NULL,
    parent_hash text,
    CONSTRAINT indexed_blocks_height_check CHECK ((height >= 0))
);

CREATE UNLOGGED TABLE public.ledger_unchecked (
    id bigint NOT NULL,
    entry_ids bigint[] NOT NULL
);

ALTER TABLE public.ledger_unchecked ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.ledger_unchecked_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.offers (
    id uuid NOT NULL,
    maker_id uuid NOT NULL,
    sell_asset text NOT NULL,
    sell_amount numeric(78,0) NOT NULL,
    buy_asset text NOT NULL,
    buy_amount numeric(78,0) NOT NULL,
    hold_id bigint NOT NULL,
    status public.offer_status DEFAULT 'open'::public.offer_status NOT NULL,
    taker_id uuid,
    trade_entry_id bigint,
    expires_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    CONSTRAINT offers_buy_amount_check CHECK ((buy_amount > (0)::numeric)),
    CONSTRAINT offers_filled_has_taker CHECK (((status = 'filled'::public.offer_status) = ((taker_id IS NOT NULL) AND (trade_entry_id IS NOT NULL)))),
    CONSTRAINT offers_sell_amount_check CHECK ((sell_amount > (0)::numeric)),
    CONSTRAINT offers_two_assets CHECK ((sell_asset <> buy_asset))
);

CREATE TABLE public.outbox (
    id bigint NOT NULL,
    entry_id bigint NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    published_at timestamp with time zone
);

ALTER TABLE public.outbox ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.outbox_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.postings (
    id bigint NOT NULL,
    entry_id bigint NOT NULL,
    account_id bigint NOT NULL,
    asset text NOT NULL,
    owner_id uuid,
    amount numeric(78,0) NOT NULL,
    CONSTRAINT postings_non_zero CHECK ((amount <> (0)::numeric))
);

ALTER TABLE public.postings ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.postings_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.refresh_tokens (
    token_hash bytea NOT NULL,
    family_id uuid NOT NULL,
    user_id uuid NOT NULL,
    issued_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    rotated_at timestamp with time zone,
    revoked_at timestamp with time zone,
    CONSTRAINT refresh_tokens_token_hash_check CHECK ((length(token_hash) = 32))
);

CREATE TABLE public.refused_deposits (
    id bigint NOT NULL,
    chain text NOT NULL,
    tx_id text NOT NULL,
    "position" bigint NOT NULL,
    block_height bigint NOT NULL,
    block_hash text NOT NULL,
    address text NOT NULL,
    user_id uuid NOT NULL,
    asset text NOT NULL,
    amount numeric(78,0) NOT NULL,
    reason text NOT NULL,
    seen_at timestamp with time zone DEFAULT now() NOT NULL,
    orphaned_at timestamp with time zone,
    CONSTRAINT refused_deposits_amount_check CHECK ((amount >= (0)::numeric)),
    CONSTRAINT refused_deposits_block_height_check CHECK ((block_height >= 0)),
    CONSTRAINT refused_deposits_chain_check CHECK ((chain = ANY (ARRAY['bitcoin'::text, 'ethereum'::text, 'solana'::text])))
);

ALTER TABLE public.refused_deposits ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.refused_deposits_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.users (
    id uuid NOT NULL,
    email text NOT NULL,
    password_hash text NOT NULL,
    role public.user_role DEFAULT 'user'::public.user_role NOT NULL,
    disabled_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    session_epoch bigint DEFAULT 0 NOT NULL,
    sessions_valid_after bigint DEFAULT 0 NOT NULL,
    CONSTRAINT users_email_check CHECK (((email = lower(email)) AND (email ~~ '%_@_%'::text)))
);

CREATE TABLE public.wallets (
    id uuid NOT NULL,
    user_id uuid NOT NULL,
    chain text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT wallets_chain_check CHECK ((chain = ANY (ARRAY['bitcoin'::text, 'ethereum'::text, 'solana'::text])))
);

CREATE TABLE public.watched_addresses (
    chain text NOT NULL,
    address text NOT NULL,
    user_id uuid NOT NULL,
    added_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE public.withdrawal_attempts (
    id bigint NOT NULL,
    withdrawal_id bigint NOT NULL,
    chain text NOT NULL,
    tx_hash text NOT NULL,
    raw_tx bytea NOT NULL,
    nonce_reservation_id bigint,
    fee_limit numeric(78,0) NOT NULL,
    max_fee_per_gas numeric(78,0),
    max_priority_fee_per_gas numeric(78,0),
    gas_limit bigint,
    valid_until_height bigint,
    fee_paid numeric(78,0),
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    broadcast_at timestamp with time zone,
    last_broadcast_height bigint,
    broadcast_count integer DEFAULT 0 NOT NULL,
    landed_block_hash text,
    landed_block_height bigint,
    first_broadcast_height bigint,
    landed_success boolean,
    CONSTRAINT withdrawal_attempts_broadcast_count_check CHECK ((broadcast_count >= 0)),
    CONSTRAINT withdrawal_attempts_ethereum_fields CHECK (((chain <> 'ethereum'::text) OR ((nonce_reservation_id IS NOT NULL) AND (max_fee_per_gas IS NOT NULL) AND (max_priority_fee_per_gas IS NOT NULL) AND (gas_limit IS NOT NULL) AND (max_priority_fee_per_gas <= max_fee_per_gas)))),
    CONSTRAINT withdrawal_attempts_fee_limit_check CHECK ((fee_limit >= (0)::numeric)),
    CONSTRAINT withdrawal_attempts_fee_paid_check CHECK ((fee_paid >= (0)::numeric)),
    CONSTRAINT withdrawal_attempts_first_broadcast_height_check CHECK ((first_broadcast_height >= 0)),
    CONSTRAINT withdrawal_attempts_first_send CHECK (((first_broadcast_height IS NULL) = (broadcast_at IS NULL))),
    CONSTRAINT withdrawal_attempts_gas_limit_check CHECK ((gas_limit > 0)),
    CONSTRAINT withdrawal_attempts_landed_block CHECK (((landed_block_hash IS NULL) = (landed_block_height IS NULL))),
    CONSTRAINT withdrawal_attempts_landed_block_height_check CHECK ((landed_block_height >= 0)),
    CONSTRAINT withdrawal_attempts_landed_outcome CHECK (((landed_block_hash IS NULL) = (landed_success IS NULL))),
    CONSTRAINT withdrawal_attempts_last_broadcast_height_check CHECK ((last_broadcast_height >= 0)),
    CONSTRAINT withdrawal_attempts_raw_tx_check CHECK ((length(raw_tx) > 0)),
    CONSTRAINT withdrawal_attempts_sends_recorded CHECK (((broadcast_count > 0) = (broadcast_at IS NOT NULL))),
    CONSTRAINT withdrawal_attempts_tx_hash_check CHECK (((length(tx_hash) >= 1) AND (length(tx_hash) <= 200))),
    CONSTRAINT withdrawal_attempts_valid_until_height_check CHECK ((valid_until_height >= 0))
);

ALTER TABLE public.withdrawal_attempts ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.withdrawal_attempts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE public.withdrawals (
    id bigint NOT NULL,
    user_id uuid,
    asset text NOT NULL,
    chain text NOT NULL,
    amount numeric(78,0) NOT NULL,
    fee numeric(78,0) NOT NULL,
    destination text NOT NULL,
    status public.withdrawal_status DEFAULT 'requested'::public.withdrawal_status NOT NULL,
    hold_id bigint,
    idempotency_scope text,
    idempotency_key text,
    request_hash bytea,
    requested_by uuid,
    approved_by uuid,
    closed_by uuid,
    reason text,
    from_address text,
    current_attempt_id bigint,
    requested_at timestamp with time zone DEFAULT now() NOT NULL,
    approved_at timestamp with time zone,
    reserved_at timestamp with time zone,
    signed_at timestamp with time zone,
    finished_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    kind public.payout_kind DEFAULT 'withdrawal'::public.payout_kind NOT NULL,
    from_key_index bigint,
    waiting_reason text,
    send_rejections integer DEFAULT 0 NOT NULL,
    resolution public.manual_resolution,
    resolution_by uuid,
    resolution_reason text,
    CONSTRAINT withdrawals_amount_positive CHECK (((amount > (0)::numeric) OR (kind = 'filler'::public.payout_kind))),
    CONSTRAINT withdrawals_approved_before_reserving CHECK (((status = ANY (ARRAY['requested'::public.withdrawal_status, 'rejected'::public.withdrawal_status, 'cancelled'::public.withdrawal_status])) OR (approved_at IS NOT NULL))),
    CONSTRAINT withdrawals_approver_needs_approval CHECK (((approved_by IS NULL) OR (approved_at IS NOT NULL))),
    CONSTRAINT withdrawals_chain_check CHECK ((chain = ANY (ARRAY['bitcoin'::text, 'ethereum'::text, 'solana'::text]))),
    CONSTRAINT withdrawals_closer_recorded CHECK (((closed_by IS NULL) OR (status = ANY (ARRAY['rejected'::public.withdrawal_status, 'cancelled'::public.withdrawal_status])))),
    CONSTRAINT withdrawals_destination_check CHECK (((length(destination) >= 1) AND (length(destination) <= 200))),
    CONSTRAINT withdrawals_fee_check CHECK ((fee >= (0)::numeric)),
    CONSTRAINT withdrawals_filler_amount CHECK (((kind <> 'filler'::public.payout_kind) OR (amount = (0)::numeric))),
    CONSTRAINT withdrawals_finished_recorded CHECK (((finished_at IS NOT NULL) = (status = ANY (ARRAY['completed'::public.withdrawal_status, 'failed'::public.withdrawal_status, 'rejected'::public.withdrawal_status, 'cancelled'::public.withdrawal_status])))),
    CONSTRAINT withdrawals_from_key_index_check CHECK ((from_key_index >= 0)),
    CONSTRAINT withdrawals_idempotency_key_check CHECK (((length(idempotency_key) >= 1) AND (length(idempotency_key) <= 200))),
    CONSTRAINT withdrawals_idempotency_scope_check CHECK (((length(idempotency_scope) >= 1) AND (length(idempotency_scope) <= 200))),
    CONSTRAINT withdrawals_not_self_approved CHECK (((approved_by IS NULL) OR ((approved_by <> requested_by) AND (approved_by <> user_id)))),
    CONSTRAINT withdrawals_not_self_resolved CHECK (((resolution_by IS NULL) OR ((resolution_by <> requested_by) AND (resolution_by <> user_id)))),
    CONSTRAINT withdrawals_reason_check CHECK ((length(reason) <= 1000)),
    CONSTRAINT withdrawals_reason_recorded CHECK (((status <> ALL (ARRAY['rejected'::public.withdrawal_status, 'failed'::public.withdrawal_status, 'manual'::public.withdrawal_status])) OR (reason IS NOT NULL))),
    CONSTRAINT withdrawals_rejected_unapproved CHECK (((status <> 'rejected'::public.withdrawal_status) OR ((approved_at IS NULL) AND (closed_by IS NOT NULL)))),
    CONSTRAINT withdrawals_request_hash_check CHECK ((length(request_hash) = 32)),
    CONSTRAINT withdrawals_reserved_before_signing CHECK (((status <> ALL (ARRAY['reserved'::public.withdrawal_status, 'signed'::public.withdrawal_status, 'broadcast'::public.withdrawal_status, 'confirming'::public.withdrawal_status, 'completed'::public.withdrawal_status])) OR (reserved_at IS NOT NULL))),
    CONSTRAINT withdrawals_reserved_has_payer CHECK (((from_address IS NOT NULL) = (reserved_at IS NOT NULL))),
    CONSTRAINT withdrawals_resolution_of_manual CHECK (((resolution IS NULL) OR ((kind = 'withdrawal'::public.payout_kind) AND (status = ANY (ARRAY['manual'::public.withdrawal_status, 'failed'::public.withdrawal_status, 'completed'::public.withdrawal_status]))))),
    CONSTRAINT withdrawals_resolution_reason_check CHECK (((length(resolution_reason) >= 1) AND (length(resolution_reason) <= 1000))),
    CONSTRAINT withdrawals_resolution_recorded CHECK ((((resolution IS NULL) = (resolution_by IS NULL)) AND ((resolution IS NULL) = (resolution_reason IS NULL)))),
    CONSTRAINT withdrawals_send_rejections_check CHECK ((send_rejections >= 0)),
    CONSTRAINT withdrawals_signed_at_recorded CHECK (((signed_at IS NOT NULL) = (current_attempt_id IS NOT NULL))),
    CONSTRAINT withdrawals_signed_has_attempt CHECK (((status = ANY (ARRAY['failed'::public.withdrawal_status, 'manual'::public.withdrawal_status])) OR ((current_attempt_id IS NOT NULL) = (status = ANY (ARRAY['signed'::public.withdrawal_status, 'broadcast'::public.withdrawal_status, 'confirming'::public.withdrawal_status, 'completed'::public.withdrawal_status]))))),
    CONSTRAINT withdrawals_sweep_key CHECK (((kind = 'sweep'::public.payout_kind) = (from_key_index IS NOT NULL))),
    CONSTRAINT withdrawals_user_fields CHECK (
CASE
    WHEN (kind = 'withdrawal'::public.payout_kind) THEN ((user_id IS NOT NULL) AND (hold_id IS NOT NULL) AND (idempotency_scope IS NOT NULL) AND (idempotency_key IS NOT NULL) AND (request_hash IS NOT NULL) AND (requested_by IS NOT NULL))
    ELSE ((user_id IS NULL) AND (hold_id IS NULL) AND (idempotency_scope IS NULL) AND (idempotency_key IS NULL) AND (request_hash IS NULL) AND (requested_by IS NULL) AND (approved_by IS NULL) AND (closed_by IS NULL) AND (fee = (0)::numeric))
END),
    CONSTRAINT withdrawals_waiting_reason_check CHECK ((length(waiting_reason) <= 1000))
);

ALTER TABLE public.withdrawals ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.withdrawals_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

ALTER TABLE ONLY public.accounts
    ADD CONSTRAINT accounts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.accounts
    ADD CONSTRAINT accounts_unique UNIQUE NULLS NOT DISTINCT (owner_id, asset, purpose);

ALTER TABLE ONLY public.address_counters
    ADD CONSTRAINT address_counters_pkey PRIMARY KEY (chain);

ALTER TABLE ONLY public.assets
    ADD CONSTRAINT assets_chain_contract_unique UNIQUE NULLS NOT DISTINCT (chain, contract);

ALTER TABLE ONLY public.assets
    ADD CONSTRAINT assets_code_chain_unique UNIQUE (code, chain);

ALTER TABLE ONLY public.assets
    ADD CONSTRAINT assets_pkey PRIMARY KEY (code);

ALTER TABLE ONLY public.balances
    ADD CONSTRAINT balances_pkey PRIMARY KEY (account_id);

ALTER TABLE ONLY public.bitcoin_utxos
    ADD CONSTRAINT bitcoin_utxos_pkey PRIMARY KEY (txid, vout);

ALTER TABLE ONLY public.chain_cursors
    ADD CONSTRAINT chain_cursors_pkey PRIMARY KEY (chain);

ALTER TABLE ONLY public.chain_heads
    ADD CONSTRAINT chain_heads_pkey PRIMARY KEY (chain);

ALTER TABLE ONLY public.deposit_addresses
    ADD CONSTRAINT deposit_addresses_index_unique UNIQUE (chain, derivation_index);

ALTER TABLE ONLY public.deposit_addresses
    ADD CONSTRAINT deposit_addresses_pkey PRIMARY KEY (chain, address);

ALTER TABLE ONLY public.deposits
    ADD CONSTRAINT deposits_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.entries
    ADD CONSTRAINT entries_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.entries
    ADD CONSTRAINT entries_reference_unique UNIQUE (reference);

ALTER TABLE ONLY public.eth_nonce_reservations
    ADD CONSTRAINT eth_nonce_reservations_id_withdrawal_unique UNIQUE (id, withdrawal_id);

ALTER TABLE ONLY public.eth_nonce_reservations
    ADD CONSTRAINT eth_nonce_reservations_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.eth_nonce_reservations
    ADD CONSTRAINT eth_nonce_reservations_unique UNIQUE (chain, from_address, nonce);

ALTER TABLE ONLY public.eth_nonce_reservations
    ADD CONSTRAINT eth_nonce_reservations_withdrawal_unique UNIQUE (withdrawal_id);

ALTER TABLE ONLY public.holds
    ADD CONSTRAINT holds_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.idempotency_keys
    ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key);

ALTER TABLE ONLY public.indexed_blocks
    ADD CONSTRAINT indexed_blocks_pkey PRIMARY KEY (chain, height);

ALTER TABLE ONLY public.ledger_unchecked
    ADD CONSTRAINT ledger_unchecked_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.offers
    ADD CONSTRAINT offers_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.outbox
    ADD CONSTRAINT outbox_entry_id_key UNIQUE (entry_id);

ALTER TABLE ONLY public.outbox
    ADD CONSTRAINT outbox_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.postings
    ADD CONSTRAINT postings_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.refresh_tokens
    ADD CONSTRAINT refresh_tokens_pkey PRIMARY KEY (token_hash);

ALTER TABLE ONLY public.refused_deposits
    ADD CONSTRAINT refused_deposits_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_email_unique UNIQUE (email);

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.wallets
    ADD CONSTRAINT wallets_one_per_chain UNIQUE (user_id, chain);

ALTER TABLE ONLY public.wallets
    ADD CONSTRAINT wallets_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.watched_addresses
    ADD CONSTRAINT watched_addresses_pkey PRIMARY KEY (chain, address);

ALTER TABLE ONLY public.withdrawal_attempts
    ADD CONSTRAINT withdrawal_attempts_hash_unique UNIQUE (chain, tx_hash);

ALTER TABLE ONLY public.withdrawal_attempts
    ADD CONSTRAINT withdrawal_attempts_id_withdrawal_unique UNIQUE (id, withdrawal_id);

ALTER TABLE ONLY public.withdrawal_attempts
    ADD CONSTRAINT withdrawal_attempts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_hold_unique UNIQUE (hold_id);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_id_chain_unique UNIQUE (id, chain);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_idempotency_unique UNIQUE (idempotency_scope, idempotency_key);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_pkey PRIMARY KEY (id);

CREATE INDEX balances_owner ON public.balances USING btree (owner_id, asset);

CREATE INDEX bitcoin_utxos_by_block ON public.bitcoin_utxos USING btree (block_height);

CREATE INDEX bitcoin_utxos_by_spend ON public.bitcoin_utxos USING btree (spent_height) WHERE (spent_txid IS NOT NULL);

CREATE INDEX bitcoin_utxos_change_index ON public.bitcoin_utxos USING btree (derivation_index) WHERE (keychain = 'internal'::text);

CREATE INDEX bitcoin_utxos_unspent ON public.bitcoin_utxos USING btree (block_height) WHERE (spent_txid IS NULL);

CREATE INDEX deposit_addresses_wallet ON public.deposit_addresses USING btree (wallet_id, created_at);

CREATE UNIQUE INDEX deposits_canonical ON public.deposits USING btree (chain, tx_id, "position") WHERE (status <> 'orphaned'::public.deposit_status);

CREATE INDEX deposits_live_by_height ON public.deposits USING btree (chain, block_height) WHERE (status <> 'orphaned'::public.deposit_status);

CREATE INDEX deposits_pending ON public.deposits USING btree (chain, block_height) WHERE (status = 'pending'::public.deposit_status);

CREATE INDEX deposits_user ON public.deposits USING btree (user_id, id);

CREATE INDEX eth_nonce_reservations_fillers ON public.eth_nonce_reservations USING btree (chain, from_address, nonce) WHERE (purpose = 'filler'::public.nonce_reservation_purpose);

CREATE INDEX holds_owner ON public.holds USING btree (owner_id, id);

CREATE INDEX offers_due ON public.offers USING btree (expires_at) WHERE ((status = 'open'::public.offer_status) AND (expires_at IS NOT NULL));

CREATE INDEX offers_open ON public.offers USING btree (created_at DESC, id DESC) WHERE (status = 'open'::public.offer_status);

CREATE INDEX offers_open_by_maker ON public.offers USING btree (maker_id) WHERE (status = 'open'::public.offer_status);

CREATE INDEX outbox_unpublished ON public.outbox USING btree (id) WHERE (published_at IS NULL);

CREATE INDEX postings_entry ON public.postings USING btree (entry_id);

CREATE INDEX postings_owner ON public.postings USING btree (owner_id, entry_id) WHERE (owner_id IS NOT NULL);

CREATE INDEX postings_system_account ON public.postings USING btree (account_id, entry_id) WHERE (owner_id IS NULL);

CREATE INDEX refresh_tokens_family ON public.refresh_tokens USING btree (family_id);

CREATE INDEX refresh_tokens_user ON public.refresh_tokens USING btree (user_id) WHERE (revoked_at IS NULL);

CREATE UNIQUE INDEX refused_deposits_canonical ON public.refused_deposits USING btree (chain, tx_id, "position") WHERE (orphaned_at IS NULL);

CREATE INDEX refused_deposits_live_by_height ON public.refused_deposits USING btree (chain, block_height) WHERE (orphaned_at IS NULL);

CREATE INDEX withdrawal_attempts_by_withdrawal ON public.withdrawal_attempts USING btree (withdrawal_id, id);

CREATE UNIQUE INDEX withdrawal_attempts_one_landed ON public.withdrawal_attempts USING btree (withdrawal_id) WHERE (landed_block_hash IS NOT NULL);

CREATE INDEX withdrawals_by_status ON public.withdrawals USING btree (status, id DESC);

CREATE INDEX withdrawals_by_user ON public.withdrawals USING btree (user_id, id DESC);

CREATE INDEX withdrawals_claimable ON public.withdrawals USING btree (chain, id) WHERE (status = 'approved'::public.withdrawal_status);

CREATE INDEX withdrawals_daily ON public.withdrawals USING btree (user_id, asset, requested_at);

CREATE INDEX withdrawals_in_flight ON public.withdrawals USING btree (chain, id) WHERE (status = ANY (ARRAY['reserved'::public.withdrawal_status, 'signed'::public.withdrawal_status, 'broadcast'::public.withdrawal_status, 'confirming'::public.withdrawal_status]));

CREATE TRIGGER accounts_append_only BEFORE DELETE OR UPDATE ON public.accounts FOR EACH ROW EXECUTE FUNCTION public.ledger_append_only();

CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON public.accounts FOR EACH STATEMENT EXECUTE FUNCTION public.ledger_append_only();

CREATE TRIGGER balances_guard BEFORE INSERT OR DELETE OR UPDATE ON public.balances FOR EACH ROW EXECUTE FUNCTION public.balances_guard();

CREATE TRIGGER balances_no_truncate BEFORE TRUNCATE ON public.balances FOR EACH STATEMENT EXECUTE FUNCTION public.balances_guard();

CREATE TRIGGER entries_append_only BEFORE DELETE OR UPDATE ON public.entries FOR EACH ROW EXECUTE FUNCTION public.ledger_append_only();

CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON public.entries DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.entries_check_balanced();

CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON public.entries FOR EACH STATEMENT EXECUTE FUNCTION public.ledger_append_only();

CREATE TRIGGER entries_outbox AFTER INSERT ON public.entries REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION public.entries_outbox();

CREATE CONSTRAINT TRIGGER ledger_unchecked_balanced AFTER INSERT ON public.ledger_unchecked DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.ledger_check_queued();

CREATE TRIGGER postings_append_only BEFORE DELETE OR UPDATE ON public.postings FOR EACH ROW EXECUTE FUNCTION public.ledger_append_only();

CREATE TRIGGER postings_apply AFTER INSERT ON public.postings REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION public.postings_apply();

CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON public.postings FOR EACH STATEMENT EXECUTE FUNCTION public.ledger_append_only();

CREATE TRIGGER postings_stamp BEFORE INSERT ON public.postings FOR EACH ROW WHEN ((new.asset IS NULL)) EXECUTE FUNCTION public.postings_stamp();

CREATE CONSTRAINT TRIGGER withdrawals_ethereum_nonce_reserved AFTER INSERT OR UPDATE OF status, reserved_at ON public.withdrawals DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (((new.chain = 'ethereum'::text) AND (new.reserved_at IS NOT NULL) AND (new.status <> 'cancelled'::public.withdrawal_status) AND (NOT ((new.status = 'failed'::public.withdrawal_status) AND (new.current_attempt_id IS NULL))))) EXECUTE FUNCTION public.withdrawals_check_nonce_reserved();

ALTER TABLE ONLY public.accounts
    ADD CONSTRAINT accounts_asset_fkey FOREIGN KEY (asset) REFERENCES public.assets(code);

ALTER TABLE ONLY public.balances
    ADD CONSTRAINT balances_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.accounts(id);

ALTER TABLE ONLY public.deposit_addresses
    ADD CONSTRAINT deposit_addresses_wallet_id_fkey FOREIGN KEY (wallet_id) REFERENCES public.wallets(id);

ALTER TABLE ONLY public.deposits
    ADD CONSTRAINT deposits_asset_fkey FOREIGN KEY (asset) REFERENCES public.assets(code);

ALTER TABLE ONLY public.deposits
    ADD CONSTRAINT deposits_credit_entry_id_fkey FOREIGN KEY (credit_entry_id) REFERENCES public.entries(id);

ALTER TABLE ONLY public.deposits
    ADD CONSTRAINT deposits_pending_entry_id_fkey FOREIGN KEY (pending_entry_id) REFERENCES public.entries(id);

ALTER TABLE ONLY public.deposits
    ADD CONSTRAINT deposits_reversal_entry_id_fkey FOREIGN KEY (reversal_entry_id) REFERENCES public.entries(id);

ALTER TABLE ONLY public.eth_nonce_reservations
    ADD CONSTRAINT eth_nonce_reservations_withdrawal_fkey FOREIGN KEY (withdrawal_id, chain) REFERENCES public.withdrawals(id, chain);

ALTER TABLE ONLY public.holds
    ADD CONSTRAINT holds_asset_fkey FOREIGN KEY (asset) REFERENCES public.assets(code);

ALTER TABLE ONLY public.holds
    ADD CONSTRAINT holds_final_entry_id_fkey FOREIGN KEY (final_entry_id) REFERENCES public.entries(id);

ALTER TABLE ONLY public.holds
    ADD CONSTRAINT holds_place_entry_id_fkey FOREIGN KEY (place_entry_id) REFERENCES public.entries(id);

ALTER TABLE ONLY public.offers
    ADD CONSTRAINT offers_buy_asset_fkey FOREIGN KEY (buy_asset) REFERENCES public.assets(code);

ALTER TABLE ONLY public.offers
    ADD CONSTRAINT offers_hold_id_fkey FOREIGN KEY (hold_id) REFERENCES public.holds(id);

ALTER TABLE ONLY public.offers
    ADD CONSTRAINT offers_maker_id_fkey FOREIGN KEY (maker_id) REFERENCES public.users(id);

ALTER TABLE ONLY public.offers
    ADD CONSTRAINT offers_sell_asset_fkey FOREIGN KEY (sell_asset) REFERENCES public.assets(code);

ALTER TABLE ONLY public.offers
    ADD CONSTRAINT offers_taker_id_fkey FOREIGN KEY (taker_id) REFERENCES public.users(id);

ALTER TABLE ONLY public.offers
    ADD CONSTRAINT offers_trade_entry_id_fkey FOREIGN KEY (trade_entry_id) REFERENCES public.entries(id);

ALTER TABLE ONLY public.outbox
    ADD CONSTRAINT outbox_entry_id_fkey FOREIGN KEY (entry_id) REFERENCES public.entries(id);

ALTER TABLE ONLY public.refresh_tokens
    ADD CONSTRAINT refresh_tokens_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id);

ALTER TABLE ONLY public.wallets
    ADD CONSTRAINT wallets_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id);

ALTER TABLE ONLY public.watched_addresses
    ADD CONSTRAINT watched_addresses_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id);

ALTER TABLE ONLY public.withdrawal_attempts
    ADD CONSTRAINT withdrawal_attempts_nonce_fkey FOREIGN KEY (nonce_reservation_id, withdrawal_id) REFERENCES public.eth_nonce_reservations(id, withdrawal_id);

ALTER TABLE ONLY public.withdrawal_attempts
    ADD CONSTRAINT withdrawal_attempts_withdrawal_fkey FOREIGN KEY (withdrawal_id, chain) REFERENCES public.withdrawals(id, chain);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_approved_by_fkey FOREIGN KEY (approved_by) REFERENCES public.users(id);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_asset_on_chain FOREIGN KEY (asset, chain) REFERENCES public.assets(code, chain);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_closed_by_fkey FOREIGN KEY (closed_by) REFERENCES public.users(id);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_current_attempt_fkey FOREIGN KEY (current_attempt_id, id) REFERENCES public.withdrawal_attempts(id, withdrawal_id);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_hold_id_fkey FOREIGN KEY (hold_id) REFERENCES public.holds(id);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_requested_by_fkey FOREIGN KEY (requested_by) REFERENCES public.users(id);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_resolution_by_fkey FOREIGN KEY (resolution_by) REFERENCES public.users(id);

ALTER TABLE ONLY public.withdrawals
    ADD CONSTRAINT withdrawals_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id);
