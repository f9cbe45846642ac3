-- ---------------------------------------------------------------------------------------------
-- Spending controls: the limits and alerts a project set (credits.configure_limits,
-- credits.configure_alerts), what they have already announced, and where each watched
-- project stands: available balance, burn rate, and the charges of the current UTC day and
-- month.  62_limits.sql refuses starts, 64_spending_checks.sql queues the events and stops
-- instances, 66_spending_overview.sql shows it.
-- ---------------------------------------------------------------------------------------------

-- One row per project with limits or alerts set (null: that limit or alert is off), and what
-- has been announced: the period whose budget_reached event is queued, and whether the
-- balance and the runway are below their alert lines since the last event about them.
CREATE TABLE credits.spending_controls (
    project_id      bigint PRIMARY KEY REFERENCES credits.accounts,
    max_burn_rate   credits.credits CHECK (max_burn_rate > '0'::credits.credits),
    min_runway      interval CHECK (min_runway > interval '0'),
    daily_budget    credits.credits CHECK (daily_budget > '0'::credits.credits),
    monthly_budget  credits.credits CHECK (monthly_budget > '0'::credits.credits),
    on_budget       text NOT NULL DEFAULT 'alert' CHECK (on_budget IN ('alert', 'stop')),
    below_balance   credits.credits CHECK (below_balance > '0'::credits.credits),
    below_runway    interval CHECK (below_runway > interval '0'),
    -- Start of the UTC day / month whose budget_reached event is queued (null: none yet).
    daily_reached   timestamptz,
    monthly_reached timestamptz,
    -- The alert lines crossed, as last announced (balance_low / runway_low queued).
    balance_low     boolean NOT NULL DEFAULT false,
    runway_low      boolean NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL
);

