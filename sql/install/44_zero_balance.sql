-- ---------------------------------------------------------------------------------------------
-- Zero balance (src/zero_balance.c decides; these functions carry it out).
-- When a project's balance reaches zero, or accrued usage uses up its available balance, in
-- the same transaction: running instances are terminated, available volumes become
-- inaccessible, and instance_terminated / volume_inaccessible / balance_depleted (once per
-- depletion) are queued.  A deposit that makes the available balance positive again makes the
-- volumes available again (volume_available queued); terminated instances stay terminated.
-- ---------------------------------------------------------------------------------------------

-- Whether usage accrued and not yet deducted (accrued) has used up a balance: the one rule of
-- every cut-off, by the balance check and by the zero-balance trigger.
CREATE FUNCTION credits._used_up(balance credits.credits, accrued credits.credits) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN balance <= accrued;

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

CREATE FUNCTION credits._zero_balance_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'credits_zero_balance_lots' LANGUAGE C;

CREATE TRIGGER zero_balance_decide
    BEFORE UPDATE OF balance, depleted ON credits.accounts FOR EACH ROW
    WHEN ((NEW.balance = '0'::credits.credits AND OLD.balance > '0'::credits.credits AND NOT NEW.depleted)
          OR (NEW.depleted AND NEW.balance > OLD.balance))
    EXECUTE FUNCTION credits._zero_balance_trigger();

CREATE TRIGGER zero_balance_enforce
    AFTER UPDATE OF balance, depleted ON credits.accounts FOR EACH ROW
    WHEN (OLD.depleted IS DISTINCT FROM NEW.depleted)
    EXECUTE FUNCTION credits._zero_balance_trigger();
