-- ---------------------------------------------------------------------------------------------
-- The periodic work: hourly deductions and the minute's balance checks.  pg_cron never replays
-- runs missed while the server was down, so each run catches up by itself, and each is safe to
-- call at any time, any number of times, concurrently: runs take one advisory lock and wait
-- for each other, and every (resource, hour) moves accumulating → completed exactly once.
-- ---------------------------------------------------------------------------------------------

-- Waits for any other periodic run of this database to finish.
CREATE FUNCTION credits._lock_periodic_runs() RETURNS void
    LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(hashtext('credits periodic run')::bigint << 32) $$;

-- Locks, in project order, the accounts this deduction run will debit: those with a resource
-- billing since before cur or a usage hour before cur not yet deducted.  Taking them before
-- any resource keeps the one lock order account → resource of every other path (start_instance,
-- the balance checks' cut-off, a deposit's volume restore), so none can deadlock with the run.
CREATE FUNCTION credits._lock_due_accounts(cur timestamptz) RETURNS bigint
    LANGUAGE sql AS $$
    SELECT count(*) FROM (
        SELECT a.project_id FROM credits.accounts a
         WHERE a.project_id IN (SELECT r.project_id FROM credits.resources r WHERE r.accrued_until < cur
                                UNION
                                SELECT t.project_id FROM credits.transactions t
                                 WHERE t.status = 'accumulating' AND t.usage_hour < cur)
         ORDER BY a.project_id
           FOR NO KEY UPDATE) AS locked;
$$;

-- Deducts every usage hour before cur, oldest first per project, each written once: the
-- billing resources' time in those hours (from their booking clock to cur) merged with the
-- hours already booked as accumulating (stops, restarts, rate changes, API usage).  An hour
-- that had no row is inserted completed; one that had is completed in place.  A project whose
-- balance does not cover its hours pays them oldest first and the first it cannot pay in full
-- takes exactly what is left, the rest recorded as uncollected; the balance lands on zero
-- and the zero-balance trigger cuts the project off.  Each project's billing clock
-- (accounts.deducted_until) then stands at cur.  Returns the number of usage transactions
-- completed.  The caller holds the periodic lock and the accounts (credits._lock_due_accounts).
-- (Hash joins only: the statistics know nothing of the hours about to be written, and left
-- alone the planner nested-loops them, which is quadratic.  work_mem: the hours of a run are
-- sorted and kept in memory once, a million of them in about 250 MB.)
CREATE FUNCTION credits._deduct_ended_hours(cur timestamptz, at timestamptz) RETURNS bigint
    LANGUAGE plpgsql SET enable_nestloop = off SET enable_mergejoin = off SET work_mem = '256MB' AS $$
DECLARE
    stored bigint;
    updated bigint;
    completed bigint;
