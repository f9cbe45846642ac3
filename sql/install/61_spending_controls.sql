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

-- Where each watched project stands now (credits.now()): its balance, usage accrued and not
-- yet deducted, available balance, burn rate (as balance_overview counts it), and the charges
-- (collected and uncollected: the exact accrual) of usage hours beginning in the current UTC
-- day and month: the completed ones (completed_*: spending_totals plus the hours deducted
-- since it was counted, read hour by hour through the usage index) and the accumulating ones.
-- A project_id filter reaches every part, so one project's row is read through its indexes;
-- unfiltered, the accrued usage and burn rates are computed once for all projects (a query
-- that reads neither leaves them out).
CREATE VIEW credits._spending_positions AS
SELECT c.project_id, a.balance,
       coalesce(ip.accumulating, '0'::credits.credits) AS accumulating,
       credits._available(a.balance, ip.accumulating) AS available_balance,
       coalesce(br.burn_rate, '0'::credits.credits) AS burn_rate,
       cc.completed_today + coalesce(ip.today, '0'::credits.credits) AS spent_today,
       cc.completed_this_month + coalesce(ip.this_month, '0'::credits.credits) AS spent_this_month,
       p.day_start, p.month_start, a.deducted_until, cc.completed_today, cc.completed_this_month
  FROM credits.spending_controls c
  JOIN credits.accounts a ON a.project_id = c.project_id
  JOIN credits.spending_totals s ON s.project_id = c.project_id
  CROSS JOIN (SELECT date_trunc('day', credits.now(), 'UTC') AS day_start,
                     date_trunc('month', credits.now(), 'UTC') AS month_start) AS p
  CROSS JOIN LATERAL (
      -- (the hours scanned are those of the month not in spending_totals; those of the day
      -- are among them)
      SELECT CASE WHEN s.day_start = p.day_start THEN s.day_spent ELSE '0'::credits.credits END
                 + coalesce(credits._usage_total(credits._accrued_amount(t.accrued_units))
                                FILTER (WHERE t.usage_hour >= p.day_start
                                          AND (t.usage_hour >= s.counted_until
                                               OR s.day_start IS DISTINCT FROM p.day_start)),
                            '0'::credits.credits) AS completed_today,
             CASE WHEN s.month_start = p.month_start THEN s.month_spent ELSE '0'::credits.credits END
                 + coalesce(credits._usage_total(credits._accrued_amount(t.accrued_units)),
                            '0'::credits.credits) AS completed_this_month
        FROM generate_series(CASE WHEN s.month_start = p.month_start
                                  THEN greatest(s.counted_until, p.month_start) ELSE p.month_start END,
                             a.deducted_until - interval '1 hour', interval '1 hour') AS h(usage_hour)
        JOIN credits.transactions t ON t.usage_hour = h.usage_hour AND t.project_id = c.project_id
       WHERE t.type = 'usage' AND t.status = 'completed') AS cc
  LEFT JOIN (SELECT u.project_id, -credits._usage_total(u.amount) AS accumulating,
                    -credits._usage_total(u.amount)
                        FILTER (WHERE u.usage_hour >= date_trunc('day', credits.now(), 'UTC')) AS today,
                    -credits._usage_total(u.amount)
                        FILTER (WHERE u.usage_hour >= date_trunc('month', credits.now(), 'UTC')) AS this_month
               FROM credits.usage_in_progress u GROUP BY u.project_id) AS ip ON ip.project_id = c.project_id
  LEFT JOIN (SELECT b.project_id, credits.burn_rate(b.amount, interval '1 hour') AS burn_rate
               FROM credits._burn_rate_inputs b GROUP BY b.project_id) AS br ON br.project_id = c.project_id;

-- Brings spending_totals up to each watched project's deducted hours and to the current UTC
-- day and month: only projects deducted since they were counted, or whose period changed,
-- are rewritten.  Called by the periodic runs, which hold the periodic-run lock; rows locked
-- by another transaction are left for the next run.
CREATE FUNCTION credits._count_spending() RETURNS void
    LANGUAGE sql AS $$
    WITH due AS (
        SELECT p.project_id, p.deducted_until, p.day_start, p.month_start,
               p.completed_today, p.completed_this_month
          FROM credits._spending_positions p
          JOIN credits.spending_totals s ON s.project_id = p.project_id
         WHERE p.deducted_until > s.counted_until
            OR s.day_start IS DISTINCT FROM p.day_start OR s.month_start IS DISTINCT FROM p.month_start),
    locked AS (
        SELECT s.project_id FROM credits.spending_totals s
         WHERE s.project_id IN (SELECT d.project_id FROM due d)
         ORDER BY s.project_id FOR UPDATE SKIP LOCKED)
    UPDATE credits.spending_totals s
       SET counted_until = d.deducted_until, day_start = d.day_start, day_spent = d.completed_today,
           month_start = d.month_start, month_spent = d.completed_this_month
      FROM due d
     WHERE s.project_id = d.project_id AND s.project_id IN (SELECT l.project_id FROM locked l);
$$;
