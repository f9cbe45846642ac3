\set ECHO none
\ir test/sql/helpers.sql
\ir test/sql/metering_helpers.sql
\set ECHO all
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- Spending limits (credits.configure_limits): max_burn_rate and min_runway refuse starts,
-- daily and monthly budgets alert or stop, across a day and a month boundary; bad input.
-- Projects 8000-8099, August-September 2026.

-- The spending-control events of project p, oldest first.
CREATE FUNCTION pg_temp.events(p bigint) RETURNS TABLE (kind text, resource_id text, payload jsonb)
    LANGUAGE sql AS $$
    SELECT e.kind, e.resource_id, e.payload - 'at' FROM credits.events e
     WHERE e.project_id = p AND e.kind NOT IN ('charge_requested') ORDER BY e.event_id;
$$;
-- The project's row of spending_overview.
CREATE FUNCTION pg_temp.overview(p bigint) RETURNS TABLE (daily_budget credits, spent_today credits,
        monthly_budget credits, spent_this_month credits, on_budget text, budget_reached boolean, alert_state text)
    LANGUAGE sql AS $$
    SELECT o.daily_budget, o.spent_today, o.monthly_budget, o.spent_this_month, o.on_budget, o.budget_reached,
           o.alert_state
      FROM credits.spending_overview o WHERE o.project_id = p;
$$;

--
-- Bad input: a clear SQLSTATE each, and nothing written.
--
SET credits.clock = '2026-08-01 10:00+00';
SELECT pg_temp.funded(8001, '100.00');
SELECT pg_temp.ledger_state() || (SELECT count(*) FROM credits.spending_controls)::text AS before \gset
SELECT pg_temp.fails(stmt) AS result, stmt
  FROM unnest(ARRAY[
    $$SELECT credits.configure_limits(8001, max_burn_rate => '0')$$,
    $$SELECT credits.configure_limits(8001, max_burn_rate => '-1.00')$$,
    $$SELECT credits.configure_limits(8001, min_runway => '-1 hour')$$,
    $$SELECT credits.configure_limits(8001, min_runway => '0')$$,
    $$SELECT credits.configure_limits(8001, min_runway => '1 day -25 hours')$$,
    $$SELECT credits.configure_limits(8001, daily_budget => '0')$$,
    $$SELECT credits.configure_limits(8001, monthly_budget => '-5')$$,
    $$SELECT credits.configure_limits(8001, daily_budget => '10', on_budget => 'pause')$$,
    $$SELECT credits.configure_limits(8001, daily_budget => '10', on_budget => NULL)$$,
    $$SELECT credits.configure_limits(8999, max_burn_rate => '5')$$,
    $$SELECT credits.configure_limits(NULL, max_burn_rate => '5')$$,
    $$SELECT credits.configure_alerts(8001, below_balance => '0')$$,
    $$SELECT credits.configure_alerts(8001, below_balance => '-3')$$,
    $$SELECT credits.configure_alerts(8001, below_runway => '-5 minutes')$$,
    $$SELECT credits.configure_alerts(8999, below_balance => '5')$$]) AS stmt;
-- Only credits_app (and the owner) may change them.
SELECT r AS role, pg_temp.fails(format('SET LOCAL ROLE %I; SELECT credits.configure_limits(8001, max_burn_rate => ''5'')', r)) AS limits,
       pg_temp.fails(format('SET LOCAL ROLE %I; SELECT credits.configure_alerts(8001, below_balance => ''5'')', r)) AS alerts
  FROM unnest(ARRAY['credits_reader', 'credits_worker']) AS r;
RESET ROLE;
SELECT pg_temp.ledger_state() || (SELECT count(*) FROM credits.spending_controls)::text = :'before' AS nothing_written;
-- All off: no row.
SELECT credits.configure_limits(8001);
SELECT count(*) AS rows FROM credits.spending_overview WHERE project_id = 8001;