BEGIN
    WITH ended AS (
        -- time in ended hours of resources still billing, not booked yet
        SELECT r.project_id, r.resource_id, r.kind, s.usage_hour, s.units
          FROM credits.resources r
          JOIN credits.accounts a ON a.project_id = r.project_id,
               LATERAL credits._hour_segments(r.rate_per_hour, greatest(r.accrued_until, a.deducted_until), cur) AS s
         WHERE r.accrued_until < cur),
    booked AS (
        SELECT t.transaction_id, t.project_id, t.resource_id, t.usage_hour, t.description, t.accrued_units
          FROM credits.transactions t
         WHERE t.status = 'accumulating' AND t.usage_hour < cur),
    hours AS (
        -- one row per (resource, hour) to deduct; an hour without a row gets its id here
        SELECT coalesce(b.transaction_id, nextval('credits.transactions_transaction_id_seq')) AS transaction_id,
               b.transaction_id IS NULL AS is_new, b.accrued_units AS booked_units,
               coalesce(b.project_id, e.project_id) AS project_id,
               coalesce(b.resource_id, e.resource_id) AS resource_id,
               coalesce(b.usage_hour, e.usage_hour) AS usage_hour,
               coalesce(b.description, credits._describe(e.kind, e.resource_id)) AS description,
               coalesce(b.accrued_units, 0) + coalesce(e.units, 0) AS units,
               credits._accrued_amount(coalesce(b.accrued_units, 0) + coalesce(e.units, 0)) AS charge
          FROM booked b
          FULL JOIN ended e ON e.project_id = b.project_id AND e.usage_hour = b.usage_hour
                           AND e.resource_id = b.resource_id),
    running AS MATERIALIZED (
        -- each hour with its project's balance, the project's total and the running total,
        -- oldest first (one sort serves both sums)
        SELECT h.*, a.balance, sum(h.charge) OVER per_project AS project_charge,
               sum(h.charge) OVER oldest_first AS through
          FROM hours h JOIN credits.accounts a USING (project_id)
        WINDOW per_project AS (PARTITION BY h.project_id),
               oldest_first AS (per_project ORDER BY h.usage_hour, h.transaction_id)),
    settled AS (
        -- what the balance leaves uncollected: nothing, unless the project's hours exceed it;
        -- then the hour it runs out in pays what is left, and later hours pay nothing
        SELECT r.*,
               CASE WHEN r.project_charge <= r.balance THEN '0'::credits.credits
                    ELSE r.charge - greatest('0'::credits.credits,
                                             least(r.charge, r.balance - (r.through - r.charge)))
               END AS uncollected
          FROM running r),
    debits AS (
        SELECT DISTINCT r.project_id, r.project_charge AS charge FROM running r),
    inserted AS (
        INSERT INTO credits.transactions (transaction_id, project_id, type, status, amount, uncollected,
                                          created_at, description, resource_id, usage_hour, accrued_units,
                                          completed_at)
        SELECT s.transaction_id, s.project_id, 'usage', 'completed', -s.charge, s.uncollected,
               s.usage_hour, s.description, s.resource_id, s.usage_hour, s.units, at
          FROM settled s WHERE s.is_new),
    done AS (
        UPDATE credits.transactions t
           SET status = 'completed', completed_at = at, accrued_units = s.units, amount = -s.charge,
               uncollected = s.uncollected
          FROM settled s
         WHERE NOT s.is_new AND t.transaction_id = s.transaction_id
           AND t.status = 'accumulating' AND t.usage_hour < cur AND t.accrued_units = s.booked_units
        RETURNING 1),
    debited AS (
        -- (the project's clock moves in the same update: a cut-off it causes books from cur on)
        UPDATE credits.accounts a
           SET balance = a.balance - least(a.balance, d.charge), deducted_until = greatest(a.deducted_until, cur)
          FROM debits d
         WHERE a.project_id = d.project_id)
    -- (data-modifying WITH parts run to completion whether or not they are read)
    SELECT (SELECT count(*) FROM running WHERE NOT is_new), (SELECT count(*) FROM done), (SELECT count(*) FROM running)
      INTO stored, updated, completed;

    IF updated <> stored THEN
        -- A booked hour changed under the run (it should not: its writers hold the account the
        -- run locked first).  Undo everything; the next run starts over.
        RAISE EXCEPTION 'credits: % of % booked usage hours changed during the deduction run',
            stored - updated, stored USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN completed;
END $$;

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
    PERFORM credits._lock_due_accounts(cur);
    completed := credits._deduct_ended_hours(cur, at);
    -- (the accrued usage of every project is worth computing only when one may recharge)
    IF EXISTS (SELECT FROM credits.auto_recharge r WHERE r.enabled AND r.armed) THEN
        SELECT * INTO due FROM credits._due_projects();
        PERFORM credits._start_auto_recharges(due.recharge_ids, due.recharge_accrued);
    END IF;
    RETURN completed;
END $$;

-- Usage not yet deducted, in total per project with any, as of credits.now().
CREATE VIEW credits.accumulating_by_project AS
SELECT u.project_id, -sum(u.amount) AS accumulating
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
                                      OUT recharge_ids bigint[], OUT recharge_accrued credits.credits[])
    LANGUAGE sql STABLE
    SET work_mem = '64MB' SET enable_hashagg = off SET enable_nestloop = off
BEGIN ATOMIC
    WITH positions AS (
        SELECT a.project_id, a.balance, a.depleted, u.accumulating,
               coalesce(u.accumulating, '0'::credits.credits) AS accrued,
               coalesce(r.enabled AND r.armed, false) AS recharging, r.threshold
          FROM credits.accounts a
          LEFT JOIN credits.accumulating_by_project u ON u.project_id = a.project_id
          LEFT JOIN credits.auto_recharge r ON r.project_id = a.project_id
         WHERE u.project_id IS NOT NULL OR (r.enabled AND r.armed)),
    flagged AS (
        SELECT p.project_id, p.accrued,
               NOT p.depleted AND p.balance <= p.accumulating AS used_up,
               p.recharging AND greatest(p.balance - p.accrued, '0'::credits.credits) < p.threshold AS recharge
          FROM positions p)
    SELECT coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.used_up), '{}'),
           coalesce(array_agg(f.project_id ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}'),
           coalesce(array_agg(f.accrued ORDER BY f.project_id) FILTER (WHERE f.recharge), '{}')
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
BEGIN
    PERFORM credits._lock_periodic_runs();
    at := credits.now();
    PERFORM credits._fold_usage_events(at);
    -- Both lists from one computation of the accrued usage (the cut-off books live usage into
    -- usage transactions, which leaves each project's total as it was).
    SELECT * INTO due FROM credits._due_projects();

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
    SELECT coalesce(array_agg(f.project_id), '{}') INTO cut_off FROM flagged f;

    recharged := credits._start_auto_recharges(due.recharge_ids, due.recharge_accrued);
    RETURN (SELECT count(*) FROM (SELECT unnest(cut_off) UNION SELECT unnest(recharged)) AS acted);
END $$;
