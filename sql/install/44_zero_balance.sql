-- ---------------------------------------------------------------------------------------------
-- Zero balance: two triggers on credits.accounts decide and carry it out.
-- When a project's balance reaches zero, or accrued usage uses up its available balance, in
-- the same transaction: running instances are terminated, available volumes become
-- inaccessible, and instance_terminated / volume_inaccessible / balance_depleted (once per
-- depletion) are queued.  A deposit that makes the available balance positive again makes the
-- volumes available again (volume_available queued); terminated instances stay terminated.
-- ---------------------------------------------------------------------------------------------

-- Whether usage accrued and not yet deducted (accrued) has used up a balance: nothing of it is
-- available (credits._available).  The one rule of every cut-off, by the balance check and by
-- the zero-balance trigger (inlined wherever it is called).
CREATE FUNCTION credits._used_up(balance credits.credits, accrued credits.credits) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN credits._available(balance, accrued) = '0'::credits.credits;

-- Cuts a project's resources of the kinds given off at time at: books every billing one's time up
-- to at, terminates instances, locks volumes, queues the events.  A resource locked by another
-- transaction raises 55P03 at once rather than wait: the periodic runs pass the project over
-- and cut it off at a later run (the paths that change resources lock the account first, so
-- this is rare).
CREATE FUNCTION credits._cut_off_resources(project_id bigint, kinds text[], at timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    r credits.resources;
BEGIN
    FOR r IN SELECT * FROM credits.resources x
              WHERE x.project_id = _cut_off_resources.project_id AND x.state IN ('running', 'available')
                AND x.kind = ANY (kinds)
              ORDER BY x.resource_id FOR UPDATE NOWAIT
    LOOP
        PERFORM credits._book_usage(project_id, r.kind, r.resource_id, r.rate_per_hour, r.accrued_until, at);
        UPDATE credits.resources x
           SET state = CASE r.kind WHEN 'instance' THEN 'terminated' ELSE 'inaccessible' END,
               state_since = at, accrued_until = NULL
         WHERE x.project_id = _cut_off_resources.project_id AND x.resource_id = r.resource_id;
        PERFORM credits._enqueue_event(project_id,
            CASE r.kind WHEN 'instance' THEN 'instance_terminated' ELSE 'volume_inaccessible' END,
            r.resource_id, NULL,
            jsonb_build_object('resource_id', r.resource_id, 'kind', r.kind, 'at', at)
                || credits._retention_payload(r.kind, at));
    END LOOP;
END $$;

-- Cuts a project off at time at: every instance and volume (credits._cut_off_resources), and
-- balance_depleted queued.
CREATE FUNCTION credits._cut_off(project_id bigint, at timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    balance credits.credits;
BEGIN
    PERFORM credits._cut_off_resources(project_id, ARRAY['instance', 'volume'], at);
    SELECT a.balance INTO balance FROM credits.accounts a WHERE a.project_id = _cut_off.project_id;
    PERFORM credits._enqueue_event(project_id, 'balance_depleted', NULL, NULL,
        jsonb_build_object('balance', balance::text, 'at', at));
END $$;

-- Makes a project's inaccessible volumes available again at time at and queues the events.
CREATE FUNCTION credits._restore_volumes(project_id bigint, at timestamptz) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    r credits.resources;
BEGIN
    FOR r IN SELECT * FROM credits.resources x
              WHERE x.project_id = _restore_volumes.project_id AND x.state = 'inaccessible'
              ORDER BY x.resource_id FOR UPDATE
    LOOP
        UPDATE credits.resources x
           SET state = 'available', state_since = at,
               accrued_until = credits._billing_start(_restore_volumes.project_id, at)
         WHERE x.project_id = _restore_volumes.project_id AND x.resource_id = r.resource_id;
        PERFORM credits._enqueue_event(project_id, 'volume_available', r.resource_id, NULL,
            jsonb_build_object('resource_id', r.resource_id, 'kind', r.kind, 'at', at));
    END LOOP;
END $$;

-- BEFORE UPDATE of an account, called only when its WHEN clause finds a balance that reached
-- zero from above (used up with nothing accrued; an account never funded has not reached
-- zero) or a deposit or grant into a depleted account: sets depleted as the balance demands.
-- A balance that reached zero is depleted; a depleted account stays so until something that
-- may pay for instances or volumes is left of its lots after the usage accrued and not yet
-- deducted: until the balance is no longer used up by credits._lift_threshold (without grants
-- or refunds, the accrued usage).
CREATE FUNCTION credits._zero_balance_decide() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT NEW.depleted THEN
        NEW.depleted := true;
    ELSE
        NEW.depleted := credits._used_up(NEW.balance, credits._lift_threshold(NEW.project_id));
    END IF;
    RETURN NEW;
END $$;

-- AFTER UPDATE of an account whose depleted flag changed: carries it out in the same
-- transaction (set: credits._cut_off; cleared: credits._restore_volumes, once something may pay
-- for this hour of a volume: credit for instances only lifts the project and leaves its volumes
-- locked).
CREATE FUNCTION credits._zero_balance_enforce() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.depleted THEN
        PERFORM credits._cut_off(NEW.project_id, credits.now());
    ELSIF credits._spendable(NEW.project_id, 2, credits.hour_of(credits.now())) > '0'::credits.credits THEN
        PERFORM credits._restore_volumes(NEW.project_id, credits.now());
    END IF;
    RETURN NULL;
END $$;

-- (the WHEN clauses keep every ordinary balance change, such as the deduction's debit of every
-- account, off the trigger functions; _used_up is inlined there)
CREATE TRIGGER zero_balance_decide
    BEFORE UPDATE OF balance, depleted ON credits.accounts FOR EACH ROW
    WHEN ((NOT NEW.depleted AND OLD.balance > '0'::credits.credits
           AND credits._used_up(NEW.balance, '0'::credits.credits))
          OR (NEW.depleted AND NEW.balance > OLD.balance))
    EXECUTE FUNCTION credits._zero_balance_decide();

CREATE TRIGGER zero_balance_enforce
    AFTER UPDATE OF balance, depleted ON credits.accounts FOR EACH ROW
    WHEN (OLD.depleted IS DISTINCT FROM NEW.depleted)
    EXECUTE FUNCTION credits._zero_balance_enforce();