--
-- max_burn_rate: the rates of running instances and accessible volumes, with the new one,
-- may not exceed it (API usage does not count).  A refused call writes nothing; a call that
-- lowers a rate is never refused.
--
SELECT pg_temp.funded(8002, '100.00');
SELECT credits.configure_limits(8002, max_burn_rate => '5.00');
SELECT credits.start_instance(8002, 'gpu-1', '3.00'), credits.attach_volume(8002, 'vol-1', '1.00');
SELECT credits.record_usage(8002, 'api:chat', '50.00');
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.fails(stmt) AS result, stmt
  FROM unnest(ARRAY[
    $$SELECT credits.start_instance(8002, 'gpu-2', '1.000001')$$,   -- a new instance: 5.000001
    $$SELECT credits.attach_volume(8002, 'vol-2', '2.00')$$,        -- a new volume
    $$SELECT credits.start_instance(8002, 'gpu-1', '4.50')$$]) AS stmt;  -- a rate change
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT credits.start_instance(8002, 'gpu-2', '1.00');        -- exactly 5.00: allowed
SELECT credits.configure_limits(8002, max_burn_rate => '4.00');
SELECT credits.start_instance(8002, 'gpu-1', '2.50');        -- lower: allowed though 4.50 > 4.00
SELECT credits.stop_instance(8002, 'gpu-2');
SELECT pg_temp.fails($$SELECT credits.start_instance(8002, 'gpu-2', '1.00')$$) AS restart;  -- 4.50 again
SELECT credits.start_instance(8002, 'gpu-2', '0.50');        -- a restart at 4.00: allowed
SELECT resource_id, state, rate_per_hour FROM credits.resource_overview WHERE project_id = 8002 ORDER BY 1;

--
-- min_runway: the available balance must cover the burn rate with the new resource (rates
-- plus the API rate that burn_rate counts) for min_runway.
--
SET credits.clock = '2026-08-01 10:00+00';
SELECT pg_temp.funded(8003, '20.00');
SELECT credits.record_usage(8003, 'api:chat', '1.00');     -- the API rate of hour 10
SET credits.clock = '2026-08-01 11:00+00';
SELECT pg_temp.deduct(8003, 8003);
SELECT credits.configure_limits(8003, min_runway => '4 hours');
SELECT available_balance, burn_rate FROM credits.balance_overview WHERE project_id = 8003;
-- 19.00 available; 1.00 API + 3.75 = 4.75 per hour lasts exactly 4 hours.
SELECT credits.start_instance(8003, 'gpu-1', '3.75');
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.fails(stmt) AS result, stmt
  FROM unnest(ARRAY[
    $$SELECT credits.attach_volume(8003, 'vol-1', '0.01')$$,
    $$SELECT credits.start_instance(8003, 'gpu-1', '3.76')$$]) AS stmt;
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
SELECT credits.start_instance(8003, 'gpu-1', '2.00');        -- lower: allowed
SELECT credits.configure_limits(8003);                       -- off: anything goes
SELECT credits.attach_volume(8003, 'vol-1', '5.00');

--
-- Daily budget with on_budget 'alert', across a day boundary: one budget_reached per day.
-- Spent counts collected and uncollected charges, completed and accumulating.
--
SET credits.clock = '2026-08-30 20:00+00';
SELECT pg_temp.funded(8005, '500.00');
SELECT credits.configure_limits(8005, daily_budget => '10.00', monthly_budget => '1000.00');
SELECT credits.start_instance(8005, 'gpu-1', '4.00');
SET credits.clock = '2026-08-30 21:00+00';
SELECT pg_temp.deduct(8005, 8005);
SET credits.clock = '2026-08-30 22:15+00';
SELECT * FROM pg_temp.overview(8005);                        -- 4.00 completed + 5.00 accumulating
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.events(8005);
SET credits.clock = '2026-08-30 22:30+00';                   -- 10.00: reached
SELECT credits.run_balance_checks() >= 1 AS acted;
SELECT * FROM pg_temp.overview(8005);
SET credits.clock = '2026-08-30 23:00+00';
SELECT pg_temp.deduct(8005, 8005);
SELECT credits.run_balance_checks() >= 0 AS checked;         -- nothing new
SELECT credits.start_instance(8005, 'gpu-2', '1.00');        -- 'alert' refuses nothing
SELECT * FROM pg_temp.events(8005);
-- The next UTC day starts from zero: 00:30 has 2.50 of gpu-1 and gpu-2.
SET credits.clock = '2026-08-31 00:00+00';
SELECT pg_temp.deduct(8005, 8005);
SET credits.clock = '2026-08-31 00:30+00';
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT * FROM pg_temp.overview(8005);
-- Reached again at 02:00 (10.00): a second budget_reached, for the new day.
SET credits.clock = '2026-08-31 01:00+00';
SELECT pg_temp.deduct(8005, 8005);
SET credits.clock = '2026-08-31 02:00+00';
SELECT credits.run_balance_checks() >= 1 AS acted;
SELECT * FROM pg_temp.events(8005);
SELECT * FROM pg_temp.overview(8005);
-- Raising the budget above what was spent clears it; reaching the new one announces it.
SELECT credits.configure_limits(8005, daily_budget => '12.50', monthly_budget => '1000.00');
SELECT * FROM pg_temp.overview(8005);
SET credits.clock = '2026-08-31 02:30+00';
SELECT credits.run_balance_checks() >= 1 AS acted;
SELECT kind, payload FROM pg_temp.events(8005) OFFSET 2;
SELECT verify.* FROM generate_series(8001, 8005) AS p, credits.verify(p) AS verify WHERE p IN (8001, 8002, 8003, 8005);

