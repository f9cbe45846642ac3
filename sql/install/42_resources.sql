-- ---------------------------------------------------------------------------------------------
-- Instances (running | stopped | terminated) and volumes (available | inaccessible | deleted).
-- An instance is charged for every microsecond it runs, a volume for every microsecond it is
-- accessible, at rate_per_hour, split at UTC hour boundaries.
-- ---------------------------------------------------------------------------------------------

-- Raises unless the project may start a resource of kind: not cut off, and something left for
-- that kind in its lots (credits._spendable: after the accrued usage, not expired).  Takes a
-- share lock on the account so that a concurrent cut-off waits for this transaction and then
-- sees (and terminates) what it started.
CREATE FUNCTION credits._require_available_balance(project_id bigint, kind text) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    is_depleted boolean;
BEGIN
    SELECT a.depleted INTO is_depleted FROM credits.accounts a
     WHERE a.project_id = _require_available_balance.project_id FOR SHARE;
    IF is_depleted OR credits._spendable(project_id, CASE kind WHEN 'instance' THEN 1 ELSE 2 END,
                                         credits.now()) <= '0'::credits.credits THEN
        IF credits._spendable(project_id, 7, credits.now()) > '0'::credits.credits THEN
            RAISE EXCEPTION 'project % has no available balance', project_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('None of its credits may pay for %ss.', kind),
                      HINT = 'Add credits with credits.add_credits() first.';
        END IF;
        RAISE EXCEPTION 'project % has no available balance', project_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add credits with credits.add_credits() first.';
    END IF;
END $$;

-- Starts billing a resource (start_instance, attach_volume): creates it, restarts a stopped
-- instance, or changes the rate of one already billing (the time so far is booked at the old
-- rate).  Calling it again with the same rate does nothing.
CREATE FUNCTION credits._activate(project_id bigint, resource_id text, kind text,
                                  rate_per_hour credits.credits) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    active_state text := CASE kind WHEN 'instance' THEN 'running' ELSE 'available' END;
    at timestamptz := credits.now();
    r credits.resources;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_text('resource_id', resource_id, credits._max_id_chars(), nullable => false);
    PERFORM credits._require_positive('rate_per_hour', rate_per_hour);
    -- The account first, then the resource: the order every path locks them in (the periodic
    -- runs, the cut-off and the volume restore of a deposit), so none can deadlock with another.
    PERFORM credits._require_available_balance(project_id, kind);
    SELECT * INTO r FROM credits.resources x
     WHERE x.project_id = _activate.project_id AND x.resource_id = _activate.resource_id FOR UPDATE;
    -- Spending limits (62_limits.sql), for a call that starts billing or changes the rate.
    IF r.project_id IS NULL OR r.kind = kind AND (r.state = 'stopped' OR r.state = active_state
                                                  AND r.rate_per_hour <> rate_per_hour) THEN
        PERFORM credits._check_start_limits(project_id, resource_id, kind, rate_per_hour,
                                            CASE WHEN r.state = active_state THEN r.rate_per_hour END);
        -- The check acts on a budget reached since the last balance check; under on_budget
        -- 'stop' that stops the project's running instances, this one too: the stop stands,
        -- and a rate change of an instance it stopped does nothing more.
        IF r.state = active_state AND NOT EXISTS (
               SELECT FROM credits.resources x
                WHERE x.project_id = _activate.project_id AND x.resource_id = _activate.resource_id
                  AND x.state = active_state) THEN
            RETURN;
        END IF;
    END IF;

    IF r.project_id IS NULL THEN
        INSERT INTO credits.resources (project_id, resource_id, kind, state, rate_per_hour, state_since,
                                       accrued_until, created_at)
        VALUES (project_id, resource_id, kind, active_state, rate_per_hour, at,
                credits._billing_start(project_id, at), at)
        ON CONFLICT ON CONSTRAINT resources_pkey DO NOTHING;
        IF NOT FOUND THEN
            -- A concurrent call created it first (and has committed): act on its row.
            PERFORM credits._activate(project_id, resource_id, kind, rate_per_hour);
        END IF;
    ELSIF r.kind <> kind THEN
        RAISE EXCEPTION 'resource % of project % is %, not %', resource_id, project_id,
            CASE r.kind WHEN 'instance' THEN 'an instance' ELSE 'a volume' END,
            CASE kind WHEN 'instance' THEN 'an instance' ELSE 'a volume' END
            USING ERRCODE = 'wrong_object_type';
    ELSIF r.state = active_state THEN
        IF r.rate_per_hour <> rate_per_hour THEN
            PERFORM credits._book_usage(project_id, kind, resource_id, r.rate_per_hour, r.accrued_until, at);
            UPDATE credits.resources x SET rate_per_hour = _activate.rate_per_hour,
                                           accrued_until = credits._billing_start(_activate.project_id, at)
             WHERE x.project_id = _activate.project_id AND x.resource_id = _activate.resource_id;
        END IF;
    ELSIF r.state = 'stopped' THEN
        UPDATE credits.resources x
           SET state = 'running', rate_per_hour = _activate.rate_per_hour, state_since = at,
               accrued_until = credits._billing_start(_activate.project_id, at)
         WHERE x.project_id = _activate.project_id AND x.resource_id = _activate.resource_id;
    ELSE
        RAISE EXCEPTION '% % of project % is %', kind, resource_id, project_id, r.state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Terminated instances and deleted volumes cannot be used again; '
                           'inaccessible volumes come back when the balance is positive again.';
    END IF;
