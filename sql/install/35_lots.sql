-- ---------------------------------------------------------------------------------------------
-- Credit lots.  A project's balance is made of lots, each what remains of one credit: every
-- completed deposit and auto-recharge is a paid lot, and grant_credits adds a promotional one
-- (sign-up credit, compensation, a promotion) that may expire, has a priority and may be
-- limited to some kinds of usage.  The hourly deduction draws each usage hour from the lots
-- that may pay for it (src/lots.c, src/deduction.c); expiries (sql/install/53_expiry.sql) and
-- refunds (36_refunds.sql) take what is left of one lot.  For every lot,
--     amount = remaining + used + refunded + expired
-- and the lots' remaining amounts add up to the balance; verify() checks both.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE credits.credit_lots (
    -- The completed deposit, auto-recharge or grant that made the lot.
    transaction_id bigint PRIMARY KEY,
    project_id     bigint NOT NULL REFERENCES credits.accounts,
    kind           text NOT NULL CHECK (kind IN ('paid', 'promotional')),
    amount         credits.credits NOT NULL CHECK (amount > '0'::credits.credits),
    -- What is left of it: part of the balance.
    remaining      credits.credits NOT NULL,
    -- What usage took from it (the hourly deduction adds each run's draws).
    used           credits.credits NOT NULL DEFAULT '0',
    -- What pending refunds hold of remaining: no usage draws on it.
    held           credits.credits NOT NULL DEFAULT '0',
    -- It pays for the usage hours that begin before expires_at (null: it never expires).
    expires_at     timestamptz,
    -- Lower first.
    priority       integer NOT NULL DEFAULT 50 CHECK (priority BETWEEN 0 AND 100),
    -- The kinds of usage it may pay for, among instance, volume and api (null: all).
    applies_to     text[] CHECK (applies_to <@ ARRAY['instance', 'volume', 'api'] AND cardinality(applies_to) > 0),
    -- When it joined the balance (the deposit's completion, the grant).
    created_at     timestamptz NOT NULL,
    -- Something remains of it; else how it ended.
    active         boolean NOT NULL DEFAULT true,
    ended          text CHECK (ended IN ('used', 'expired', 'refunded')),
    CONSTRAINT lot_amounts CHECK (
        remaining >= '0'::credits.credits AND used >= '0'::credits.credits AND held >= '0'::credits.credits
        AND held <= remaining AND remaining + used <= amount),
    CONSTRAINT lot_state CHECK (active = (remaining > '0'::credits.credits) AND active = (ended IS NULL)),
    CONSTRAINT paid_lot_shape CHECK (
        kind = 'promotional' OR (priority = 50 AND expires_at IS NULL AND applies_to IS NULL))
)
-- Half-empty pages: each hourly run updates the lots it draws on, heap-only (remaining and used
-- are in no index).
WITH (fillfactor = 50);
-- One project's lots (its history, verify()), and those still holding credits: what the
-- deduction and the balance reads draw on.
CREATE INDEX credit_lots_project ON credits.credit_lots (project_id);
CREATE INDEX credit_lots_active ON credits.credit_lots (project_id) WHERE active;
-- The lots that make a project's standing more than its balance less its accrued usage: with an
-- expiry, limited to some kinds, or partly held by a refund (few; the balance checks read them).
CREATE INDEX credit_lots_special ON credits.credit_lots (project_id)
    WHERE active AND (expires_at IS NOT NULL OR applies_to IS NOT NULL OR held > '0'::credits.credits);
-- The lots waiting for their expiry.
CREATE INDEX credit_lots_expiring ON credits.credit_lots (expires_at) WHERE active AND expires_at IS NOT NULL;

-- The bits of the kinds a lot may pay for (src/lots.h): instance 1, volume 2, api 4; null: all.
CREATE FUNCTION credits._kind_mask(applies_to text[]) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN applies_to IS NULL THEN 7
                ELSE (CASE WHEN 'instance' = ANY (applies_to) THEN 1 ELSE 0 END
                      + CASE WHEN 'volume' = ANY (applies_to) THEN 2 ELSE 0 END
                      + CASE WHEN 'api' = ANY (applies_to) THEN 4 ELSE 0 END) END;

-- Adds a completed deposit, auto-recharge or grant to the balance as a lot (the caller holds the
-- account); returns the new balance.
CREATE FUNCTION credits._add_lot(project_id bigint, transaction_id bigint, kind text, amount credits.credits,
                                 expires_at timestamptz DEFAULT NULL, priority integer DEFAULT 50,
                                 applies_to text[] DEFAULT NULL) RETURNS credits.credits
    LANGUAGE plpgsql AS $$
DECLARE
    new_balance credits.credits;
BEGIN
    INSERT INTO credits.credit_lots (transaction_id, project_id, kind, amount, remaining, expires_at,
                                     priority, applies_to, created_at)
    VALUES (transaction_id, project_id, kind, amount, amount, expires_at, priority, applies_to, credits.now());
    UPDATE credits.accounts a SET balance = a.balance + amount
     WHERE a.project_id = _add_lot.project_id
    RETURNING a.balance INTO new_balance;
    RETURN new_balance;
END $$;

-- Raises 23505: idempotency_key names the earlier transaction, made with other arguments.
CREATE FUNCTION credits._key_reused(idempotency_key text, earlier credits.transactions) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'idempotency key "%" was already used with other arguments', idempotency_key
        USING ERRCODE = 'unique_violation',
              DETAIL = format('Transaction %s is a %s of %s.', earlier.transaction_id, earlier.type, earlier.amount);
END $$;

-- The grant an earlier grant_credits made with this idempotency key, if any; raises when that
-- call had other arguments.
CREATE FUNCTION credits._grant_by_key(project_id bigint, amount credits.credits, expires_at timestamptz,
                                      priority integer, applies_to text[], idempotency_key text) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    earlier credits.transactions;
    lot credits.credit_lots;
BEGIN
    SELECT * INTO earlier FROM credits.transactions t
     WHERE t.project_id = _grant_by_key.project_id AND t.idempotency_key = _grant_by_key.idempotency_key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO lot FROM credits.credit_lots l WHERE l.transaction_id = earlier.transaction_id;
    IF earlier.type::text <> 'grant' OR earlier.amount <> amount
       OR lot.expires_at IS DISTINCT FROM _grant_by_key.expires_at OR lot.priority <> _grant_by_key.priority
       OR lot.applies_to IS DISTINCT FROM _grant_by_key.applies_to THEN
        PERFORM credits._key_reused(idempotency_key, earlier);
    END IF;
    RETURN earlier.transaction_id;
END $$;

-- Adds a promotional lot of amount to the project's balance, completed at once, and returns the
-- grant's transaction id.  It pays for usage hours that begin before expires_at (null: never
-- expires), lower priority first, only for the kinds in applies_to (null: all).  The same
-- idempotency key with the same arguments returns the first grant and writes nothing.
CREATE FUNCTION credits.grant_credits(project_id bigint, amount credits.credits, expires_at timestamptz DEFAULT NULL,
                                      priority integer DEFAULT 50, applies_to text[] DEFAULT NULL,
                                      description text DEFAULT NULL, idempotency_key text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    kinds text[];
    id bigint;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_positive('amount', amount);
    PERFORM credits._require('priority', priority IS NULL);
    PERFORM credits._require_text('description', description, 200);
    PERFORM credits._require_text('idempotency_key', idempotency_key, 200);
    IF priority NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'priority must be between 0 and 100, got %', priority
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF applies_to IS NOT NULL THEN
        IF coalesce(array_ndims(applies_to), 0) <> 1 OR array_position(applies_to, NULL) IS NOT NULL
           OR NOT applies_to <@ ARRAY['instance', 'volume', 'api'] THEN
            RAISE EXCEPTION 'applies_to must list kinds among instance, volume and api, got %', applies_to
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass null for a grant that pays for every kind of usage.';
        END IF;
        -- (one order and no repeats, so that a retry with the kinds in another order matches)
        SELECT array_agg(DISTINCT k ORDER BY k) INTO kinds FROM unnest(applies_to) AS k;
    END IF;
    IF idempotency_key IS NOT NULL THEN
        id := credits._grant_by_key(project_id, amount, expires_at, priority, kinds, idempotency_key);
        IF id IS NOT NULL THEN
            RETURN id;
        END IF;
    END IF;
    IF expires_at IS NOT NULL AND expires_at <= credits.now() THEN
        RAISE EXCEPTION 'expires_at % is not in the future', expires_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM FROM credits.accounts a WHERE a.project_id = grant_credits.project_id FOR NO KEY UPDATE;
    INSERT INTO credits.transactions AS t (project_id, type, status, amount, created_at, description,
                                           idempotency_key, completed_at)
    VALUES (project_id, 'grant', 'completed', amount, credits.now(), coalesce(description, 'Grant'),
            idempotency_key, credits.now())
    ON CONFLICT DO NOTHING
    RETURNING t.transaction_id INTO id;
    IF id IS NULL THEN
        -- A concurrent call with the same key committed first: answer as it did.
        RETURN credits._grant_by_key(project_id, amount, expires_at, priority, kinds, idempotency_key);
    END IF;
    PERFORM credits._add_lot(project_id, id, 'promotional', amount, expires_at, priority, kinds);
    PERFORM credits._enforce_lots(project_id, credits.now());
    RETURN id;
END $$;

COMMENT ON FUNCTION credits.grant_credits(bigint, credits.credits, timestamptz, integer, text[], text, text) IS 'adds a promotional lot (completed at once) that pays for usage hours beginning before expires_at, lower priority first, of the kinds in applies_to (null: all); returns the grant''s id; idempotent by key (credits_worker)';
