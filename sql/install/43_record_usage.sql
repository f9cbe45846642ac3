-- ---------------------------------------------------------------------------------------------
-- API usage: the per-request path.  Each call appends one row to usage_events (and, with an
-- idempotency key, one to usage_keys); no shared row is updated, so one project can take
-- thousands of calls per second.  The periodic runs fold the events into usage transactions.
-- ---------------------------------------------------------------------------------------------

-- Raises 23505 unless the earlier use of an idempotency key recorded the same resource and amount.
CREATE FUNCTION credits._require_same_usage(project_id bigint, idempotency_key text, resource_id text,
                                            amount credits.credits) RETURNS void
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    earlier credits.usage_keys;
BEGIN
    SELECT * INTO STRICT earlier FROM credits.usage_keys k
     WHERE k.project_id = _require_same_usage.project_id AND k.idempotency_key = _require_same_usage.idempotency_key;
    IF earlier.resource_id <> resource_id OR earlier.amount <> amount THEN
        RAISE EXCEPTION 'idempotency key "%" was already used with other arguments', idempotency_key
            USING ERRCODE = 'unique_violation',
                  DETAIL = format('It recorded %s on %s.', earlier.amount, earlier.resource_id);
    END IF;
END $$;

-- record_usage in full: the keyed calls, and the argument errors.  credits.record_usage (C,
-- below) appends the plain calls itself and hands every other call to this function.
CREATE FUNCTION credits._record_usage(project_id bigint, resource_id text, amount credits.credits,
                                      idempotency_key text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    at timestamptz := credits.now();
BEGIN
    -- (each check is a plain condition; an argument that fails it goes to its helper, which
    -- raises the usual error.  The bounds are those of credits._require_text and
    -- credits._require_positive.)
    IF NOT EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = _record_usage.project_id) THEN
        PERFORM credits._require_account(project_id);
    END IF;
    IF resource_id IS NULL OR length(resource_id) NOT BETWEEN 1 AND credits._max_id_chars() THEN
        PERFORM credits._require_text('resource_id', resource_id, credits._max_id_chars(), nullable => false);
    END IF;
    IF amount IS NULL OR amount <= '0'::credits.credits OR amount > credits._max_amount() THEN
        PERFORM credits._require_positive('amount', amount);
    END IF;
    IF idempotency_key IS NOT NULL THEN
        IF length(idempotency_key) NOT BETWEEN 1 AND credits._max_id_chars() THEN
            PERFORM credits._require_text('idempotency_key', idempotency_key, credits._max_id_chars());
        END IF;
        INSERT INTO credits.usage_keys VALUES (project_id, idempotency_key, resource_id, amount, at)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            PERFORM credits._require_same_usage(project_id, idempotency_key, resource_id, amount);
            RETURN;
        END IF;
    END IF;
    INSERT INTO credits.usage_events VALUES (project_id, resource_id, credits.hour_of(at), amount);
END $$;

-- Records amount of API usage of resource_id (the metered product, e.g. 'api:chat') in the
-- current hour.  A repeated idempotency key with the same arguments is counted once.  In C
-- (src/usage_record.c): a call without a key is one probe of the accounts and one appended
-- row; the rest goes to credits._record_usage.  Not SECURITY DEFINER: it writes without
-- privilege checks, so its EXECUTE grant (credits_app) is the gate.
CREATE FUNCTION credits.record_usage(project_id bigint, resource_id text, amount credits.credits,
                                     idempotency_key text DEFAULT NULL) RETURNS void
    AS 'MODULE_PATHNAME', 'credits_record_usage' LANGUAGE C VOLATILE;

