-- ---------------------------------------------------------------------------------------------
-- The periodic work: hourly deductions and the minute's balance checks.  pg_cron never replays
-- runs missed while the server was down, so each run catches up by itself, and each is safe to
-- call at any time, any number of times, concurrently: runs take one advisory lock and wait
-- for each other, and every (resource, hour) is completed and deducted exactly once (its row
-- is unique, and a project's hours before accounts.deducted_until are never booked again).
-- ---------------------------------------------------------------------------------------------

-- Waits for any other periodic run of this database to finish.
CREATE FUNCTION credits._lock_periodic_runs() RETURNS void
    LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(hashtext('credits periodic run')::bigint << 32) $$;

-- Deducts every usage hour before cur, oldest first per project, each written once, and
-- debits the accounts (src/deduction.c, which says how): of every due project, or of
-- only_project.  An account locked by another transaction is passed over: a later run catches
-- its hours up.  Returns the number of usage transactions completed.  The caller holds the
-- periodic-run lock.
CREATE FUNCTION credits._deduct_ended_hours(cur timestamptz, at timestamptz, only_project bigint DEFAULT NULL)
    RETURNS bigint AS 'MODULE_PATHNAME', 'credits_deduct_hours' LANGUAGE C;

-- The projects with usage to deduct before cur, in project order (src/deduction.c: the
-- deduction's own list).
CREATE FUNCTION credits._deduction_due(cur timestamptz) RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'credits_deduction_due' LANGUAGE C STRICT STABLE;

-- The projects whose periodic work failed, one row each while it fails: the run that failed
-- last, when, and its error.  A run that bills the project again deletes the row.
CREATE TABLE credits.billing_failures (
    project_id bigint PRIMARY KEY,
    at         timestamptz NOT NULL,
    run        text NOT NULL CHECK (run IN ('run_hourly_deductions', 'run_balance_checks')),
    sqlstate   text NOT NULL,
    message    text NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('credits.billing_failures', '');

CREATE VIEW credits.billing_errors AS
SELECT f.project_id, f.at, f.run, f.sqlstate, f.message FROM credits.billing_failures f;
COMMENT ON VIEW credits.billing_errors IS 'one row per project whose periodic work (run) failed, while it fails: when, and its SQLSTATE and message; the project is retried at every later run';

-- Records that run failed for project with an error (sqlstate, message).  The first failure
-- of a spell queues one billing_error event; later ones update the row.
CREATE FUNCTION credits._record_billing_error(project_id bigint, run text, sqlstate text, message text)
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    first_failure boolean;
BEGIN
    INSERT INTO credits.billing_failures AS f VALUES (project_id, credits.now(), run, sqlstate, message)
    ON CONFLICT ON CONSTRAINT billing_failures_pkey DO UPDATE
       SET at = excluded.at, run = excluded.run, sqlstate = excluded.sqlstate, message = excluded.message
    RETURNING f.xmax = 0 INTO first_failure;
    IF first_failure THEN
        PERFORM credits._enqueue_event(project_id, 'billing_error', NULL, NULL,
            jsonb_build_object('run', run, 'sqlstate', sqlstate, 'message', message, 'at', credits.now()));
    END IF;
END $$;

-- Deducts the hours before cur (credits._deduct_ended_hours): all due projects at once; when
-- that fails (one project's work raised, and with it the batch), project by project, each in
-- a subtransaction of its own, so that a project whose work raises is recorded in
-- credits.billing_errors and skipped while the others are billed.  (A lock that cannot be
-- had at once, 55P03, only passes the project over.)  Returns the number of usage
-- transactions completed and the projects that failed.
CREATE FUNCTION credits._deduct_isolated(cur timestamptz, at timestamptz, OUT completed bigint, OUT failed bigint[])
    LANGUAGE plpgsql AS $$
DECLARE
    p bigint;
    state text;
    msg text;
BEGIN
    failed := '{}';
    BEGIN
        completed := credits._deduct_ended_hours(cur, at);
        RETURN;
    EXCEPTION
        -- (the whole transaction's: no retry in it can succeed)
        WHEN serialization_failure OR deadlock_detected THEN RAISE;
        WHEN OTHERS THEN NULL;
    END;
    completed := 0;
    FOREACH p IN ARRAY credits._deduction_due(cur) LOOP
        BEGIN
            completed := completed + credits._deduct_ended_hours(cur, at, p);
        EXCEPTION
            WHEN serialization_failure OR deadlock_detected THEN RAISE;
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                IF state <> '55P03' THEN
                    PERFORM credits._record_billing_error(p, 'run_hourly_deductions', state, msg);
                    failed := failed || p;
                END IF;
        END;
    END LOOP;
END $$;

-- Completes and deducts every usage hour that has ended and is not yet deducted, oldest first,
-- and starts the auto-recharges that the new balances call for.  Returns the number of usage
-- transactions completed.  A project whose account is locked waits for a later run; one whose
-- work fails is skipped and listed in credits.billing_errors until a run bills it again.
-- (jit = off in both periodic runs: the row estimates of the hour segments are far too high,
-- and compiling the plans cost more than running them, about 1 s per run at 100,000 projects.)
CREATE FUNCTION credits.run_hourly_deductions() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
DECLARE
    at timestamptz;
    cur timestamptz;
    deducted record;
    due record;
    recharge_failed bigint[] := '{}';
BEGIN
    PERFORM credits._lock_periodic_runs();
    at := credits.now();
    cur := credits.hour_of(at);
    PERFORM credits._fold_usage_events(at);
    PERFORM credits._recount_late_usage();    -- spending totals (61_spending_controls.sql)
    PERFORM credits._unsum_late_usage();      -- usage summaries (61_usage_days.sql)
    SELECT * INTO deducted FROM credits._deduct_isolated(cur, at);
    PERFORM credits._expire_lots(cur, at);
    -- (the accrued usage of every project is worth computing only when one may recharge)
    IF EXISTS (SELECT FROM credits.auto_recharge r WHERE r.enabled AND r.armed) THEN
        SELECT * INTO due FROM credits._due_projects();
        SELECT a.failed INTO recharge_failed
          FROM credits._act_on_balances('run_hourly_deductions', at, '{}', '{}', due.recharge_ids,
                                        due.recharge_accrued, '{}') AS a;
    END IF;
    PERFORM credits._watch_spending(at);    -- spending controls (64_spending_checks.sql)
    -- (billed again: deducted up to cur, and nothing failed for it in this run)
    DELETE FROM credits.billing_failures f USING credits.accounts a
     WHERE f.run = 'run_hourly_deductions' AND a.project_id = f.project_id AND a.deducted_until >= cur
       AND f.project_id <> ALL (deducted.failed || recharge_failed);
    RETURN deducted.completed;
END $$;

-- The projects whose lots are not all alike: some active lot expires, pays only for some
-- kinds, or is partly held by a pending refund.
CREATE FUNCTION credits._special_projects() RETURNS SETOF bigint
    LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT DISTINCT l.project_id FROM credits.credit_lots l
     WHERE l.active AND (l.expires_at IS NOT NULL OR l.applies_to IS NOT NULL OR l.held > '0'::credits.credits);
END;

-- Usage not yet deducted, in total per project with any, as of credits.now().
CREATE VIEW credits.accumulating_by_project AS
SELECT u.project_id, -credits._usage_total(u.amount) AS accumulating
  FROM credits.usage_in_progress u GROUP BY u.project_id;

-- credits._due_projects, the periodic runs' one pass over every project, is in
-- 67_due_projects.sql: it reads the spending controls too.

-- The balance checks' work for the projects given, at time at: the projects of special_ids
-- (their lots not all alike) judged kind by kind (credits._enforce_lots); those of
-- used_up_ids (with their accrued usage, used_up_accrued) cut off one by one in project order
-- if their accrued usage has used up the balance (tested again on the locked row: a deposit
-- may have committed since); then the auto-recharges due among recharge_ids requested
-- (credits._start_auto_recharges).  An account locked by another transaction is passed over
-- (skipped) and left for a later run.  Returns the projects acted on and those skipped.
CREATE FUNCTION credits._cut_off_and_recharge(at timestamptz, used_up_ids bigint[], used_up_accrued credits.credits[],
                                              recharge_ids bigint[], recharge_accrued credits.credits[],
                                              special_ids bigint[], OUT acted bigint[], OUT skipped bigint[])
    LANGUAGE plpgsql AS $$
DECLARE
    c record;
    p bigint;
    locked bigint[] := '{}';
    cut_off bigint[] := '{}';
BEGIN
    skipped := '{}';
    FOREACH p IN ARRAY special_ids LOOP
        PERFORM FROM credits.accounts a WHERE a.project_id = p FOR NO KEY UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            skipped := skipped || p;
        ELSIF credits._enforce_lots(p, at) THEN
            cut_off := cut_off || p;
        END IF;
    END LOOP;
    FOR c IN SELECT u.project_id, u.accumulating
               FROM unnest(used_up_ids, used_up_accrued) AS u(project_id, accumulating)
               JOIN (SELECT a.project_id FROM credits.accounts a
                      WHERE a.project_id = ANY (used_up_ids) AND NOT a.depleted
                      ORDER BY a.project_id FOR NO KEY UPDATE SKIP LOCKED) AS l USING (project_id)
              ORDER BY u.project_id
    LOOP
        locked := locked || c.project_id;
        UPDATE credits.accounts a SET depleted = true
         WHERE a.project_id = c.project_id AND NOT a.depleted AND credits._used_up(a.balance, c.accumulating);
        IF FOUND THEN
            cut_off := cut_off || c.project_id;
        END IF;
    END LOOP;
    skipped := skipped || ARRAY(
        SELECT u.project_id FROM unnest(used_up_ids) AS u(project_id)
         WHERE NOT EXISTS (SELECT FROM unnest(locked) AS l(project_id) WHERE l.project_id = u.project_id)
           AND NOT EXISTS (SELECT FROM credits.accounts a WHERE a.project_id = u.project_id AND a.depleted));
    acted := ARRAY(SELECT unnest(cut_off) UNION SELECT unnest(credits._start_auto_recharges(recharge_ids, recharge_accrued)));
END $$;

-- credits._cut_off_and_recharge for all the projects given at once; when that fails (one
-- project's work raised, and with it the batch), project by project, each in a subtransaction
-- of its own: a project whose work raises is recorded in credits.billing_errors as a failure of
-- run and skipped.  (A lock that cannot be had at once, 55P03, only passes it over.)  Returns
-- the projects acted on, those that failed and those passed over.
CREATE FUNCTION credits._act_on_balances(run text, at timestamptz, used_up_ids bigint[], used_up_accrued credits.credits[],
                                         recharge_ids bigint[], recharge_accrued credits.credits[],
                                         special_ids bigint[],
                                         OUT acted bigint[], OUT failed bigint[], OUT skipped bigint[])
    LANGUAGE plpgsql AS $$
DECLARE
    c record;
    one record;
    state text;
    msg text;
BEGIN
    failed := '{}';
    BEGIN
        SELECT * INTO one
          FROM credits._cut_off_and_recharge(at, used_up_ids, used_up_accrued, recharge_ids, recharge_accrued, special_ids);
        acted := one.acted;
        skipped := one.skipped;
        RETURN;
    EXCEPTION
        -- (the whole transaction's: no retry in it can succeed)
        WHEN serialization_failure OR deadlock_detected THEN RAISE;
        WHEN OTHERS THEN NULL;
    END;
    acted := '{}';
    skipped := '{}';
    FOR c IN SELECT project_id, u.accrued AS used_up, r.accrued AS recharge, s.project_id IS NOT NULL AS special
               FROM unnest(used_up_ids, used_up_accrued) AS u(project_id, accrued)
               FULL JOIN unnest(recharge_ids, recharge_accrued) AS r(project_id, accrued) USING (project_id)
               FULL JOIN unnest(special_ids) AS s(project_id) USING (project_id)
              ORDER BY project_id
    LOOP
        BEGIN
            SELECT * INTO one FROM credits._cut_off_and_recharge(at,
                CASE WHEN c.used_up IS NULL THEN '{}' ELSE ARRAY[c.project_id] END,
                CASE WHEN c.used_up IS NULL THEN '{}' ELSE ARRAY[c.used_up] END,
                CASE WHEN c.recharge IS NULL THEN '{}' ELSE ARRAY[c.project_id] END,
                CASE WHEN c.recharge IS NULL THEN '{}' ELSE ARRAY[c.recharge] END,
                CASE WHEN c.special THEN ARRAY[c.project_id] ELSE '{}' END);
            acted := acted || one.acted;
            skipped := skipped || one.skipped;
        EXCEPTION
            WHEN serialization_failure OR deadlock_detected THEN RAISE;
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                IF state = '55P03' THEN
                    skipped := skipped || c.project_id;
                ELSE
                    PERFORM credits._record_billing_error(c.project_id, run, state, msg);
                    failed := failed || c.project_id;
                END IF;
        END;
    END LOOP;
END $$;

-- Cuts off every project whose accrued usage has used up its available balance (the balance
-- itself is still positive: deductions cut off the ones that reach zero), then starts the
-- auto-recharges that are due.  Returns the number of projects acted on (cut off, or
-- recharge requested, or both).  A project whose account is locked waits for a later run;
-- one whose work fails is skipped and listed in credits.billing_errors until a run bills it
-- again.
CREATE FUNCTION credits.run_balance_checks() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
DECLARE
    at timestamptz;
    due record;
    done record;
    watched bigint[];
    controlled bigint[] := '{}';
BEGIN
    PERFORM credits._lock_periodic_runs();
    at := credits.now();
    PERFORM credits._fold_usage_events(at);
    PERFORM credits._expire_lots(credits.hour_of(at), at);
    -- (the spending totals brought up to the deducted hours: the pass reads them)
    PERFORM credits._count_spending();
    -- Every list from one computation of the accrued usage (the cut-off books live usage into
    -- usage transactions, which leaves each project's total as it was).
    SELECT * INTO due FROM credits._due_projects();
    SELECT * INTO done
      FROM credits._act_on_balances('run_balance_checks', at, due.used_up_ids, due.used_up_accrued,
                                    due.recharge_ids, due.recharge_accrued, due.special_ids);
    -- (billed again: checked in this run without failing)
    DELETE FROM credits.billing_failures f
     WHERE f.run = 'run_balance_checks' AND f.project_id <> ALL (done.failed || done.skipped);
    -- Spending controls (64_spending_checks.sql): the watched projects the pass found due, and
    -- those just cut off or recharged (their position moved since the pass), acted on with their
    -- positions read again.  Then volume retention (65_volume_retention.sql).
    watched := ARRAY(SELECT unnest(due.spending_ids)
                     UNION
                     SELECT x FROM unnest(done.acted) AS x
                      WHERE EXISTS (SELECT FROM credits.spending_controls c WHERE c.project_id = x)
                     ORDER BY 1);
    IF cardinality(watched) > 0 THEN
        controlled := credits._act_on_spending(watched);
    END IF;
    controlled := controlled || credits._enforce_volume_retention(at);
    RETURN (SELECT count(*) FROM (SELECT unnest(done.acted) UNION SELECT unnest(controlled)) AS acted);
END $$;