--
-- Monthly budget with on_budget 'stop', across a month boundary: running instances are
-- stopped (their time booked, an instance_stopped event each), starts are refused until the
-- month ends or the budget is raised; volumes and API usage go on.
--
SET credits.clock = '2026-08-31 18:00+00';
SELECT pg_temp.funded(8006, '500.00');
SELECT credits.configure_limits(8006, monthly_budget => '20.00', on_budget => 'stop');
SELECT credits.start_instance(8006, 'gpu-1', '3.00'), credits.start_instance(8006, 'gpu-2', '1.00'),
       credits.attach_volume(8006, 'vol-1', '1.00');
SET credits.clock = '2026-08-31 19:00+00';
SELECT pg_temp.deduct(8006, 8006);
SET credits.clock = '2026-08-31 20:00+00';
SELECT pg_temp.deduct(8006, 8006);
SET credits.clock = '2026-08-31 21:00+00';
SELECT pg_temp.deduct(8006, 8006);
SELECT credits.run_balance_checks() >= 0 AS checked;       -- 15.00 spent
SELECT * FROM pg_temp.events(8006);
SET credits.clock = '2026-08-31 22:00+00';                 -- 20.00: reached
SELECT credits.run_balance_checks() >= 1 AS acted;
SELECT * FROM pg_temp.events(8006);
SELECT resource_id, state, state_since FROM credits.resource_overview WHERE project_id = 8006 ORDER BY 1;
SELECT * FROM pg_temp.overview(8006);
-- Their time was booked up to the stop, as stop_instance books it.
SELECT resource_id, usage_hour, amount, status FROM credits.transactions
 WHERE project_id = 8006 AND type = 'usage' AND usage_hour = '2026-08-31 21:00+00' ORDER BY 1;
SET credits.clock = '2026-08-31 22:30+00';
SELECT pg_temp.ledger_state() AS before \gset
SELECT pg_temp.fails(stmt) AS result, stmt
  FROM unnest(ARRAY[
    $$SELECT credits.start_instance(8006, 'gpu-1', '3.00')$$,      -- a restart
    $$SELECT credits.start_instance(8006, 'gpu-3', '0.10')$$]) AS stmt;  -- a new one
SELECT pg_temp.ledger_state() = :'before' AS nothing_written;
-- Volumes and API usage go on.
SELECT credits.attach_volume(8006, 'vol-2', '0.50'), credits.record_usage(8006, 'api:chat', '0.25');
SELECT credits.run_balance_checks() >= 0 AS checked;        -- nothing new: no second event
SELECT count(*) AS budget_events FROM credits.events WHERE project_id = 8006 AND kind = 'budget_reached';
-- Raising the budget lets instances start again.
SELECT credits.configure_limits(8006, monthly_budget => '40.00', on_budget => 'stop');
SELECT credits.start_instance(8006, 'gpu-1', '3.00');
SELECT credits.configure_limits(8006, monthly_budget => '20.00', on_budget => 'stop');  -- back: stopped at once
SELECT kind, resource_id, payload FROM pg_temp.events(8006) OFFSET 3;
-- A new month: spent starts from zero and instances may start.
SET credits.clock = '2026-08-31 23:00+00';
SELECT pg_temp.deduct(8006, 8006);
SET credits.clock = '2026-09-01 00:00+00';
SELECT pg_temp.deduct(8006, 8006);
SET credits.clock = '2026-09-01 00:30+00';
SELECT * FROM pg_temp.overview(8006);
SELECT credits.start_instance(8006, 'gpu-1', '3.00');
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT resource_id, state FROM credits.resource_overview WHERE project_id = 8006 ORDER BY 1;
SELECT * FROM credits.verify(8006);