-- Records many usages at once: element i of each array is one record_usage call.  All or
-- nothing: one bad element refuses the whole batch.  Returns the elements taken (repeated
-- keys are not counted again).
CREATE FUNCTION credits.record_usage_batch(project_ids bigint[], resource_ids text[], amounts credits.credits[],
                                           idempotency_keys text[] DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp AS $$
DECLARE
    at timestamptz := credits.now();
    n integer := cardinality(project_ids);
    bad record;
    taken bigint;
BEGIN
    PERFORM credits._require('project_ids', project_ids IS NULL);
    PERFORM credits._require('resource_ids', resource_ids IS NULL);
    PERFORM credits._require('amounts', amounts IS NULL);
    IF cardinality(resource_ids) <> n OR cardinality(amounts) <> n
       OR cardinality(coalesce(idempotency_keys, project_ids::text[])) <> n THEN
        RAISE EXCEPTION 'the arrays must have the same length' USING ERRCODE = 'array_subscript_error';
    END IF;

    -- Every element is checked before anything is written.
    SELECT u.ord, u.project_id, u.resource_id, u.amount, u.idempotency_key INTO bad
      FROM unnest(project_ids, resource_ids, amounts, idempotency_keys)
           WITH ORDINALITY AS u(project_id, resource_id, amount, idempotency_key, ord)
     WHERE u.project_id IS NULL OR u.resource_id IS NULL OR u.amount IS NULL
        OR length(u.resource_id) NOT BETWEEN 1 AND credits._max_id_chars() OR u.amount <= '0'::credits.credits
        OR u.amount > credits._max_amount()
        OR length(u.idempotency_key) NOT BETWEEN 1 AND credits._max_id_chars()
     ORDER BY u.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'element % of the batch is invalid', bad.ord
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Project %s, resource %s, amount %s, key %s: every element needs a project, '
                                  'a resource id and key of 1 to %s characters and a positive amount '
                                  'of at most %s.',
                                  bad.project_id, bad.resource_id, bad.amount, bad.idempotency_key,
                                  credits._max_id_chars(), credits._max_amount());
    END IF;
    SELECT p.project_id INTO bad
      FROM (SELECT DISTINCT x.project_id FROM unnest(project_ids) AS x(project_id)) AS p
     WHERE NOT EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = p.project_id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown project %', bad.project_id USING ERRCODE = 'no_data_found';
    END IF;

    -- Without keys every element is taken: one plain INSERT, and no key to check afterwards.
    -- The batch's elements of one project and product are appended as one event (the fold
    -- adds them up all the same); a group holds at most 1,000 elements, so its sum stays far
    -- inside the range of credits (1,000 x the 1e9 ceiling).
    IF idempotency_keys IS NULL THEN
        INSERT INTO credits.usage_events
        SELECT u.project_id, u.resource_id, credits.hour_of(at), sum(u.amount)
          FROM unnest(project_ids, resource_ids, amounts) WITH ORDINALITY AS u(project_id, resource_id, amount, ord)
         GROUP BY u.project_id, u.resource_id, (u.ord - 1) / 1000;
        RETURN n;
    END IF;

    -- The first element with a key takes it (unless an earlier call did); only taken keys and
    -- unkeyed elements are recorded.
    WITH input AS (
        SELECT * FROM unnest(project_ids, resource_ids, amounts, idempotency_keys)
                      WITH ORDINALITY AS u(project_id, resource_id, amount, idempotency_key, ord)),
    first_use AS (
        SELECT DISTINCT ON (i.project_id, i.idempotency_key) i.*
          FROM input i WHERE i.idempotency_key IS NOT NULL
         ORDER BY i.project_id, i.idempotency_key, i.ord),
    claimed AS (
        INSERT INTO credits.usage_keys
        SELECT f.project_id, f.idempotency_key, f.resource_id, f.amount, at FROM first_use f
        ON CONFLICT DO NOTHING
        RETURNING project_id, idempotency_key),
    taken_elements AS (
        SELECT i.* FROM input i
         WHERE i.idempotency_key IS NULL
            OR i.ord IN (SELECT f.ord FROM first_use f JOIN claimed c USING (project_id, idempotency_key))),
    appended AS (
        INSERT INTO credits.usage_events
        SELECT t.project_id, t.resource_id, credits.hour_of(at), sum(t.amount)
          FROM taken_elements t GROUP BY t.project_id, t.resource_id, (t.ord - 1) / 1000)
    SELECT count(*) INTO taken FROM taken_elements;

    -- A key used before (or twice in this batch) must repeat its arguments; else nothing stays.
    SELECT u.idempotency_key INTO bad
      FROM unnest(project_ids, resource_ids, amounts, idempotency_keys) AS u(project_id, resource_id, amount, idempotency_key)
      JOIN credits.usage_keys k USING (project_id, idempotency_key)
     WHERE k.resource_id <> u.resource_id OR k.amount <> u.amount
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'idempotency key "%" was already used with other arguments', bad.idempotency_key
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN taken;
END $$;
