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
-- debits the accounts (src/deduction.c, which says how).  Returns the number of usage
-- transactions completed.  The caller holds the periodic-run lock.
CREATE FUNCTION credits._deduct_ended_hours(cur timestamptz, at timestamptz) RETURNS bigint
    AS 'MODULE_PATHNAME', 'credits_deduct_hours' LANGUAGE C STRICT;

-- Completes and deducts every usage hour that has ended and is not yet deducted, oldest first,
-- and starts the auto-recharges that the new balances call for.  Returns the number of usage
-- transactions completed.
-- (jit = off in both periodic runs: the row estimates of the hour segments are far too high,
-- and compiling the plans cost more than running them, about 1 s per run at 100,000 projects.)
CREATE FUNCTION credits.run_hourly_deductions() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
DECLARE
    at timestamptz;
    cur timestamptz;
    completed bigint;
    due record;
BEGIN
    PERFORM credits._lock_periodic_runs();
    at := credits.now();
    cur := credits.hour_of(at);
    PERFORM credits._fold_usage_events(at);
    completed := credits._deduct_ended_hours(cur, at);
    PERFORM credits._expire_lots(cur, at);
    -- (the accrued usage of every project is worth computing only when one may recharge)
    IF EXISTS (SELECT FROM credits.auto_recharge r WHERE r.enabled AND r.armed) THEN
        SELECT * INTO due FROM credits._due_projects();
        PERFORM credits._start_auto_recharges(due.recharge_ids, due.recharge_accrued);
    END IF;
    PERFORM credits._watch_spending(at);    -- spending controls (64_spending_checks.sql)
    RETURN completed;
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

-- The projects a periodic run may have to act on, found in one pass over the accounts with
-- their usage accrued and not yet deducted (the costly part, computed once per run): those
-- not cut off whose accrued usage has used up the balance, and those whose armed auto-recharge
-- finds the available balance below its threshold.  Each list comes with the accrued usage of
-- its projects, in project order.  (BEGIN ATOMIC: bound at install time, whatever the
-- caller's search_path.  The planner expects 1000 hour segments per resource and 200
-- projects, so left alone it nested-loops 100,000 index probes into accounts and sizes a
-- hash table for millions of groups; sorting in memory and no nested loops take a third of
-- the time at 100,000 projects.)
CREATE FUNCTION credits._due_projects(OUT used_up_ids bigint[], OUT used_up_accrued credits.credits[],
                                      OUT recharge_ids bigint[], OUT recharge_accrued credits.credits[],
                                      OUT special_ids bigint[])
    LANGUAGE sql STABLE
    SET work_mem = '64MB' SET enable_hashagg = off SET enable_nestloop = off
BEGIN ATOMIC
    WITH positions AS (
        SELECT a.project_id, a.balance, a.depleted, u.accumulating,
               coalesce(u.accumulating, '0'::credits.credits) AS accrued,
               coalesce(r.enabled AND r.armed, false) AS recharging, r.threshold,
               s.project_id IS NOT NULL AS special, s.for_instances, s.for_volumes
          FROM credits.accounts a
          LEFT JOIN credits.accumulating_by_project u ON u.project_id = a.project_id
          LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
          LEFT JOIN (SELECT l.project_id,
                            coalesce(sum(l.remaining - l.held)
                                         FILTER (WHERE (credits._kind_mask(l.applies_to) & 1) <> 0
                                                   AND (l.expires_at IS NULL OR l.expires_at > credits.hour_of(credits.now()))),
                                     '0'::credits.credits) AS for_instances,
                            coalesce(sum(l.remaining - l.held)
                                         FILTER (WHERE (credits._kind_mask(l.applies_to) & 2) <> 0
                                                   AND (l.expires_at IS NULL OR l.expires_at > credits.hour_of(credits.now()))),
                                     '0'::credits.credits) AS for_volumes
                       FROM credits.credit_lots l
                      WHERE l.active AND l.project_id IN (SELECT x FROM credits._special_projects() AS x)
                      GROUP BY l.project_id) AS s ON s.project_id = a.project_id
         WHERE u.project_id IS NOT NULL OR (r.enabled AND r.armed)),
    -- (a project whose lots are not all alike: what it can spend is what its lots have left,
    -- given as the accrued usage that leaves that much of the balance; credits._enforce_lots
    -- judges its cut-off)
    standing AS (
        SELECT p.*,
               CASE WHEN p.special AND p.recharging
                    THEN p.balance - credits._spendable(p.project_id, 7, credits.now())
                    ELSE p.accrued END AS effective_accrued
          FROM positions p),
    flagged AS (
        SELECT p.project_id, p.effective_accrued AS accrued,
               NOT p.special AND NOT p.depleted AND p.balance <= p.accumulating AS used_up,
               p.recharging AND credits._available(p.balance, p.effective_accrued) < p.threshold AS recharge,
               -- (its lots for a kind cannot all be left over when the accrued usage, whatever
               -- its kind, is at least what they hold)
               p.special AND (p.depleted OR p.for_instances <= p.accrued OR p.for_volumes <= p.accrued) AS judge
          FROM standing p)
    SELECT coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.judge), '{}')
      FROM flagged f;
END;

-- Cuts off every project whose accrued usage has used up its available balance (the balance
-- itself is still positive: deductions cut off the ones that reach zero), then starts the
-- auto-recharges that are due.  Returns the number of projects acted on (cut off, or
-- recharge requested, or both).
CREATE FUNCTION credits.run_balance_checks() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, credits, pg_temp SET jit = off AS $$
DECLARE
    at timestamptz;
    due record;
    cut_off bigint[];
    recharged bigint[];
    controlled bigint[];
BEGIN
    PERFORM credits._lock_periodic_runs();
    at := credits.now();
    PERFORM credits._fold_usage_events(at);
    PERFORM credits._expire_lots(credits.hour_of(at), at);
    -- Both lists from one computation of the accrued usage (the cut-off books live usage into
    -- usage transactions, which leaves each project's total as it was).
    SELECT * INTO due FROM credits._due_projects();
    -- Projects whose lots are not all alike are judged kind by kind, lot by lot.
    SELECT coalesce(array_agg(l.project_id), '{}') INTO cut_off
      FROM unnest(due.special_ids) AS l(project_id)
     WHERE credits._enforce_lots(l.project_id, at);

    WITH used_up AS (
        SELECT u.project_id, u.accumulating
          FROM unnest(due.used_up_ids, due.used_up_accrued) AS u(project_id, accumulating)),
    flagged AS (
        -- The balance is tested again here: when a deposit committed after this statement's
        -- snapshot, the UPDATE re-evaluates its WHERE on the new row and must see the deposit.
        UPDATE credits.accounts a SET depleted = true
          FROM used_up WHERE a.project_id = used_up.project_id AND NOT a.depleted
                         AND a.balance <= used_up.accumulating
        RETURNING a.project_id)
    SELECT cut_off || coalesce(array_agg(f.project_id), '{}') INTO cut_off FROM flagged f;

    recharged := credits._start_auto_recharges(due.recharge_ids, due.recharge_accrued);
    -- Spending controls and volume retention (64_spending_checks.sql, 65_volume_retention.sql).
    controlled := credits._watch_spending(at) || credits._enforce_volume_retention(at);
    RETURN (SELECT count(*) FROM (SELECT unnest(cut_off) UNION SELECT unnest(recharged)
                                  UNION SELECT unnest(controlled)) AS acted);
END $$;