-- The completed charges of each watched project in its current UTC day and month, counted
-- up to counted_until (the project's accounts.deducted_until when counted): a budget check
-- then reads only the hours deducted since, not the whole month, for every project each
-- minute.  Kept apart from spending_controls so that refreshing it never locks a project's
-- controls.  Rows come and go with spending_controls.
CREATE TABLE credits.spending_totals (
    project_id    bigint PRIMARY KEY REFERENCES credits.accounts,
    counted_until timestamptz NOT NULL DEFAULT '-infinity',
    day_start     timestamptz,
    day_spent     credits.credits NOT NULL DEFAULT '0',
    month_start   timestamptz,
    month_spent   credits.credits NOT NULL DEFAULT '0'
) WITH (fillfactor = 50);

-- The completed charges (collected and uncollected: the exact accrual) of the usage hours of
-- each watched project among ids that begin in the current UTC day and month: spending_totals,
-- plus the hours deducted since it was counted, probed hour by hour in the usage index.  (A
-- set-returning SQL function, not strict: the planner inlines it.)
CREATE FUNCTION credits._completed_spending(ids bigint[])
    RETURNS TABLE (project_id bigint, day_start timestamptz, month_start timestamptz,
                   completed_today credits.credits, completed_this_month credits.credits)
    LANGUAGE sql STABLE
BEGIN ATOMIC
SELECT s.project_id, p.day_start, p.month_start,
       CASE WHEN s.day_start = p.day_start THEN s.day_spent ELSE '0'::credits.credits END
           + coalesce(h.day_charges, '0'::credits.credits) AS completed_today,
       CASE WHEN s.month_start = p.month_start THEN s.month_spent ELSE '0'::credits.credits END
           + coalesce(h.month_charges, '0'::credits.credits) AS completed_this_month
  FROM credits.spending_totals s
  JOIN credits.accounts sa ON sa.project_id = s.project_id
  CROSS JOIN (SELECT date_trunc('day', credits.now(), 'UTC') AS day_start,
                     date_trunc('month', credits.now(), 'UTC') AS month_start) AS p
  -- (the hours not in spending_totals yet: those of the month, among which the day's)
  CROSS JOIN LATERAL (
      SELECT credits._usage_total(credits._accrued_amount(t.accrued_units))
                 FILTER (WHERE t.usage_hour >= p.day_start
                           AND (t.usage_hour >= s.counted_until
                                OR s.day_start IS DISTINCT FROM p.day_start)) AS day_charges,
             credits._usage_total(credits._accrued_amount(t.accrued_units)) AS month_charges
        FROM generate_series(CASE WHEN s.month_start = p.month_start
                                  THEN greatest(s.counted_until, p.month_start) ELSE p.month_start END,
                             sa.deducted_until - interval '1 hour', interval '1 hour') AS g(usage_hour)
        -- (OFFSET 0: probed hour by hour, never joined to all the project's rows)
        CROSS JOIN LATERAL (SELECT t.usage_hour, t.accrued_units FROM credits.transactions t
                             WHERE t.usage_hour = g.usage_hour AND t.project_id = s.project_id
                               AND t.type = 'usage' AND t.status = 'completed' OFFSET 0) AS t) AS h
 WHERE s.project_id = ANY (ids);
END;

-- Usage not yet deducted, per project with any, as of credits.now(): in total, and of it the
-- charges of the hours beginning in the current UTC day and month, and the API usage of the
-- last ended hour (the open part of the burn rate).  One grouping of credits.usage_in_progress
-- for the balance check's pass over every project (credits._due_projects) and for the position
-- of the projects given (credits._spending_positions: a filter on project_id reaches the
-- indexes).  (The hours compared with are scalar subqueries, computed once per statement
-- rather than once per row.)
CREATE VIEW credits._accrued_by_project AS
SELECT u.project_id, -credits._usage_total(u.amount) AS accumulating,
       -credits._usage_total(u.amount)
           FILTER (WHERE u.usage_hour >= (SELECT date_trunc('day', credits.now(), 'UTC'))) AS today,
       -credits._usage_total(u.amount)
           FILTER (WHERE u.usage_hour >= (SELECT date_trunc('month', credits.now(), 'UTC'))) AS this_month,
       -credits._usage_total(u.amount)
           FILTER (WHERE u.usage_hour = (SELECT credits.hour_of(credits.now()) - interval '1 hour')
                     AND NOT EXISTS (SELECT FROM credits.resources r
                                      WHERE r.project_id = u.project_id AND r.resource_id = u.resource_id)) AS api_last_hour
  FROM credits.usage_in_progress u
 GROUP BY u.project_id;

-- Whether a project's spending_totals row s counts every hour deducted before deducted_until
-- (its account's) and is of the UTC day and month beginning at day_start and month_start (the
-- current ones): then its day_spent and month_spent are what the project's completed hours
-- charged in them.
CREATE FUNCTION credits._totals_current(s credits.spending_totals, deducted_until timestamptz,
                                        day_start timestamptz, month_start timestamptz) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    RETURN coalesce(s.counted_until >= deducted_until AND s.day_start = day_start
                    AND s.month_start = month_start, false);

-- Where each watched project among ids stands now (credits.now()): its balance, usage accrued
-- and not yet deducted, available balance, burn rate (as balance_overview counts it), and the
-- charges (collected and uncollected: the exact accrual) of usage hours beginning in the
-- current UTC day and month: the completed ones (completed_*: spending_totals plus the hours
-- deducted since it was counted, probed hour by hour in the usage index) and the accumulating
-- ones.  ids reaches every part as project_id = ANY (ids), so one project (ARRAY[p]) is read
-- through its indexes, and the periodic runs read the watched projects only, each part once
-- for all of them.  (A set-returning SQL function, not strict: the planner inlines it.)
CREATE FUNCTION credits._spending_positions(ids bigint[])
    RETURNS TABLE (project_id bigint, balance credits.credits, accumulating credits.credits,
                   available_balance credits.credits, burn_rate credits.credits,
                   spent_today credits.credits, spent_this_month credits.credits,
                   day_start timestamptz, month_start timestamptz, deducted_until timestamptz,
                   completed_today credits.credits, completed_this_month credits.credits,
                   lots_alike boolean)
    LANGUAGE sql STABLE
BEGIN ATOMIC
SELECT c.project_id, a.balance,
       coalesce(ip.accumulating, '0'::credits.credits) AS accumulating,
       -- (as balance_overview: the lots' rule when they are not all alike)
       CASE WHEN lk.alike THEN credits._available(a.balance, ip.accumulating)
            ELSE credits._lots_available(c.project_id) END AS available_balance,
       -- (the two parts added as the burn-rate aggregate adds, clamped to the type's range)
       credits._burn_rate_combine(coalesce(br.burn_rate, '0'::credits.credits),
                                  coalesce(ip.api_last_hour, '0'::credits.credits)) AS burn_rate,
       cc.completed_today + coalesce(ip.today, '0'::credits.credits) AS spent_today,
       cc.completed_this_month + coalesce(ip.this_month, '0'::credits.credits) AS spent_this_month,
       cc.day_start, cc.month_start, a.deducted_until, cc.completed_today, cc.completed_this_month,
       lk.alike AS lots_alike
  FROM credits.spending_controls c
  JOIN credits.accounts a ON a.project_id = c.project_id
  CROSS JOIN LATERAL (
      SELECT NOT EXISTS (SELECT FROM credits.credit_lots l
                          WHERE l.project_id = c.project_id AND l.active
                            AND (l.expires_at IS NOT NULL OR l.applies_to IS NOT NULL
                                 OR l.held > '0'::credits.credits)) AS alike) AS lk
  JOIN credits._completed_spending(ids) AS cc ON cc.project_id = c.project_id
  LEFT JOIN (SELECT x.* FROM credits._accrued_by_project x WHERE x.project_id = ANY (ids)) AS ip
         ON ip.project_id = c.project_id
  -- (the rest of credits._burn_rate_inputs: the rates, and the deducted API usage of the last
  -- ended hour)
  LEFT JOIN (SELECT b.project_id, credits.burn_rate(b.amount, interval '1 hour') AS burn_rate
               FROM (SELECT r.project_id, r.rate_per_hour AS amount
                       FROM credits.resources r
                      WHERE r.state IN ('running', 'available') AND r.project_id = ANY (ids)
                     UNION ALL
                     SELECT t.project_id, t.uncollected - t.amount
                       FROM credits.transactions t
                      WHERE t.type = 'usage' AND t.status = 'completed' AND t.project_id = ANY (ids)
                        AND t.usage_hour = credits.hour_of(credits.now()) - interval '1 hour'
                        AND NOT EXISTS (SELECT FROM credits.resources r
                                         WHERE r.project_id = t.project_id AND r.resource_id = t.resource_id)) AS b
              GROUP BY b.project_id) AS br ON br.project_id = c.project_id
 WHERE c.project_id = ANY (ids);
END;

-- The watched projects' ids, in order: what the periodic runs pass to _spending_positions.
CREATE FUNCTION credits._watched_projects() RETURNS bigint[]
    LANGUAGE sql STABLE
    RETURN ARRAY(SELECT c.project_id FROM credits.spending_controls c ORDER BY c.project_id);

-- Has every project whose usage_rollup holds API usage for an hour its spending_totals already
-- counted counted again from the start of the month.  (A call that committed after its hour
-- was deducted, for a product with no usage in that hour, is charged in that hour: the next
-- deduction completes an hour the totals had passed.  Rare; a recount reads the project's
-- month once.)  Called after the fold and before the deduction, and by _count_spending.
CREATE FUNCTION credits._recount_late_usage() RETURNS void
    LANGUAGE sql AS $$
    UPDATE credits.spending_totals s SET counted_until = '-infinity', day_start = NULL, month_start = NULL
     WHERE s.project_id IN (SELECT u.project_id FROM credits.usage_rollup u
                              JOIN credits.spending_totals t ON t.project_id = u.project_id
                             WHERE u.usage_hour < t.counted_until);
$$;

-- Brings spending_totals up to each watched project's deducted hours and to the current UTC
-- day and month: only the rows not current (credits._totals_current) are counted again and
-- rewritten.  Their ids are written into the statement as a constant, so that each scan tests
-- them through a hash (as a parameter an array is searched element by element, for every row).
-- Called by the periodic runs, which hold the periodic-run lock; rows locked by another
-- transaction are left for the next run.
CREATE FUNCTION credits._count_spending() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    stale bigint[];
BEGIN
    PERFORM credits._recount_late_usage();
    stale := ARRAY(SELECT s.project_id FROM credits.spending_totals s
                     JOIN credits.accounts a ON a.project_id = s.project_id
                    WHERE NOT credits._totals_current(s, a.deducted_until,
                                                      (SELECT date_trunc('day', credits.now(), 'UTC')),
                                                      (SELECT date_trunc('month', credits.now(), 'UTC')))
                    ORDER BY s.project_id);
    IF cardinality(stale) = 0 THEN
        RETURN;
    END IF;
    EXECUTE format($count$
    WITH due AS (
        SELECT p.project_id, a.deducted_until, p.day_start, p.month_start,
               p.completed_today, p.completed_this_month
          FROM credits._completed_spending(%L::bigint[]) p
          JOIN credits.accounts a ON a.project_id = p.project_id),
    locked AS (
        SELECT s.project_id FROM credits.spending_totals s
         WHERE s.project_id IN (SELECT d.project_id FROM due d)
         ORDER BY s.project_id FOR UPDATE SKIP LOCKED)
    UPDATE credits.spending_totals s
       SET counted_until = d.deducted_until, day_start = d.day_start, day_spent = d.completed_today,
           month_start = d.month_start, month_spent = d.completed_this_month
      FROM due d
     WHERE s.project_id = d.project_id AND s.project_id IN (SELECT l.project_id FROM locked l)
    $count$, stale);
END $$;
