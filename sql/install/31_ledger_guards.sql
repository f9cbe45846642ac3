-- ---------------------------------------------------------------------------------------------
-- Argument checks shared by every API function, the outbox writer, and the trigger that keeps
-- the ledger's history legal.
-- ---------------------------------------------------------------------------------------------

-- Raises 22004 when a required argument is null.
CREATE FUNCTION credits._require(arg_name text, is_null boolean) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF is_null THEN
        RAISE EXCEPTION '% must not be null', arg_name USING ERRCODE = 'null_value_not_allowed';
    END IF;
END $$;

-- Raises unless the project has an account (P0002); returns its id.
CREATE FUNCTION credits._require_account(project_id bigint) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM credits._require('project_id', project_id IS NULL);
    PERFORM FROM credits.accounts a WHERE a.project_id = _require_account.project_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown project %', project_id USING ERRCODE = 'no_data_found',
            HINT = 'Open it first with credits.open_account().';
    END IF;
    RETURN project_id;
END $$;

-- Raises 22023 unless amount is positive and at most one billion credits (22004 when it is
-- null).  The ceiling keeps each deposit, auto-recharge, rate per hour and API usage far
-- below the range of credits: without it, a deposit the balance could never hold was taken
-- (and failed only at complete_deposit, after the card was charged), and two API usages near
-- the top of the range made every later periodic run fail with 22003, for every project.
CREATE FUNCTION credits._require_positive(arg_name text, amount credits.credits) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    PERFORM credits._require(arg_name, amount IS NULL);
    IF amount <= '0'::credits.credits THEN
        RAISE EXCEPTION '% must be positive, got %', arg_name, amount
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF amount > credits._max_amount() THEN
        RAISE EXCEPTION '% must be at most %, got %', arg_name, credits._max_amount(), amount
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Raises 22023 unless value is null (when allowed) or 1..max_length characters long.
CREATE FUNCTION credits._require_text(arg_name text, value text, max_length integer,
                                      nullable boolean DEFAULT true) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF value IS NULL THEN
        PERFORM credits._require(arg_name, NOT nullable);
    ELSIF length(value) = 0 OR length(value) > max_length THEN
        RAISE EXCEPTION '% must be 1 to % characters long, got %', arg_name, max_length, length(value)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Queues one event in the outbox and wakes the listeners of credits_events at commit.
CREATE FUNCTION credits._enqueue_event(project_id bigint, kind text, resource_id text,
                                       transaction_id bigint, payload jsonb) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO credits.events (project_id, kind, resource_id, transaction_id, payload, created_at)
    VALUES (project_id, kind, resource_id, transaction_id, payload, credits.now())
    RETURNING event_id INTO new_id;
    PERFORM pg_notify('credits_events', '');
    RETURN new_id;
END $$;

-- Refuses every change the ledger's rules forbid; called only when the WHEN clause of
-- transactions_guard found one, so legal updates pay no function call.
CREATE FUNCTION credits._transactions_guard() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'credits transactions are never deleted'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RAISE EXCEPTION 'illegal change to % transaction % (% → %)',
        OLD.status, OLD.transaction_id, OLD.status, NEW.status
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = 'Completed and failed transactions never change; status moves only '
                       'pending → completed | failed and accumulating → completed; '
                       'project, type, resource and hour never change.';
END $$;

CREATE TRIGGER transactions_guard
    BEFORE UPDATE ON credits.transactions FOR EACH ROW
    WHEN (OLD.status IN ('completed', 'failed')
          OR NEW.project_id <> OLD.project_id
          OR NEW.type <> OLD.type
          OR NEW.resource_id IS DISTINCT FROM OLD.resource_id
          OR NEW.usage_hour IS DISTINCT FROM OLD.usage_hour
          OR (OLD.type <> 'usage' AND NEW.amount <> OLD.amount)
          OR (NEW.status <> OLD.status
              AND NOT (OLD.status = 'pending' AND NEW.status IN ('completed', 'failed'))
              AND NOT (OLD.status = 'accumulating' AND NEW.status = 'completed')))
    EXECUTE FUNCTION credits._transactions_guard();
CREATE TRIGGER transactions_no_delete
    BEFORE DELETE ON credits.transactions FOR EACH ROW
    EXECUTE FUNCTION credits._transactions_guard();
CREATE TRIGGER transactions_no_truncate
    BEFORE TRUNCATE ON credits.transactions FOR EACH STATEMENT
    EXECUTE FUNCTION credits._transactions_guard();

-- The ledger's references, checked once per statement instead of by a foreign key per row (a
-- deduction run inserts a million usage rows, and per-row key checks took 40% of its time):
-- every new transaction's project has an account, and every method named exists for that
-- project.  Accounts and payment methods are never deleted (triggers below), so what holds
-- when a row is inserted holds for good; credits.verify() checks it again.
CREATE FUNCTION credits._transactions_known_references() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.transaction_id, n.project_id, n.method_id,
           NOT EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = n.project_id) AS no_account
      INTO bad
      FROM inserted n
     WHERE NOT EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = n.project_id)
        OR (n.method_id IS NOT NULL
            AND NOT EXISTS (SELECT FROM credits.payment_methods m
                             WHERE m.method_id = n.method_id AND m.project_id = n.project_id))
     LIMIT 1;
    IF FOUND AND bad.no_account THEN
        RAISE EXCEPTION 'a transaction names unknown project %', bad.project_id
            USING ERRCODE = 'foreign_key_violation';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'a transaction names payment method %, which project % does not have',
            bad.method_id, bad.project_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER transactions_known_references
    AFTER INSERT ON credits.transactions REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION credits._transactions_known_references();

-- Refuses to delete accounts and payment methods: the ledger refers to them forever.  The
-- trigger's arguments name the rows and give the hint.
CREATE FUNCTION credits._never_deleted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credits % are never deleted', TG_ARGV[0]
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = 'The ledger refers to them for good.', HINT = TG_ARGV[1];
END $$;

CREATE TRIGGER accounts_no_delete
    BEFORE DELETE ON credits.accounts FOR EACH ROW
    EXECUTE FUNCTION credits._never_deleted('accounts', 'An account with nothing to spend is simply left at zero.');
CREATE TRIGGER accounts_no_truncate
    BEFORE TRUNCATE ON credits.accounts FOR EACH STATEMENT
    EXECUTE FUNCTION credits._never_deleted('accounts', 'An account with nothing to spend is simply left at zero.');
CREATE TRIGGER payment_methods_no_delete
    BEFORE DELETE ON credits.payment_methods FOR EACH ROW
    EXECUTE FUNCTION credits._never_deleted('payment methods', 'Remove one with credits.remove_payment_method(): it is marked removed and kept.');
CREATE TRIGGER payment_methods_no_truncate
    BEFORE TRUNCATE ON credits.payment_methods FOR EACH STATEMENT
    EXECUTE FUNCTION credits._never_deleted('payment methods', 'Remove one with credits.remove_payment_method(): it is marked removed and kept.');