END $$;

-- Stops billing a resource (stop_instance, delete_volume): books its time up to now and moves
-- it to final_state.  Does nothing when it is not billing and already at rest.
CREATE FUNCTION credits._deactivate(project_id bigint, resource_id text, kind text, final_state text)
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := credits.now();
    r credits.resources;
BEGIN
    PERFORM credits._require_account(project_id);
    PERFORM credits._require_text('resource_id', resource_id, credits._max_id_chars(), nullable => false);
    -- The account first, then the resource (see credits._activate).  A deduction run holds the
    -- account until it commits; the booking below then starts after the hours it deducted.
    PERFORM FROM credits.accounts a WHERE a.project_id = _deactivate.project_id FOR SHARE;
    SELECT * INTO r FROM credits.resources x
     WHERE x.project_id = _deactivate.project_id AND x.resource_id = _deactivate.resource_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project % has no % %', project_id, kind, resource_id USING ERRCODE = 'no_data_found';
    ELSIF r.kind <> kind THEN
        RAISE EXCEPTION 'resource % of project % is %, not %', resource_id, project_id,
            CASE r.kind WHEN 'instance' THEN 'an instance' ELSE 'a volume' END,
            CASE kind WHEN 'instance' THEN 'an instance' ELSE 'a volume' END
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF r.accrued_until IS NOT NULL THEN
        PERFORM credits._book_usage(project_id, kind, resource_id, r.rate_per_hour, r.accrued_until, at);
    END IF;
    IF r.state IN ('running', 'available') OR (kind = 'volume' AND r.state = 'inaccessible') THEN
        UPDATE credits.resources x SET state = final_state, state_since = at, accrued_until = NULL
         WHERE x.project_id = _deactivate.project_id AND x.resource_id = _deactivate.resource_id;
    END IF;
END $$;

-- Starts (or restarts) an instance billed at rate_per_hour.
CREATE FUNCTION credits.start_instance(project_id bigint, resource_id text, rate_per_hour credits.credits)
    RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    RETURN credits._activate(project_id, resource_id, 'instance', rate_per_hour);

-- Stops a running instance; a stopped one may be started again.
CREATE FUNCTION credits.stop_instance(project_id bigint, resource_id text)
    RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    RETURN credits._deactivate(project_id, resource_id, 'instance', 'stopped');

-- Attaches a volume billed at rate_per_hour while it is accessible.
CREATE FUNCTION credits.attach_volume(project_id bigint, resource_id text, rate_per_hour credits.credits)
    RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    RETURN credits._activate(project_id, resource_id, 'volume', rate_per_hour);

-- Deletes a volume; its id cannot be used again.
CREATE FUNCTION credits.delete_volume(project_id bigint, resource_id text)
    RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp
    RETURN credits._deactivate(project_id, resource_id, 'volume', 'deleted');