--
-- A start checks the budgets too: under 'alert' it announces a budget it finds reached.
--
SET credits.clock = '2026-09-02 10:00+00';
SELECT pg_temp.funded(8007, '100.00');
SELECT credits.record_usage(8007, 'api:chat', '6.00');
SELECT credits.configure_limits(8007, daily_budget => '5.00');   -- announced at once
SELECT credits.configure_limits(8007, daily_budget => '7.00');
SELECT credits.record_usage(8007, 'api:chat', '1.00');
SELECT credits.start_instance(8007, 'gpu-1', '1.00');
SELECT kind, payload FROM pg_temp.events(8007);
SELECT project_id, max_burn_rate, min_runway, daily_budget, spent_today, monthly_budget, spent_this_month,
       on_budget, budget_reached, alert_state
  FROM credits.spending_overview WHERE project_id BETWEEN 8000 AND 8099 ORDER BY 1;

--
-- API usage charged late to an hour already counted (its call began before the deduction of
-- its hour and committed after it, for a product with no usage in that hour) counts in that
-- hour's day: the totals are counted again.
--
SET credits.clock = '2026-09-03 10:00+00';
SELECT pg_temp.funded(8008, '100.00');
SELECT credits.configure_limits(8008, daily_budget => '50.00');
SELECT credits.record_usage(8008, 'api:chat', '1.00');
SET credits.clock = '2026-09-03 11:00+00';
SELECT pg_temp.deduct(8008, 8008);
SELECT credits.run_balance_checks() >= 0 AS checked;       -- totals counted up to 11:00
SET credits.clock = '2026-09-03 10:59+00';
SELECT credits.record_usage(8008, 'api:late', '2.00');      -- its transaction began at 10:59
SET credits.clock = '2026-09-03 11:30+00';
SELECT credits.run_balance_checks() >= 0 AS checked;       -- folded into hour 10
SELECT spent_today FROM credits.spending_overview WHERE project_id = 8008;
SET credits.clock = '2026-09-03 12:00+00';
SELECT pg_temp.deduct(8008, 8008);                         -- completes hour 10's api:late
SELECT usage_hour, resource_id, amount, status FROM credits.transactions
 WHERE project_id = 8008 AND type = 'usage' ORDER BY 1, 2;
SELECT spent_today FROM credits.spending_overview WHERE project_id = 8008;
SELECT credits.run_balance_checks() >= 0 AS checked;
SELECT spent_today FROM credits.spending_overview WHERE project_id = 8008;

-- A reader sees the overview (through its SECURITY DEFINER function).
SET ROLE credits_reader;
SELECT project_id, spent_today, budget_reached FROM credits.spending_overview WHERE project_id = 8008;
RESET ROLE;

--
-- A lower rate for a running instance, on the first call of a day whose budget its usage has
-- already reached (on_budget 'stop'): the check acts on the budget, which stops the instance;
-- the stop stands and the call changes nothing more (neither the rate nor the state), and a
-- start is then refused.
--
SET credits.clock = '2026-09-04 10:00+00';
SELECT pg_temp.funded(8009, '500.00');
SELECT credits.configure_limits(8009, daily_budget => '5.00', on_budget => 'stop');
SELECT credits.start_instance(8009, 'gpu-1', '10.00');
SET credits.clock = '2026-09-04 10:40+00';
SELECT credits.start_instance(8009, 'gpu-1', '3.00');         -- spent 6.67 of 5.00 today
SELECT resource_id, state, rate_per_hour, accrued_until FROM credits.resources WHERE project_id = 8009;
SELECT kind, payload->>'budget' AS budget FROM credits.events
 WHERE project_id = 8009 AND kind IN ('budget_reached', 'instance_stopped') ORDER BY event_id;
SELECT pg_temp.fails($$SELECT credits.start_instance(8009, 'gpu-1', '3.00')$$) AS restart;
SELECT * FROM credits.verify(8009);
